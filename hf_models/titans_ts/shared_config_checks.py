"""Checks shared by the configurations of hf_models: every float field finite, activation names that exist.

Canonical copy: hf_models/_shared/shared_config_checks.py. `scripts/sync_shared.py` writes byte-identical copies into
each model folder that imports it (they ship to the Hub with that model); `--check` fails on any drift.

Configuration files import this block, and a configuration must load without torch: it imports only the standard
library here, and transformers' activation table (which needs torch) only when a check runs.
"""

import math


def _fail(config, field, value, requirement):
    raise ValueError(f"{type(config).__name__}.{field}={value!r} is invalid: {requirement}")


def check_finite_numbers(config):
    """Every public float attribute of `config` is finite: NaN or inf (which JSON carries as NaN / Infinity) passes
    comparisons such as `eps > 0` and only shows up later as NaN outputs. Covers fields a subclass adds later too."""
    for field, value in vars(config).items():
        if not field.startswith("_") and isinstance(value, float) and not math.isfinite(value):
            _fail(config, field, value, "must be a finite number")


def check_activation(config, field="hidden_act"):
    """`config.<field>` names an activation of `transformers.activations.ACT2FN` (else the model would fail to build
    with a bare KeyError)."""
    value = getattr(config, field)
    try:
        from transformers.activations import ACT2FN
    except ImportError:  # transformers without torch: no model can be built, so there is nothing to check against
        return
    if not isinstance(value, str) or value not in ACT2FN:
        _fail(config, field, value, f"must be one of the activations of transformers: {sorted(ACT2FN)}")
