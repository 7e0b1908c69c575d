"""The forecasting task: a multivariate series (a CSV file through `datasets`, or the seeded concept-drift generator)
split and standardised by the long-term protocol (`hf_models/data/time_series.py`), windows of `context_length`
steps in and `prediction_length` out, MSE / MAE / RMSE on the standardised scale (and in the series' units on
request), `time-series-forecasting`.

Evaluation has three modes (`--mode`), for models that carry a memory state (Titans-TS) and for any forecaster in the
first:

- `independent` (A): every window on its own (a memory still adapts within the window);
- `online_memory` (B): windows one after another in time order, the memory state carried from each to the next,
  the weights frozen;
- `online_full` (C): as B, and the weights also take one optimizer step (`online_lr`) on each labelled window once
  its labels exist: the labels of window t (its forecast horizon) are known only `prediction_length` steps later,
  so the step on window t runs just before window t + prediction_length is forecast (test-then-train, never on
  values the next forecasts cover). `sparse_step` k labels only every k-th window.

A carried state that stops being finite (the memory's updates diverged over the windows) is warned about once, with
the window, and recorded as `state_nonfinite_window` in the results; every later forecast from it is NaN.
"""

import inspect
import math
from dataclasses import dataclass, field

import torch
from transformers import AutoFeatureExtractor, AutoModelForTimeSeriesPrediction, set_seed
from transformers.utils import logging

from ..data.time_series import SYNTHETIC, load_series
from ..training.arguments import resolve_path
from .base import Task, saved_folder


logger = logging.get_logger(__name__)

MODES = ("independent", "online_memory", "online_full")

USAGE = """```python
import torch
from transformers import AutoFeatureExtractor, AutoModelForTimeSeriesPrediction

repo_id = "{repo_id}"
model = AutoModelForTimeSeriesPrediction.from_pretrained(repo_id, trust_remote_code=True)
processor = AutoFeatureExtractor.from_pretrained(repo_id, trust_remote_code=True)
history = torch.randn({context}, {channels})  # your series: the last {context} steps of {names}
forecast = model(**processor(history)).prediction_outputs  # ({horizon} steps ahead, standardised scale)
print(processor.post_process(forecast)[0])  # per channel, in the series' units
```

```python
import torch
from transformers import pipeline

repo_id = "{repo_id}"
history = torch.randn({context}, {channels})  # your series
# the time-series-forecasting pipeline ships with the model
forecaster = pipeline(model=repo_id, trust_remote_code=True)
print(forecaster(history))  # {channel: [{horizon} values]}
```
"""


@dataclass
class ForecastingDataArguments:
    """The `data:` section of a forecasting run."""

    series: str | None = field(
        default=None, metadata={"help": f"a CSV file (a date column and numeric channels) or {SYNTHETIC!r}"}
    )
    protocol: str | None = field(
        default=None, metadata={"help": "splits: 'ett' (ETT borders) or 'ratio' (70/10/20); default by file name"}
    )
    context_length: int | None = field(default=None, metadata={"help": "steps read (default: the model's)"})
    prediction_length: int | None = field(default=None, metadata={"help": "steps forecast (default: the model's)"})
    train_stride: int = field(default=1, metadata={"help": "steps between training windows"})
    max_validation_windows: int = field(
        default=0, metadata={"help": "validation windows of the evaluations during training (0: all)"}
    )
    max_eval_windows: int = field(
        default=0, metadata={"help": "windows of the final evaluation and of `hf-models evaluate` (0: all)"}
    )
    drift_length: int = field(default=6000, metadata={"help": f"{SYNTHETIC}: steps"})
    drift_channels: int = field(default=3, metadata={"help": f"{SYNTHETIC}: channels"})
    drift_seed: int = field(default=0, metadata={"help": f"{SYNTHETIC}: seed"})
    eval_split: str = field(default="test", metadata={"help": "the split of the final evaluation"})
    mode: str = field(default="independent", metadata={"help": f"evaluation mode: {', '.join(MODES)}"})
    online_lr: float = field(default=1e-4, metadata={"help": "evaluation mode online_full: the online steps' lr"})
    sparse_step: int = field(default=1, metadata={"help": "evaluation mode online_full: label every k-th window"})
    denormalize: bool = field(default=False, metadata={"help": "evaluation: also the metrics in the series' units"})


def series_splits(data):
    """The `SeriesSplits` a run's data section (or a dict like it) names."""
    source = data["series"]
    if source != SYNTHETIC:
        source = resolve_path(source)
    return load_series(source, data.get("protocol"), data.get("drift_length", 6000), data.get("drift_channels", 3),
                       data.get("drift_seed", 0))  # fmt: skip


def error_metrics(predictions, targets):
    """MSE, MAE and RMSE of forecasts against targets (same shapes), as floats."""
    predictions, targets = torch.as_tensor(predictions).double(), torch.as_tensor(targets).double()
    mse = float((predictions - targets).square().mean())
    return {"mse": mse, "mae": float((predictions - targets).abs().mean()), "rmse": math.sqrt(mse)}


def compute_error_metrics(prediction):
    """`compute_metrics` for Trainer (the predictions are the forecasts, see `_forecasts_only`)."""
    return error_metrics(prediction.predictions, prediction.label_ids)


def _forecasts_only(outputs, labels):
    """`preprocess_logits_for_metrics`: keep only the forecasts of a batch's outputs (not the scales or states)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def forecaster_class(config):
    """The class that builds or loads a forecaster of `config`: `AutoModelForTimeSeriesPrediction`, else the stock
    transformers class its `architectures` names (PatchTST and PatchTSMixer predict through their own `...ForPrediction`
    classes, which that Auto class does not map)."""
    import transformers

    if type(config) in AutoModelForTimeSeriesPrediction._model_mapping:
        return AutoModelForTimeSeriesPrediction
    for name in getattr(config, "architectures", None) or []:
        if name.endswith("ForPrediction") and hasattr(transformers, name):
            return getattr(transformers, name)
    raise ValueError(
        f"{type(config).__name__} has no forecaster: neither AutoModelForTimeSeriesPrediction nor its "
        f"architectures {getattr(config, 'architectures', None)} name a ...ForPrediction class"
    )


def processor_for(splits, config):
    from ..titans_ts import TitansTsProcessor

    return TitansTsProcessor(context_length=config.context_length, prediction_length=config.prediction_length,
                             channel_names=splits.columns, mean=splits.mean.tolist(), std=splits.std.tolist())  # fmt: skip


def _check_mode(mode, online_lr, sparse_step):
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    if isinstance(sparse_step, bool) or not isinstance(sparse_step, int) or sparse_step < 1:
        raise ValueError(f"sparse_step={sparse_step!r} is invalid: must be an integer >= 1 (1: every window labelled)")
    if not (isinstance(online_lr, (int, float)) and math.isfinite(online_lr) and online_lr > 0):
        raise ValueError(f"online_lr={online_lr!r} is invalid: must be a positive number")
    if sparse_step != 1 and mode != "online_full":
        raise ValueError(f"sparse_step={sparse_step} applies to mode 'online_full' (the only mode that uses labels), "
                         f"not {mode!r}")  # fmt: skip


def evaluate_forecaster(model, splits, split="test", mode="independent", batch_size=64, online_lr=1e-4,
                        sparse_step=1, limit=0, denormalize=False):  # fmt: skip
    """Forecast every window of `split` in `mode` (see the module docstring) and score it. `model` is a forecaster
    (`prediction_outputs` from `past_values`); the online modes need one that carries a `memory_state`. Returns
    {mse, mae, rmse, windows, mode[, sparse_step, online_lr, online_updates][, the metrics in the series' units]};
    in `online_full` the model's weights change (pass a copy to keep them)."""
    _check_mode(mode, online_lr, sparse_step)
    if mode != "independent" and "memory_state" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"mode={mode!r} carries a memory state from window to window; {type(model).__name__} has none "
                         "(use mode 'independent')")  # fmt: skip
    config = model.config
    context, horizon = config.context_length, config.prediction_length
    dataset = splits.dataset(split, context, horizon, limit=limit)
    model.eval()
    predictions, targets = [], []
    results = {"mode": mode}
    if mode == "independent":
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                batch = dataset[start : start + batch_size]
                past, future = torch.stack(batch["past_values"]), torch.stack(batch["future_values"])
                predictions.append(model(past_values=past).prediction_outputs.float())
                targets.append(future)
    else:
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=online_lr) if mode == "online_full" else None
        state, waiting, updates = None, [], 0  # waiting: (window index, its window, the state it was forecast with)
        for index in range(len(dataset)):
            window = dataset[index]
            past, future = window["past_values"][None], window["future_values"][None]
            if optimizer is not None:
                # the window whose horizon has just passed (its labels are now observed) takes its step
                while waiting and waiting[0][0] <= index - horizon:
                    _, (old_past, old_future), old_state = waiting.pop(0)
                    optimizer.zero_grad(set_to_none=True)
                    loss = model(past_values=old_past, future_values=old_future, memory_state=old_state).loss
                    loss.backward()
                    optimizer.step()
                    updates += 1
            with torch.no_grad():
                out = model(past_values=past, memory_state=state, use_cache=True)
            if optimizer is not None and index % sparse_step == 0:
                waiting.append((index, (past, future), state))
            state = out.memory_state
            if "state_nonfinite_window" not in results and not _all_finite(state):
                results["state_nonfinite_window"] = index
                logger.warning(
                    f"mode {mode}: the carried memory state is not finite after test window {index} of "
                    f"{len(dataset)} (the memory's updates diverged); the forecasts from it on are NaN"
                )
            predictions.append(out.prediction_outputs.float())
            targets.append(future)
        if optimizer is not None:
            results.update(online_lr=online_lr, sparse_step=sparse_step, online_updates=updates)
    predictions, targets = torch.cat(predictions), torch.cat(targets)
    results.update(error_metrics(predictions, targets), windows=len(dataset))
    if denormalize:
        results.update({f"{k}_original_units": v for k, v in error_metrics(splits.denormalize(predictions),
                                                                           splits.denormalize(targets)).items()})  # fmt: skip
    return results


def _all_finite(value):
    """Whether every tensor in a memory state (its attributes, lists, tuples and dicts, walked through) is finite."""
    if torch.is_tensor(value):
        return bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if hasattr(value, "__dict__"):
        return _all_finite(vars(value))
    return True


class ForecastingTask(Task):
    name = "forecasting"
    auto_class = "AutoModelForTimeSeriesPrediction"
    architecture_suffix = "ForPrediction"
    pipeline_tag = "time-series-forecasting"
    loss_label = "MSE (standardised)"
    data_arguments = ForecastingDataArguments
    evaluate_options = {
        "series": f"forecasters: a CSV file or {SYNTHETIC!r} (default: the run's)",
        "eval_split": "forecasters: train, validation or test (default: test)",
        "mode": f"forecasters: {', '.join(MODES)} (default: independent)",
        "online_lr": "forecasters, mode online_full: the learning rate of the online steps (default: 1e-4)",
        "sparse_step": "forecasters, mode online_full: label every k-th window only (default: 1)",
        "max_eval_windows": "forecasters: the first N windows only (default: all)",
        "denormalize": "forecasters: also report the metrics in the series' units (default: false)",
    }
    _defaults = {"eval_split": "test", "mode": "independent", "online_lr": 1e-4, "sparse_step": 1,
                 "max_eval_windows": 0, "denormalize": False}  # fmt: skip

    def check_data(self, data_args):
        if data_args.series is None:
            raise ValueError(f"data.series is missing: a forecaster trains on a series (a CSV file or {SYNTHETIC!r})")
        _check_mode(data_args.mode, data_args.online_lr, data_args.sparse_step)
        if data_args.eval_split not in ("train", "validation", "test"):
            raise ValueError(f"data.eval_split={data_args.eval_split!r} is invalid: train, validation or test")
        if data_args.protocol not in (None, "ett", "ratio"):
            raise ValueError(f"data.protocol={data_args.protocol!r} is invalid: must be 'ett' or 'ratio'")
        for name, minimum in (("context_length", 1), ("prediction_length", 1), ("train_stride", 1),
                              ("max_validation_windows", 0), ("max_eval_windows", 0), ("drift_length", 100),
                              ("drift_channels", 1)):  # fmt: skip
            value = getattr(data_args, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise ValueError(f"data.{name}={value!r} is invalid: must be an integer >= {minimum}")

    def train(self, model_args, data_args, training_args, run):
        data = vars(data_args)
        splits = series_splits(data)
        fields = {"num_input_channels": len(splits.columns)}
        for name in ("context_length", "prediction_length"):
            if data[name] is not None:
                fields[name] = data[name]
        from ..titans_ts.processing_titans_ts import CUSTOM_PIPELINES

        # the pipeline ships in the processor's file, which every run folder, checkpoint and export holds
        config = run.model_config(**fields, custom_pipelines=CUSTOM_PIPELINES)
        set_seed(training_args.seed)
        model_class = forecaster_class(config)
        model = (
            model_class.from_config(config) if model_class is AutoModelForTimeSeriesPrediction else model_class(config)
        )
        processor = processor_for(splits, config)
        context, horizon = config.context_length, config.prediction_length
        train_split = splits.dataset("train", context, horizon, stride=data_args.train_stride)
        eval_split = splits.dataset("validation", context, horizon, limit=data_args.max_validation_windows)
        training_args.remove_unused_columns = False  # the transform reads the window starts
        training_args.label_names = ["future_values"]
        trainer = run.trainer(
            processor,
            model=model,
            train_dataset=train_split,
            eval_dataset=eval_split,
            compute_metrics=compute_error_metrics,
            preprocess_logits_for_metrics=_forecasts_only,
            callbacks=list(run.callbacks),
        )
        results = {key: float(value) for key, value in trainer.evaluate(eval_split).items()}  # every process (DDP)
        if not trainer.is_world_process_zero():
            return None
        model = trainer.accelerator.unwrap_model(trainer.model)
        test = evaluate_forecaster(model, splits, data_args.eval_split, data_args.mode,
                                   training_args.per_device_eval_batch_size, data_args.online_lr,
                                   data_args.sparse_step, data_args.max_eval_windows, data_args.denormalize)  # fmt: skip
        results.update({f"test_{k}": v for k, v in test.items()}, test_split=data_args.eval_split)
        results.update(series=splits.name, prediction_length=horizon, context_length=context)
        return results

    def evaluate_folder(self, folder, data, options, batch_size, recorded):
        """The metrics of the model in `folder` on the run's series (or `series`), split `eval_split`, in `mode`."""
        data = {**self._defaults, **data, **options}
        if not data.get("series"):
            raise ValueError(f"{folder} holds a forecaster and no train_config.yaml naming its series; pass --series")
        split = data["eval_split"]
        from transformers import AutoConfig

        model = forecaster_class(AutoConfig.from_pretrained(folder)).from_pretrained(folder)
        results = evaluate_forecaster(model, series_splits(data), split, data["mode"], max(batch_size, 64),
                                      data["online_lr"], data["sparse_step"], data["max_eval_windows"],
                                      data["denormalize"])  # fmt: skip
        return {f"eval_{k}": v for k, v in results.items()} | {"eval_split": split}

    def load_preprocessor(self, source, run_dir):
        return AutoFeatureExtractor.from_pretrained(saved_folder(source, run_dir, "preprocessor_config.json"))

    @torch.no_grad()
    def figures(self, model, folder, data):
        """forecast.png: the last test window of the run's series, its history, the truth and the forecast, for the
        last channel (the ETT target, oil temperature) and the first."""
        if not data.get("series"):
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        splits = series_splits(data)
        config = model.config
        window = splits.dataset("test", config.context_length, config.prediction_length)[-1]
        forecast = model.eval()(past_values=window["past_values"][None]).prediction_outputs[0].float()
        channels = sorted({len(splits.columns) - 1, 0})
        figure, axes = plt.subplots(len(channels), 1, figsize=(8, 2.6 * len(channels)), squeeze=False)
        shown = min(config.context_length, 3 * config.prediction_length)
        history = range(-shown, 0)
        future = range(0, config.prediction_length)
        for axis, channel in zip(axes[:, 0], channels, strict=True):
            axis.plot(history, window["past_values"][-shown:, channel], color="0.4", label="history")
            axis.plot(future, window["future_values"][:, channel], color="tab:blue", label="truth")
            axis.plot(future, forecast[:, channel], color="tab:orange", label="forecast")
            axis.axvline(0, color="0.8", linewidth=1)
            axis.set_ylabel(f"{splits.columns[channel]} (standardised)")
            axis.legend(loc="upper left", fontsize=8)
        axes[-1, 0].set_xlabel("steps from the forecast start")
        figure.tight_layout()
        figure.savefig(folder / "forecast.png", dpi=100)
        plt.close(figure)
        mse = float((forecast - window["future_values"]).square().mean())
        caption = (f"The last test window of {splits.name}: {shown} steps of history, the {config.prediction_length} "
                   f"true steps and the forecast (this window's MSE {mse:.3f}, standardised)")  # fmt: skip
        return [{"file": "forecast.png", "alt": "forecast", "caption": caption}]

    def run_pipeline(self, folder, inputs, timeout=600):
        """`inputs`: series (time, channels) in the series' units; `pipeline(model=folder, trust_remote_code=True)`
        (the task read from the config's `custom_pipelines`) in a process without hf_models forecasts each."""
        from ..hub.remote_code import run_isolated_forecasting_pipeline

        return run_isolated_forecasting_pipeline(folder, inputs, timeout=timeout)

    def card_fields(self, model, preprocessor, data, training, results):
        config = model.config
        name = results.get("series") or data.get("series", "series")
        horizon = config.prediction_length
        metrics = [("mse", f"Test MSE (H={horizon}, standardised)", results["test_mse"]),
                   ("mae", f"Test MAE (H={horizon}, standardised)", results["test_mae"])]  # fmt: skip
        names = ", ".join(preprocessor.channel_names or [])
        return {
            "dataset_name": name,
            "dataset_type": "time-series",
            "hub_dataset": None,
            "split": "test",
            "metrics": metrics,
            "data_description": f"{name}: {len(preprocessor.channel_names or [])} channels ({names}), split by the "
            f"{'ETT' if str(name).upper().startswith('ETT') else '70/10/20'} long-term protocol; windows of "
            f"{config.context_length} steps in, {horizon} out",
            "preprocessing_description": "standard scaler per channel fit on the training rows (the processor keeps "
            "it); the model scales each window again by its own statistics",
            "batch_unit": "windows",
            "usage": USAGE.replace("{context}", str(config.context_length))
            .replace("{channels}", str(config.num_input_channels))
            .replace("{names}", names or "your channels")
            .replace("{horizon}", str(horizon)),
        }
