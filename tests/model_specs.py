"""The registry of model specs that the shared battery (tests/common/) runs over.

One `ModelSpec` per architecture and head. A new architecture adds its specs here and passes every check; a check
that cannot apply is listed in `skips` with the reason, and the battery reports it as a skip with that reason.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

import hf_models


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "models"
# transformers >= 5.24 names the cache `cache` (output field and forward argument); `past_key_values` before that, and
# after it only as a deprecated alias. The state hooks below default to the installed version's name.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
# the inputs with a time axis (dim 1) that `split_inputs` cuts
TIME_AXIS_INPUTS = ("input_ids", "position_ids", "inputs_embeds", "token_type_ids")


def split_along_time(inputs, at):
    """`inputs` cut at time step `at` into the kwargs of two calls, the second to run with the first's state.

    Time-axis inputs (`TIME_AXIS_INPUTS`) are cut along dim 1; a 2-D `attention_mask` covers only the first chunk in
    the first call and cached + new tokens in the second (the transformers convention); `labels` are dropped (the
    chunked check compares outputs, and a loss over a chunk is not the loss over the sequence); anything else goes to
    both calls unchanged.
    """
    first, second = {}, {}
    for key, value in inputs.items():
        if key == "labels":
            continue
        if key in TIME_AXIS_INPUTS:
            first[key], second[key] = value[:, :at], value[:, at:]
        elif key == "attention_mask":
            first[key], second[key] = value[:, :at], value
        else:
            first[key] = second[key] = value
    return first, second


@dataclass
class ModelSpec:
    name: str  # test id
    package: str  # folder under hf_models/
    config_class: type
    model_class: type
    auto_class: str  # the transformers Auto class of this head
    all_auto_classes: tuple  # every Auto class the architecture's auto_map must name
    tiny_config: Path
    make_inputs: Callable  # (config, batch, seq, seed) -> model kwargs, with labels
    output_key: str = "logits"  # the main output tensor
    can_generate: bool = False
    # True: an all-ones attention_mask gives the outputs of no mask; False: a padding mask raises a ValueError that
    # names attention_mask (tests/common/test_generation.py, token inputs only)
    supports_attention_mask: bool = True
    # True: forward returns a state (output field `state_output_key`) that it accepts back (argument
    # `state_input_kwarg`), and a sequence fed in two chunks (`split_inputs`) with the state carried equals one pass
    # (tests/common/test_state.py). No check assumes the state is a DynamicCache.
    stateful: bool = False
    state_output_key: str = CACHE_NAME
    state_input_kwarg: str = CACHE_NAME
    split_inputs: Callable = split_along_time  # (inputs, at) -> (first call kwargs, second call kwargs)
    tied_weights: dict = field(default_factory=dict)  # target -> source parameter names
    invalid_config_values: dict = field(default_factory=dict)  # field -> an invalid value
    skips: dict = field(default_factory=dict)  # check name -> reason
    # what the model reads, which picks the bad-input checks of tests/common/test_bad_input.py: "tokens" (input_ids,
    # attention_mask, position_ids, token labels), "pixels" (pixel_values, class labels), "features" (input_features
    # (batch, length, `feature_width_field`)) or "series" (past_values / future_values, (batch, time, channels) with
    # context_length, prediction_length, num_input_channels). A new architecture with an existing kind gets every
    # check of that kind.
    input_kind: str = "tokens"
    feature_width_field: str = "n_dims"
    supports_inputs_embeds: bool = False  # False: passing inputs_embeds must raise a ValueError that names it
    has_loss: bool = True  # a head computes a loss from labels; a backbone spec derives one from `output_key`

    def loss(self, output):
        """The scalar the battery differentiates: the head's loss, or for a backbone the mean square output."""
        return output.loss if self.has_loss else output[self.output_key].float().pow(2).mean()

    def load_config(self, **overrides):
        config = self.config_class.from_pretrained(str(self.tiny_config))
        for key, value in overrides.items():
            setattr(config, key, value)
        return config

    def build(self, seed=0, **overrides):
        torch.manual_seed(seed)
        return self.model_class(self.load_config(**overrides))


def causal_lm_inputs(config, batch=2, seq=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # ids from 1: 0 is the tiny configs' pad id
    input_ids = torch.randint(1, config.vocab_size, (batch, seq), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}


def encoder_inputs(config, batch=2, seq=20, seed=0):
    inputs = causal_lm_inputs(config, batch, seq, seed)
    inputs.pop("labels")  # a backbone has no head to compute a loss
    return inputs


def image_inputs(config, batch=2, seq=None, seed=0):
    """Random images at the model's size and class labels (`seq` does not apply to images)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, config.num_channels, config.image_size, config.image_size)
    return {
        "pixel_values": torch.randn(shape, generator=generator),
        "labels": torch.randint(0, config.num_labels, (batch,), generator=generator),
    }


MHC_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForImageClassification")
MHC_INVALID = {
    "hidden_size": 30,  # not divisible by 4 heads
    "expansion_rate": 0,
    "hyper_connection_type": "residual",
    "sinkhorn_iterations": 0,
    "modality": "audio",
    "mask_ratio": 1.0,
    "hidden_dropout": -0.1,
    "is_causal": "yes",
    "hidden_act": "foo",
    "rms_norm_eps": float("inf"),
    "hyper_connection_gate_init": float("nan"),
}


def prompt_inputs(config, batch=2, seq=None, seed=0):
    """Random prompt features at the config's table count and labels in {-1, +1} (`seq` does not apply: the prompt
    length is num_tables·(num_columns+1)+3)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_features": torch.randn(batch, config.prompt_length(), config.n_dims, generator=generator),
        "labels": torch.randint(0, 2, (batch,), generator=generator).float() * 2 - 1,
    }


LOWRANK_ICL_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForSequenceClassification")
LOWRANK_ICL_INVALID = {
    "hidden_size": 31,  # not divisible by the tiny config's 2 heads
    "num_tables": 0,
    "num_columns": 1.5,
    "num_local_layers": 9,
    "attention_pattern": "banded",
    "position_embedding_type": "rotary",
    "table_attention_implementation": "flex",
    "is_causal": "yes",
    "hidden_dropout": 1.0,
    "hidden_act": "foo",
    "layer_norm_eps": float("nan"),
    "position_initializer_range": float("inf"),
}

TWISTOR_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification")
TWISTOR_INVALID = {
    "hidden_size": 30,  # not divisible by 4 (ω and π, each [re | im])
    "recurrent_hidden_size": 15,
    "num_recurrent_layers": 0,
    "memory_update_periods": [1, 0],
    "constraint_type": "none",
    "recurrent_implementation": "jit",
    "level_constraint_weights": [0.1],
    "memory_update_rate": 0.0,
    "hidden_dropout": 1.0,
    "bidirectional": "yes",
    "hidden_act": "foo",
    "layer_norm_eps": float("nan"),
    "mobius_coupling": float("inf"),
}


def series_inputs(config, batch=2, seq=None, seed=0):
    """A random context and future at the config's lengths (`seq` does not apply: the forecaster reads
    context_length steps)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, config.context_length, config.num_input_channels)
    return {
        "past_values": torch.randn(shape, generator=generator) * 3 + 1,
        "future_values": torch.randn(batch, config.prediction_length, config.num_input_channels, generator=generator),
    }


def series_backbone_inputs(config, batch=2, seq=16, seed=0):
    """A random series of `seq` steps for the backbone (which reads any length)."""
    generator = torch.Generator().manual_seed(seed)
    return {"past_values": torch.randn(batch, seq, config.num_input_channels, generator=generator)}


def split_series(inputs, at):
    """`past_values` cut into two calls at the last segment boundary at or before time step `at` (the backbone's
    hidden states of a stream equal one pass where chunks end on segment boundaries; the tiny config's patches do not
    overlap: patch_length == patch_stride)."""
    config = hf_models.TitansTsConfig.from_pretrained(str(CONFIGS / "titans_ts" / "tiny.json"))
    assert config.patch_length == config.patch_stride
    step = config.patch_length * config.segment_length
    cut = max(step, at // step * step)
    values = inputs["past_values"]
    return {"past_values": values[:, :cut]}, {"past_values": values[:, cut:]}


TITANS_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForTimeSeriesPrediction")
TITANS_INVALID = {
    "hidden_size": 31,  # not divisible by the tiny config's 2 attention heads
    "context_length": 1,  # shorter than a patch
    "patch_stride": 0,
    "scaling": "robust",
    "neural_memory_layers": [5],
    "memory_chunk_size": 0,
    "memory_batch_size": 3,  # not a multiple of the chunk size 2
    "memory_momentum_order": 0,
    "memory_max_lr": float("nan"),
    "memory_implementation": "triton",
    "memory_qk_rmsnorm": "yes",
    "loss": "huber",
    "norm_type": "rmsnorm",
    "hidden_dropout": 1.0,
    "hidden_act": "foo",
}


def titans_forecaster_spec(name, tiny):
    return ModelSpec(
        name=name,
        package="titans_ts",
        config_class=hf_models.TitansTsConfig,
        model_class=hf_models.TitansTsForPrediction,
        auto_class="AutoModelForTimeSeriesPrediction",
        all_auto_classes=TITANS_AUTO_CLASSES,
        tiny_config=CONFIGS / "titans_ts" / tiny,
        make_inputs=series_inputs,
        output_key="prediction_outputs",
        input_kind="series",
        supports_attention_mask=False,
        invalid_config_values=TITANS_INVALID,
    )


SPECS = [
    ModelSpec(
        name="ngt-causal-lm",
        package="ngt",
        config_class=hf_models.NgtConfig,
        model_class=hf_models.NgtForCausalLM,
        auto_class="AutoModelForCausalLM",
        all_auto_classes=("AutoConfig", "AutoModel", "AutoModelForCausalLM"),
        tiny_config=CONFIGS / "ngt" / "tiny.json",
        make_inputs=causal_lm_inputs,
        can_generate=True,
        tied_weights={"lm_head.weight": "model.embed_tokens.weight"},
        invalid_config_values={
            "hidden_size": 30,  # not divisible by 4 heads
            "num_attention_heads": 0,
            "gravity_kernel": "newtonian",
            "radius_cutoff": "maybe",
            "gravity_epsilon": 0.0,
            "attention_dropout": 1.5,
            "repulsion_num_samples": 1,
            "gravity_implementation": "flash",
            "hidden_act": "foo",
            "layer_norm_eps": float("inf"),
            "repulsion_weight": float("inf"),
            "initial_radius": float("nan"),
        },
    ),
    ModelSpec(
        name="mhc-causal-lm",
        package="mhc",
        config_class=hf_models.MhcConfig,
        model_class=hf_models.MhcForCausalLM,
        auto_class="AutoModelForCausalLM",
        all_auto_classes=MHC_AUTO_CLASSES,
        tiny_config=CONFIGS / "mhc" / "tiny.json",
        make_inputs=causal_lm_inputs,
        can_generate=True,
        invalid_config_values=MHC_INVALID,
    ),
    ModelSpec(
        name="mhc-encoder",
        package="mhc",
        config_class=hf_models.MhcConfig,
        model_class=hf_models.MhcModel,
        auto_class="AutoModel",
        all_auto_classes=MHC_AUTO_CLASSES,
        tiny_config=CONFIGS / "mhc" / "tiny_encoder.json",
        make_inputs=encoder_inputs,
        output_key="last_hidden_state",
        has_loss=False,
        invalid_config_values=MHC_INVALID,
        skips={
            "trainer": "Trainer optimises a loss; the bidirectional backbone has no head (covered through the heads)",
            "labels": "a backbone takes no labels",
        },
    ),
    ModelSpec(
        name="mhc-image-classifier",
        package="mhc",
        config_class=hf_models.MhcConfig,
        model_class=hf_models.MhcForImageClassification,
        auto_class="AutoModelForImageClassification",
        all_auto_classes=MHC_AUTO_CLASSES,
        tiny_config=CONFIGS / "mhc" / "tiny_image.json",
        make_inputs=image_inputs,
        input_kind="pixels",
        invalid_config_values={**MHC_INVALID, "patch_size": 3, "pool_size": 9, "is_causal": True, "num_labels": 0},
    ),
    ModelSpec(
        name="twistor-hope-causal-lm",
        package="twistor_hope",
        config_class=hf_models.TwistorHopeConfig,
        model_class=hf_models.TwistorHopeForCausalLM,
        auto_class="AutoModelForCausalLM",
        all_auto_classes=TWISTOR_AUTO_CLASSES,
        tiny_config=CONFIGS / "twistor_hope" / "tiny.json",
        make_inputs=causal_lm_inputs,
        can_generate=True,
        stateful=True,
        invalid_config_values=TWISTOR_INVALID,
    ),
    ModelSpec(
        name="twistor-hope-encoder",
        package="twistor_hope",
        config_class=hf_models.TwistorHopeConfig,
        model_class=hf_models.TwistorHopeModel,
        auto_class="AutoModel",
        all_auto_classes=TWISTOR_AUTO_CLASSES,
        tiny_config=CONFIGS / "twistor_hope" / "tiny_encoder.json",
        make_inputs=encoder_inputs,
        output_key="last_hidden_state",
        has_loss=False,
        invalid_config_values=TWISTOR_INVALID,
        skips={
            "trainer": "Trainer optimises a loss; the bidirectional backbone has no head (covered through the heads)",
            "labels": "a backbone takes no labels",
        },
    ),
    ModelSpec(
        name="lowrank-icl-prompt-classifier",
        package="lowrank_icl",
        config_class=hf_models.LowRankIclConfig,
        model_class=hf_models.LowRankIclForPromptClassification,
        auto_class="AutoModelForSequenceClassification",
        all_auto_classes=LOWRANK_ICL_AUTO_CLASSES,
        tiny_config=CONFIGS / "lowrank_icl" / "tiny.json",
        make_inputs=prompt_inputs,
        input_kind="features",
        supports_attention_mask=False,
        invalid_config_values=LOWRANK_ICL_INVALID,
    ),
    titans_forecaster_spec("titans-ts-forecaster", "tiny.json"),
    # the post-norm BatchNorm blocks of the benchmark configuration (configs/models/titans_ts/small.json)
    titans_forecaster_spec("titans-ts-forecaster-batchnorm", "tiny_batchnorm.json"),
    ModelSpec(
        name="titans-ts-backbone",
        package="titans_ts",
        config_class=hf_models.TitansTsConfig,
        model_class=hf_models.TitansTsModel,
        auto_class="AutoModel",
        all_auto_classes=TITANS_AUTO_CLASSES,
        tiny_config=CONFIGS / "titans_ts" / "tiny.json",
        make_inputs=series_backbone_inputs,
        output_key="last_hidden_state",
        has_loss=False,
        supports_attention_mask=False,
        stateful=True,
        state_output_key="memory_state",
        state_input_kwarg="memory_state",
        split_inputs=split_series,
        input_kind="series_backbone",
        invalid_config_values=TITANS_INVALID,
        skips={
            "trainer": "Trainer optimises a loss; the backbone has no head (covered through the forecaster)",
            "labels": "a backbone takes no labels",
        },
    ),
]
