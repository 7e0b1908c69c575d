"""The registry of model specs that the shared battery (tests/common/) runs over.

One `ModelSpec` per architecture and head. A new architecture adds its specs here and passes every check; a check
that cannot apply is listed in `skips` with the reason, and the battery reports it as a skip with that reason.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import hf_models


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "models"


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
    supports_attention_mask: bool = True
    stateful: bool = False
    tied_weights: dict = field(default_factory=dict)  # target -> source parameter names
    invalid_config_values: dict = field(default_factory=dict)  # field -> an invalid value
    skips: dict = field(default_factory=dict)  # check name -> reason

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
        },
    ),
]
