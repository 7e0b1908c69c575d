"""Token-input checks shared by the models of hf_models that read token ids: ids, padding mask, positions and
labels, with ValueErrors that name the argument and the value.

Canonical copy: hf_models/_shared/shared_token_inputs.py. `scripts/sync_shared.py` writes byte-identical copies into each
model folder that imports it (they ship to the Hub with that model); `--check` fails on any drift.
"""

import torch

from .shared_compat import check_unused_arguments, is_compiling  # noqa: F401  (check_unused_arguments: re-exported)


IGNORE_INDEX = -100  # label of positions without a loss (transformers' causal-LM loss)


def _type_name(value):
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def require_tensor(name, value):
    """A ValueError naming `name` and the type when `value` is not a torch.Tensor (a list, a numpy array, ...)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor; got {_type_name(value)} (convert it with torch.as_tensor, or ask the "
            "tokenizer or processor for return_tensors='pt')"
        )


def _integer(name, tensor, what):
    """`tensor` as an index tensor: int64 and int32 as they are (what embeddings take), other integer dtypes widened
    to int64 (exact); bool, float and complex refused (a bool tensor here is usually a mask passed by mistake)."""
    if tensor.dtype in (torch.int64, torch.int32):
        return tensor
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name} must be {what} (an integer tensor such as torch.int64); got dtype {tensor.dtype}")
    return tensor.long()


def _same_device(name, tensor, input_ids):
    if tensor.device != input_ids.device:
        raise ValueError(f"{name} is on {tensor.device} but input_ids on {input_ids.device}; move both to one device")


def _mask_problem(attention_mask):
    """The message for an attention_mask holding values other than 0 and 1 (computed only on the error path)."""
    odd = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
    example = odd.flatten()[0].item()
    if attention_mask.is_floating_point() and bool((attention_mask <= 0).all()):
        return (
            f"attention_mask must be a padding mask of 1 (attend) and 0 (padding); got an additive mask (0 = attend, "
            f"negative = masked) with values such as {example} (dtype {attention_mask.dtype}); convert it with "
            "(attention_mask == 0).long()"
        )
    return (
        f"attention_mask must hold only 1 (attend) and 0 (padding); got the value {example} "
        f"(dtype {attention_mask.dtype})"
    )


def validate_token_inputs(vocab_size, max_positions, input_ids, attention_mask, position_ids, past_length):
    """Token-id inputs of shape (batch, new tokens) checked, with ValueErrors that name the argument and the value.

    Returns `(input_ids, attention_mask, position_ids)`: the ids (integer dtypes other than int32/int64 widened),
    the 0/1 padding mask or None when it masks nothing (the models then take their unmasked path), and the positions
    of the new tokens, (batch, length). Without `position_ids`, a padding mask makes the first real token of a
    left-padded row position 0, as when the sample is alone. Positions at or beyond `max_positions` raise ('too
    long'). Every check of values (ids in the vocabulary, mask values, positions) reads one small tensor back to the
    host: one sync per forward, none while torch.compile traces.
    """
    require_tensor("input_ids", input_ids)
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape (batch, sequence); got rank {input_ids.dim()} {tuple(input_ids.shape)}"
        )
    input_ids = _integer("input_ids", input_ids, "integer token ids")
    batch, length = input_ids.shape
    if batch == 0:
        raise ValueError(f"input_ids is empty (batch size 0): shape {tuple(input_ids.shape)}")
    if length == 0:
        raise ValueError(f"input_ids is empty (sequence length 0): shape {tuple(input_ids.shape)}")
    if attention_mask is not None:
        require_tensor("attention_mask", attention_mask)
        if attention_mask.dim() != 2 or attention_mask.shape != (batch, past_length + length):
            raise ValueError(
                f"attention_mask must be a 2-D padding mask of shape (batch, cached + new tokens) = "
                f"{(batch, past_length + length)}; got {tuple(attention_mask.shape)}"
            )
        if attention_mask.is_complex():
            raise ValueError(f"attention_mask must hold 1 (attend) and 0 (padding); got dtype {attention_mask.dtype}")
        _same_device("attention_mask", attention_mask, input_ids)
    given_positions = position_ids is not None
    if given_positions:
        require_tensor("position_ids", position_ids)
        position_ids = _integer("position_ids", position_ids, "integer positions")
        _same_device("position_ids", position_ids, input_ids)
        rows = position_ids.shape[0] if position_ids.dim() == 2 else 1
        if position_ids.dim() not in (1, 2) or position_ids.shape[-1] != length or rows not in (1, batch):
            raise ValueError(
                f"position_ids must have shape (batch, {length}) = ({batch}, {length}), (1, {length}) or ({length},); "
                f"got {tuple(position_ids.shape)}"
            )
    elif attention_mask is not None:
        # `!= 0`, not a cast: an invalid mask (refused below) must not turn into overflowing integers first
        position_ids = ((attention_mask != 0).long().cumsum(-1) - 1).clamp_min(0)[:, -length:]
    else:
        position_ids = torch.arange(past_length, past_length + length, device=input_ids.device)[None]
    position_ids = position_ids.expand(batch, length)
    if is_compiling():
        return input_ids, attention_mask, position_ids

    stats = [input_ids.min(), input_ids.max(), position_ids.min(), position_ids.max()]
    if attention_mask is not None:
        # few passes over the mask: min and max bound the values (clamped, so that -inf casts to an integer), the
        # smallest row maximum finds a row of zeros, and a float mask counts its non-integers (0.5, NaN, inf)
        mask_stats = [attention_mask.min(), attention_mask.max(), attention_mask.amax(-1).min()]
        if attention_mask.is_floating_point():
            mask_stats = [s.clamp(-1, 2) for s in mask_stats] + [(attention_mask.frac() != 0).sum()]
        stats += mask_stats
    low, high, first, last, *mask_stats = torch.stack([s.to(torch.int64) for s in stats]).tolist()  # one sync
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids must be in [0, vocab_size={vocab_size}); got values in [{low}, {high}]")
    if attention_mask is not None:
        mask_low, mask_high, smallest_row_max, *non_integers = mask_stats
        if any(non_integers) or mask_low < 0 or mask_high > 1:
            raise ValueError(_mask_problem(attention_mask))
        if smallest_row_max == 0:
            # all 0 is no input at all; it is also what an additive mask that masks nothing looks like
            row = int((attention_mask == 0).all(-1).nonzero()[0, 0])
            raise ValueError(
                f"attention_mask row {row} is all 0 (every token padding): a padding mask holds 1 for the tokens to "
                "attend to (an additive mask, 0 = attend, converts with (attention_mask == 0).long())"
            )
        if mask_low == 1:
            attention_mask = None  # all ones: the same as no mask
    if given_positions and first < 0:
        raise ValueError(f"position_ids must be >= 0; got a minimum of {first}")
    if given_positions and last >= max_positions:
        raise ValueError(
            f"position_ids must be < max_position_embeddings={max_positions}; got a maximum of {last} (sequence too "
            "long for this model)"
        )
    if last >= max_positions:
        raise ValueError(
            f"sequence too long: position {last} is beyond max_position_embeddings={max_positions} "
            f"(this model supports at most {max_positions} tokens, cache included)"
        )
    return input_ids, attention_mask, position_ids


def check_labels(labels, input_ids, vocab_size):
    """Causal-LM labels checked (same shape as input_ids, token ids or -100 = ignored) and returned as int64, the
    dtype the cross-entropy takes. The value check costs one sync (none while torch.compile traces)."""
    if labels is None:
        return None
    require_tensor("labels", labels)
    labels = _integer("labels", labels, "integer token ids or -100").long()
    if isinstance(input_ids, torch.Tensor) and labels.shape != input_ids.shape:
        raise ValueError(
            f"labels must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(labels.shape)}"
        )
    if labels.numel() == 0 or is_compiling():
        return labels
    bad = (labels >= vocab_size) | ((labels < 0) & (labels != IGNORE_INDEX))
    if bool(bad.any()):
        raise ValueError(
            f"labels must be token ids in [0, vocab_size={vocab_size}) or {IGNORE_INDEX} (ignored); "
            f"got {int(labels[bad][0])}"
        )
    return labels


def check_class_labels(labels, batch, num_labels):
    """Class labels of a classification head checked (a tensor of `batch` integer class ids in [0, num_labels)) and
    returned as int64, the dtype the cross-entropy takes. `batch` None: the batch size is not known here. The value
    check costs one sync (none while torch.compile traces)."""
    require_tensor("labels", labels)
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class ids (e.g. torch.int64); got dtype {labels.dtype}")
    labels = labels.long()  # any integer dtype converts exactly
    if batch is not None and labels.shape != (batch,):
        raise ValueError(f"labels must have shape (batch,) = ({batch},); got {tuple(labels.shape)}")
    if labels.numel() and not is_compiling():
        low, high = torch.stack([labels.min(), labels.max()]).tolist()  # one sync
        if low < 0 or high >= num_labels:
            raise ValueError(
                f"labels must be class ids in [0, num_labels={num_labels}); got values in [{low}, {high}]"
            )
    return labels


def select_logits_positions(hidden_states, logits_to_keep):
    """Only the positions whose logits are needed: the last n (an int n > 0) or the given indices (a tensor)."""
    if isinstance(logits_to_keep, int) and logits_to_keep > 0:
        return hidden_states[:, -logits_to_keep:]
    if isinstance(logits_to_keep, torch.Tensor):
        return hidden_states[:, logits_to_keep]
    return hidden_states
