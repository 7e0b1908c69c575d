"""Checks of continuous-value inputs shared by the models of hf_models that read numbers rather than token ids:
feature vectors (`input_features`, (batch, length, features)) and time series (`past_values` / `future_values`,
(batch, time, channels)). Each check raises a ValueError that names the argument, what was expected (with the config
field) and what it got.

Canonical copy: hf_models/_shared/shared_value_inputs.py. `scripts/sync_shared.py` writes byte-identical copies into
each model folder that imports it (they ship to the Hub with that model); `--check` fails on any drift.
"""

import torch

from .shared_compat import is_compiling


def _type_name(value):
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def validate_values(name, value, axes, dtype, device=None):
    """`value` checked against `axes` and returned in `dtype` (float64, float16 or bfloat16 values computed with as
    the model computes: the result equals the call with the same values in the model's dtype).

    `axes`: one `(axis name, expected size or None, config field or None)` per dimension, e.g.
    `(("batch", None, None), ("time", 96, "context_length"), ("channels", 7, "num_input_channels"))`. Refused: a
    non-tensor, a wrong rank, an integer/bool/complex dtype, an empty batch or axis, a size that differs from the
    config field, a tensor on another device than `device`, and NaN or infinite values.
    """
    shape_text = "(" + ", ".join(axis if size is None else f"{axis}={size}" for axis, size, _ in axes) + ")"
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape {shape_text}; got {_type_name(value)} (convert it with "
            "torch.as_tensor)"
        )
    if value.dim() != len(axes):
        raise ValueError(f"{name} must have shape {shape_text}; got rank {value.dim()} {tuple(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (real values); got dtype {value.dtype}")
    for (axis, size, field), got in zip(axes, value.shape, strict=True):
        if got == 0:
            raise ValueError(f"{name} is empty ({axis} 0): shape {tuple(value.shape)}")
        if size is not None and got != size:
            source = f" ({field}={size})" if field else ""
            raise ValueError(f"{name} must have {size} along {axis}{source}; got shape {tuple(value.shape)}")
    if device is not None and value.device != torch.device(device):
        raise ValueError(f"{name} is on {value.device} but the model on {device}; move the input to the model")
    value = value.to(dtype)
    if not is_compiling() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def validate_features(input_features, width, dtype, width_field="n_dims", length=None, length_field=None):
    """Feature vectors of shape (batch, length, width): `validate_values` with the feature width of the config."""
    axes = (("batch", None, None), ("length", length, length_field), ("features", width, width_field))
    return validate_values("input_features", input_features, axes, dtype)


def validate_series(name, values, length, length_field, channels, dtype, batch=None):
    """A multivariate series of shape (batch, time, channels), e.g. `past_values` (time = `context_length`) or
    `future_values` (time = `prediction_length`, batch = that of `past_values`)."""
    axes = (("batch", batch, "past_values' batch" if batch is not None else None), ("time", length, length_field),
            ("channels", channels, "num_input_channels"))  # fmt: skip
    return validate_values(name, values, axes, dtype)
