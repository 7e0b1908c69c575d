"""Two tiny models that read continuous values, to prove the battery's "features" and "series" input checks before a
real architecture of those kinds exists, and to show that the checks fail on a model that does not validate.

- `ToyPromptClassifier`: `input_features` (batch, length, n_dims) -> one logit per prompt (a mean-pooled linear map).
- `ToyForecaster`: `past_values` (batch, context_length, channels) -> (batch, prediction_length, channels), a linear map
  over time per channel; `future_values` are its labels (MSE).

Both validate through the shared block `hf_models/_shared/shared_value_inputs.py`, which the real models of those
kinds import. `validate=False` builds a variant that skips validation (and so fails the checks).
"""

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from hf_models._shared.shared_value_inputs import validate_features, validate_series


class ToyValueConfig(PretrainedConfig):
    model_type = "hfm_test_toy_values"

    def __init__(self, n_dims=5, context_length=12, prediction_length=4, num_input_channels=3, validate=True, **kw):
        self.n_dims = n_dims
        self.context_length = context_length
        self.prediction_length = prediction_length
        self.num_input_channels = num_input_channels
        self.validate = validate
        super().__init__(**kw)


class ToyPromptClassifier(PreTrainedModel):
    config_class = ToyValueConfig

    def __init__(self, config):
        super().__init__(config)
        self.read_out = nn.Linear(config.n_dims, 1)
        self.post_init()

    def forward(self, input_features, labels=None):
        if self.config.validate:
            input_features = validate_features(input_features, self.config.n_dims, self.read_out.weight.dtype)
        logits = self.read_out(input_features.mean(dim=1)).squeeze(-1)
        loss = None if labels is None else nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        return ModelOutput(loss=loss, logits=logits)


class ToyForecaster(PreTrainedModel):
    config_class = ToyValueConfig

    def __init__(self, config):
        super().__init__(config)
        self.over_time = nn.Linear(config.context_length, config.prediction_length)
        self.post_init()

    def forward(self, past_values, future_values=None):
        config = self.config
        dtype = self.over_time.weight.dtype
        if config.validate:
            past_values = validate_series(
                "past_values", past_values, config.context_length, "context_length", config.num_input_channels, dtype
            )
        prediction = self.over_time(past_values.transpose(1, 2)).transpose(1, 2)
        loss = None
        if future_values is not None:
            if config.validate:
                future_values = validate_series(
                    "future_values", future_values, config.prediction_length, "prediction_length",
                    config.num_input_channels, dtype, batch=past_values.shape[0],
                )  # fmt: skip
            loss = nn.functional.mse_loss(prediction, future_values)
        return ModelOutput(loss=loss, prediction_outputs=prediction)


def feature_inputs(config, batch=2, seq=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_features": torch.randn(batch, seq, config.n_dims, generator=generator),
        "labels": torch.randint(0, 2, (batch,), generator=generator).float(),
    }


def series_inputs(config, batch=2, seq=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    channels = config.num_input_channels
    return {
        "past_values": torch.randn(batch, config.context_length, channels, generator=generator),
        "future_values": torch.randn(batch, config.prediction_length, channels, generator=generator),
    }


def build_toy_values(model_class, seed=0, **config_overrides):
    torch.manual_seed(seed)
    return model_class(ToyValueConfig(**config_overrides)).eval()
