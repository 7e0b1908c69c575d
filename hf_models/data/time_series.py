"""Forecasting data: multivariate series from CSV files (through `datasets`) or a seeded concept-drift generator, split
by time with the standard long-term protocol, standardised with statistics of the training part, and cut into
(past_values, future_values) windows served by a `datasets.Dataset` of window starts.

The long-term forecasting protocol (Informer / Autoformer / PatchTST / Titans): on ETTh1/ETTh2 (hourly) train rows
[0, 8640), validation [8640 - L, 11520), test [11520 - L, 14400); on ETTm1/ETTm2 (15 minutes) four times those; any
other series 70% / 10% / 20% by time (`ratio`). L is the context length: a validation or test window's context may
reach back into the previous part, its forecast never does. A StandardScaler (per channel, population std) is fit on
the training rows and applied everywhere; metrics are reported on that standardised scale.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


ETT_HOURLY_BORDERS = (8640, 11520, 14400)  # 12 / 4 / 4 months of hourly rows
SYNTHETIC = "synthetic_drift"
SPLITS = ("train", "validation", "test")


@dataclass
class SeriesSplits:
    """A standardised series and where its splits lie: `values` (T, C) float32 after scaling, `columns`, the scaler
    (`mean`, `std`, per channel), and per split the [start, stop) rows its windows' *forecasts* cover."""

    values: np.ndarray
    columns: list
    mean: np.ndarray
    std: np.ndarray
    bounds: dict
    name: str

    def windows(self, split, context_length, prediction_length, stride=1, limit=0):
        """The window starts of `split`: a window reads rows [s, s + context) and forecasts [s + context, s + context +
        prediction), with its forecast inside the split. `limit` keeps the first N (0: all)."""
        if split not in self.bounds:
            raise ValueError(f"split {split!r} is not one of {list(self.bounds)}")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        begin, end = self.bounds[split]
        first = max(0, begin - context_length) if split != "train" else begin
        last = end - context_length - prediction_length  # the last start whose forecast ends inside
        if last < first:
            raise ValueError(f"the {split} part of {self.name} (rows {begin}-{end}) is too short for a context of "
                             f"{context_length} and a forecast of {prediction_length} steps")  # fmt: skip
        starts = list(range(first, last + 1, stride))
        return starts[:limit] if limit else starts

    def dataset(self, split, context_length, prediction_length, stride=1, limit=0):
        """A `datasets.Dataset` of window starts whose rows read as {past_values (context, C), future_values
        (prediction, C)} float32 tensors (`with_transform`: windows are sliced when read, never stored)."""
        from datasets import Dataset

        starts = self.windows(split, context_length, prediction_length, stride, limit)
        values = torch.from_numpy(self.values)

        def transform(batch):
            past = [values[s : s + context_length] for s in batch["start"]]
            future = [values[s + context_length : s + context_length + prediction_length] for s in batch["start"]]
            return {"past_values": past, "future_values": future}

        return Dataset.from_dict({"start": starts}).with_transform(transform)

    def denormalize(self, values):
        """Standardised values (..., C) back in the series' units."""
        values = torch.as_tensor(values)
        return values * torch.as_tensor(self.std, dtype=values.dtype) + torch.as_tensor(self.mean, dtype=values.dtype)


def _read_csv(path):
    """(values (T, C) float64, numeric column names, dates or None) of a CSV with a header, through `datasets`; a
    `date` column (if any) is kept apart, every other column must be numeric."""
    from datasets import load_dataset

    table = load_dataset("csv", data_files=str(path), split="train")
    columns = [c for c in table.column_names if c.lower() != "date"]
    if not columns:
        raise ValueError(f"{path} has no value columns (only {table.column_names})")
    frame = table.with_format("numpy")
    values = []
    for column in columns:
        column_values = np.asarray(frame[column])
        if not np.issubdtype(column_values.dtype, np.number):
            raise ValueError(f"{path}: column {column!r} is not numeric (dtype {column_values.dtype})")
        values.append(column_values.astype(np.float64))
    values = np.stack(values, axis=1)
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise ValueError(f"{path}: row {row + 2} holds a missing or non-finite value")
    dates = table["date"] if "date" in table.column_names else None
    return values, columns, dates


def _ett_scale(dates):
    """4 for 15-minute ETT data, 1 for hourly, from the spacing of the first two dates."""
    from datetime import datetime

    first, second = (datetime.fromisoformat(str(d)) for d in dates[:2])
    minutes = (second - first).total_seconds() / 60
    if minutes == 60:
        return 1
    if minutes == 15:
        return 4
    raise ValueError(f"the ETT protocol knows hourly and 15-minute data; these rows are {minutes:g} minutes apart")


def split_bounds(protocol, length, dates=None, name="series"):
    """{split: (start, stop)} rows of the forecasts of each split."""
    if protocol == "ett":
        if dates is None:
            raise ValueError(f"protocol 'ett' needs the date column of {name} (to tell hourly from 15-minute data)")
        scale = _ett_scale(dates)
        train, validation, test = (border * scale for border in ETT_HOURLY_BORDERS)
        if length < test:
            raise ValueError(f"{name} has {length} rows; the ETT protocol needs {test}")
        return {"train": (0, train), "validation": (train, validation), "test": (validation, test)}
    if protocol == "ratio":
        train, validation = int(length * 0.7), int(length * 0.8)
        return {"train": (0, train), "validation": (train, validation), "test": (validation, length)}
    raise ValueError(f"protocol must be 'ett' or 'ratio', got {protocol!r}")


def load_series(source, protocol=None, drift_length=6000, drift_channels=3, seed=0):
    """`SeriesSplits` of a CSV file (`protocol` "ett" or "ratio"; default "ett" for files named ETT*, else "ratio") or,
    with `source="synthetic_drift"`, of `drift_series(drift_length, drift_channels, seed)` (split by `ratio`)."""
    if str(source) == SYNTHETIC:
        values = drift_series(drift_length, drift_channels, seed)
        columns, dates, name = [f"x{i}" for i in range(drift_channels)], None, f"{SYNTHETIC}(seed={seed})"
        protocol = protocol or "ratio"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"series source {source!r} is neither a CSV file nor {SYNTHETIC!r}")
        values, columns, dates = _read_csv(path)
        name = path.stem
        protocol = protocol or ("ett" if path.stem.upper().startswith("ETT") else "ratio")
    bounds = split_bounds(protocol, len(values), dates, name)
    used = bounds["test"][1]
    train = values[: bounds["train"][1]]
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)  # a constant training channel stays as is (shifted to 0)
    scaled = ((values[:used] - mean) / std).astype(np.float32)
    return SeriesSplits(scaled, columns, mean.astype(np.float32), std.astype(np.float32), bounds, name)


def drift_series(length=6000, channels=3, seed=0, period=24, regimes=6):
    """A seeded multivariate series with concept drift: per channel a level, a trend and a daily (`period`) and weekly
    (7·period) seasonality, plus AR(1) noise, with `regimes` regime shifts at random times that change the level, the
    slope, the seasonal amplitudes and phase, and the coupling between channels. Later regimes never appear in
    earlier data, so a model fit on the start must adapt to forecast the end.

    Returns (length, channels) float64."""
    rng = np.random.default_rng(seed)
    time = np.arange(length, dtype=np.float64)
    cuts = np.sort(rng.choice(np.arange(length // 10, length - length // 10), size=regimes - 1, replace=False))
    edges = np.concatenate([[0], cuts, [length]])
    series = np.zeros((length, channels))
    level = rng.normal(0, 1, channels)
    mixing = np.eye(channels)
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        t = time[start:stop]
        slope = rng.normal(0, 2e-3, channels)
        daily, weekly = rng.uniform(0.5, 2.0, channels), rng.uniform(0.0, 1.0, channels)
        phase = rng.uniform(0, 2 * math.pi, channels)
        level = level + rng.normal(0, 1.5, channels)  # the shift
        base = (level + slope * (t - start)[:, None]
                + daily * np.sin(2 * math.pi * t[:, None] / period + phase)
                + weekly * np.sin(2 * math.pi * t[:, None] / (7 * period) + phase / 2))  # fmt: skip
        mixing = 0.7 * mixing + 0.3 * rng.normal(0, 0.5, (channels, channels))
        series[start:stop] = base @ (np.eye(channels) + 0.3 * mixing)
        level = level + slope * (stop - start)  # the trend goes on into the next regime (before its shift)
    noise = np.zeros((length, channels))
    shocks = rng.normal(0, 0.2, (length, channels))
    for i in range(1, length):  # AR(1) noise
        noise[i] = 0.7 * noise[i - 1] + shocks[i]
    return series + noise


__all__ = ["SYNTHETIC", "SeriesSplits", "drift_series", "load_series", "split_bounds"]
