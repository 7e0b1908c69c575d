"""Input checks, positions and cache glue shared by the causal LMs of hf_models.

Canonical copy: hf_models/_shared/shared_lm_inputs.py. `scripts/sync_shared.py` writes byte-identical copies into
each model folder that imports it (they ship to the Hub with that model); `--check` fails on any drift.
"""

import torch
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast


try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # older transformers: blocks are plain modules (no per-block checkpointing)
    GradientCheckpointingLayer = torch.nn.Module

# transformers renamed the cache field of model outputs from `past_key_values` to `cache`; follow the installed one.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def pop_cache(cache, kwargs):
    """The cache passed as `cache` (transformers >= 5.24) or `past_key_values` (earlier), not both."""
    legacy = kwargs.pop("past_key_values", None)
    if cache is not None and legacy is not None:
        raise ValueError("Pass the cache as `cache` or `past_key_values`, not both")
    return cache if cache is not None else legacy


def prepare_cache(cache, use_cache, config):
    """A `DynamicCache` when one is needed and none was given; a clear error for anything that is not a Cache."""
    if use_cache and cache is None:
        cache = DynamicCache(config=config)
    if cache is not None and not isinstance(cache, Cache):
        raise ValueError(f"cache must be a transformers Cache (e.g. DynamicCache); got {type(cache).__name__}")
    return cache


def validate_token_inputs(vocab_size, input_ids, attention_mask, position_ids, past_length):
    """ValueErrors that name the problem for token-id inputs of shape (batch, new tokens)."""
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape (batch, sequence); got rank {input_ids.dim()} {tuple(input_ids.shape)}"
        )
    if input_ids.is_floating_point() or input_ids.is_complex():
        raise ValueError(f"input_ids must be integer token ids; got dtype {input_ids.dtype}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty (sequence length 0)")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids must be in [0, vocab_size={vocab_size}); got values in [{low}, {high}]")
    batch, length = input_ids.shape
    if attention_mask is not None and (
        attention_mask.dim() != 2 or attention_mask.shape != (batch, past_length + length)
    ):
        raise ValueError(
            f"attention_mask must be a 2-D padding mask of shape (batch, cached + new tokens) = "
            f"{(batch, past_length + length)}; got {tuple(attention_mask.shape)}"
        )
    if position_ids is not None and position_ids.shape[-1] != length:
        raise ValueError(f"position_ids must have shape (batch, {length}); got {tuple(position_ids.shape)}")


def token_positions(max_positions, attention_mask, position_ids, batch, length, past_length, device):
    """Positions of the new tokens (batch, length). With a padding mask, the first real token of a left-padded row
    is position 0, as when the sample is alone. Positions at or beyond `max_positions` raise ('too long')."""
    if position_ids is None:
        if attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, -length:]
        else:
            position_ids = torch.arange(past_length, past_length + length, device=device)[None].expand(batch, -1)
    if position_ids.dim() == 1:
        position_ids = position_ids[None].expand(batch, -1)
    if int(position_ids.max()) >= max_positions or int(position_ids.min()) < 0:
        raise ValueError(
            f"sequence too long: position {int(position_ids.max())} is beyond max_position_embeddings={max_positions} "
            f"(this model supports at most {max_positions} tokens, cache included)"
        )
    return position_ids


def check_labels(labels, input_ids):
    if labels is not None and input_ids is not None and labels.shape != input_ids.shape:
        raise ValueError(
            f"labels must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(labels.shape)}"
        )


def select_logits_positions(hidden_states, logits_to_keep):
    """Only the positions whose logits are needed: the last n (an int n > 0) or the given indices (a tensor)."""
    if isinstance(logits_to_keep, int) and logits_to_keep > 0:
        return hidden_states[:, -logits_to_keep:]
    if isinstance(logits_to_keep, torch.Tensor):
        return hidden_states[:, logits_to_keep]
    return hidden_states
