"""Compatibility with the installed transformers and torch, shared by the models of hf_models.

Canonical copy: hf_models/_shared/shared_compat.py. `scripts/sync_shared.py` writes byte-identical copies into each
model folder that imports it (they ship to the Hub with that model); `--check` fails on any drift.
"""

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast


try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # older transformers: blocks are plain modules (no per-block checkpointing)
    GradientCheckpointingLayer = torch.nn.Module

# transformers renamed the cache field of model outputs from `past_key_values` to `cache`; follow the installed one.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def is_compiling():
    """True while torch.compile traces: value checks need a host sync, which would break the graph (skipped then)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


# Keyword arguments that transformers' generate, Trainer or pipelines may pass and that the models have no use for
# (positions come from the mask and the cache; the loss is a mean over the batch): ignored without a word.
_QUIETLY_IGNORED = frozenset({"cache_position", "num_items_in_batch", "output_attentions"})


def check_unused_arguments(model, kwargs, logger):
    """Keyword arguments a backbone's forward does not use are never ignored silently: `labels` (a backbone has no
    loss) is a ValueError, anything else one warning per set of names."""
    unused = sorted(set(kwargs) - _QUIETLY_IGNORED)
    name = type(model).__name__
    if "labels" in unused:
        raise ValueError(f"labels given to {name}, a backbone without a head (it computes no loss); use a head model")
    if unused:
        logger.warning_once(f"{name}.forward ignores the arguments {unused}")
