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
