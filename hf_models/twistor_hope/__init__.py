"""Twistor-HOPE: registration with the Auto classes and re-exports.

This file is not shipped to the Hub; the shipped files are components_twistor_hope.py, configuration_twistor_hope.py,
modeling_twistor_hope.py, shared_cache.py, shared_compat.py, shared_config_checks.py and shared_token_inputs.py
(tests/common/test_remote_code.py checks this list against the imports and against what save_pretrained writes).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from .components_twistor_hope import (
    AdaptiveMobiusLayer,
    IncidenceAttention,
    MobiusLayer,
    SpinorEmbedding,
    TwistorMemorySystem,
    TwistorNestedLearning,
    TwistorSelfModifyingRecurrent,
    TwistorTitansCell,
    TwistorTitansRecurrent,
    twist,
)
from .configuration_twistor_hope import TwistorHopeConfig
from .modeling_twistor_hope import (
    TwistorHopeCache,
    TwistorHopeForCausalLM,
    TwistorHopeForSequenceClassification,
    TwistorHopeModel,
    TwistorHopePreTrainedModel,
)


AutoConfig.register(TwistorHopeConfig.model_type, TwistorHopeConfig, exist_ok=True)
AutoModel.register(TwistorHopeConfig, TwistorHopeModel, exist_ok=True)
AutoModelForCausalLM.register(TwistorHopeConfig, TwistorHopeForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(TwistorHopeConfig, TwistorHopeForSequenceClassification, exist_ok=True)
# Every save_pretrained (Trainer checkpoints included) copies the code files and writes the auto_map.
TwistorHopeConfig.register_for_auto_class()
TwistorHopeModel.register_for_auto_class("AutoModel")
TwistorHopeForCausalLM.register_for_auto_class("AutoModelForCausalLM")
TwistorHopeForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "AdaptiveMobiusLayer",
    "IncidenceAttention",
    "MobiusLayer",
    "SpinorEmbedding",
    "TwistorHopeCache",
    "TwistorHopeConfig",
    "TwistorHopeForCausalLM",
    "TwistorHopeForSequenceClassification",
    "TwistorHopeModel",
    "TwistorHopePreTrainedModel",
    "TwistorMemorySystem",
    "TwistorNestedLearning",
    "TwistorSelfModifyingRecurrent",
    "TwistorTitansCell",
    "TwistorTitansRecurrent",
    "twist",
]
