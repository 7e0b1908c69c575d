"""Checks shared by the configurations of hf_models: every float field finite, activation names that exist, and the
per-field checks every `_validate_*` runs (integers, numbers in a range, flags, choices), each a `ValueError` that names
the class, the field, the value and the requirement.

Canonical copy: hf_models/_shared/shared_config_checks.py. `scripts/sync_shared.py` writes byte-identical copies into
each model folder that imports it (they ship to the Hub with that model); `--check` fails on any drift.

Configuration files import this block, and a configuration must load without torch: it imports only the standard
library here, and transformers' activation table (which needs torch) only when a check runs.
"""

import math


def config_error(config, field, value, requirement):
    """Raise the configuration's error for one field: `<Class>.<field>=<value> is invalid: <requirement>`."""
    raise ValueError(f"{type(config).__name__}.{field}={value!r} is invalid: {requirement}")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_integers(config, fields, minimum=1):
    """Each of `fields` is an integer (not a bool) >= `minimum`."""
    for field in fields:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            config_error(config, field, value, f"must be an integer >= {minimum}")


def check_numbers(config, fields, kind="any"):
    """Each of `fields` is a number (not a bool) of `kind`: "any", "positive" (> 0), "non_negative" (>= 0) or
    "fraction" (in [0, 1): dropout rates, ratios)."""
    accept, requirement = {
        "any": (lambda v: True, "must be a finite number"),
        "positive": (lambda v: v > 0, "must be a positive number"),
        "non_negative": (lambda v: v >= 0, "must be a number >= 0"),
        "fraction": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    }[kind]
    for field in fields:
        value = getattr(config, field)
        if not _is_number(value) or not math.isfinite(value) or not accept(value):
            config_error(config, field, value, requirement)


def check_flags(config, fields):
    """Each of `fields` is true or false (a bool, not 0 / 1 or a string)."""
    for field in fields:
        if not isinstance(getattr(config, field), bool):
            config_error(config, field, getattr(config, field), "must be true or false")


def check_choice(config, field, options):
    """`config.<field>` is one of `options`."""
    if getattr(config, field) not in options:
        config_error(config, field, getattr(config, field), f"must be one of {options}")


def check_divisible(config, field, divisor_field):
    """`config.<field>` is a multiple of `config.<divisor_field>` (e.g. hidden_size of num_attention_heads)."""
    value, divisor = getattr(config, field), getattr(config, divisor_field)
    if value % divisor:
        config_error(config, field, value, f"must be divisible by {divisor_field}={divisor}")


def check_finite_numbers(config):
    """Every public float attribute of `config` is finite: NaN or inf (which JSON carries as NaN / Infinity) passes
    comparisons such as `eps > 0` and only shows up later as NaN outputs. Covers fields a subclass adds later too."""
    for field, value in vars(config).items():
        if not field.startswith("_") and isinstance(value, float) and not math.isfinite(value):
            config_error(config, field, value, "must be a finite number")


def check_activation(config, field="hidden_act"):
    """`config.<field>` names an activation of `transformers.activations.ACT2FN` (else the model would fail to build
    with a bare KeyError)."""
    value = getattr(config, field)
    try:
        from transformers.activations import ACT2FN
    except ImportError:  # transformers without torch: no model can be built, so there is nothing to check against
        return
    if not isinstance(value, str) or value not in ACT2FN:
        config_error(config, field, value, f"must be one of the activations of transformers: {sorted(ACT2FN)}")
