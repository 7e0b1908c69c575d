"""The Titans-TS processor: raw multivariate series in, the model's `past_values` out, and forecasts back in the
series' units. It holds what the training data fixed: the channel names and the standard scaler (per channel mean
and standard deviation of the training rows), and the context and prediction lengths.

The model scales every window by its own statistics, so its forecasts follow any per-channel affine change of the
input; the processor's scaler puts inputs on the scale the metrics were measured on (and undoes it on the outputs).

The file also holds `TimeSeriesForecastingPipeline`, the `time-series-forecasting` pipeline that a forecaster's
config names in `custom_pipelines` (transformers has no such pipeline of its own): it ships beside the processor, so
`pipeline(model=<folder>, trust_remote_code=True)` returns forecasts. Standard library, torch and transformers only.
"""

import torch
from transformers import Pipeline
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin


CUSTOM_PIPELINES = {
    "time-series-forecasting": {
        "impl": "processing_titans_ts.TimeSeriesForecastingPipeline",
        "pt": ["AutoModelForTimeSeriesPrediction"],
        "tf": [],
        "type": "multimodal",
    }
}


class TitansTsProcessor(FeatureExtractionMixin):
    model_input_names = ["past_values"]

    def __init__(self, context_length=336, prediction_length=96, channel_names=None, mean=None, std=None, **kwargs):
        super().__init__(**kwargs)
        self.context_length = context_length
        self.prediction_length = prediction_length
        self.channel_names = list(channel_names) if channel_names is not None else None
        channels = len(self.channel_names) if self.channel_names else len(mean or std or [])
        self.mean = list(mean) if mean is not None else [0.0] * channels
        self.std = list(std) if std is not None else [1.0] * channels
        if not (len(self.mean) == len(self.std) == channels) or channels == 0:
            raise ValueError(f"TitansTsProcessor: channel_names ({channels}), mean ({len(self.mean)}) and std "
                             f"({len(self.std)}) must name the same channels, at least one")  # fmt: skip
        if any(not s > 0 for s in self.std):
            raise ValueError(f"TitansTsProcessor: std must be positive per channel; got {self.std}")

    @property
    def num_channels(self):
        return len(self.mean)

    def __call__(self, series, return_tensors="pt"):
        """`series`: the history, (time, channels) or (batch, time, channels), in the series' units (a tensor, an
        array or nested lists), at least `context_length` steps; the last `context_length` are used.
        Returns {past_values: (batch, context_length, channels) float32}."""
        values = torch.as_tensor(series, dtype=torch.float32)
        if values.dim() == 2:
            values = values[None]
        if values.dim() != 3:
            raise ValueError(f"series must be (time, channels) or (batch, time, channels); got shape "
                             f"{tuple(values.shape)}")  # fmt: skip
        if values.shape[-1] != self.num_channels:
            names = f" ({', '.join(self.channel_names)})" if self.channel_names else ""
            raise ValueError(
                f"series has {values.shape[-1]} channels; this model forecasts {self.num_channels}{names}"
            )
        if values.shape[1] < self.context_length:
            raise ValueError(f"series has {values.shape[1]} time steps; the model reads the last context_length="
                             f"{self.context_length}")  # fmt: skip
        if not bool(torch.isfinite(values).all()):
            raise ValueError("series contains NaN or infinite values")
        values = values[:, -self.context_length :]
        scaled = (values - torch.tensor(self.mean)) / torch.tensor(self.std)
        return BatchFeature({"past_values": scaled}, tensor_type=return_tensors)

    def post_process(self, prediction_outputs):
        """The model's `prediction_outputs` (batch, prediction_length, channels) -> per series {channel name: its
        forecast in the series' units, a list of prediction_length floats}."""
        values = torch.as_tensor(prediction_outputs).detach().float().cpu()
        values = values * torch.tensor(self.std) + torch.tensor(self.mean)
        names = self.channel_names or [str(i) for i in range(self.num_channels)]
        return [{name: series[:, i].tolist() for i, name in enumerate(names)} for series in values]


class TimeSeriesForecastingPipeline(Pipeline):
    """`pipeline("time-series-forecasting")` for the forecasters of hf_models: a series (time, channels) in the
    series' units (a tensor or an array; a list of them forecasts each) -> {channel name: forecast list}. The history
    must hold at least the model's `context_length` steps (the last ones are read)."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise ValueError(f"time-series-forecasting takes no options; got {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, series):
        return self.feature_extractor(series)

    def _forward(self, model_inputs):
        return {"prediction_outputs": self.model(past_values=model_inputs["past_values"]).prediction_outputs}

    def postprocess(self, model_outputs):
        return self.feature_extractor.post_process(model_outputs["prediction_outputs"])[0]


__all__ = ["CUSTOM_PIPELINES", "TimeSeriesForecastingPipeline", "TitansTsProcessor"]
