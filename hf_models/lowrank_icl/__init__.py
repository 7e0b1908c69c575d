"""LowRank ICL: registration with the Auto classes and re-exports.

This file is not shipped to the Hub; the shipped files are configuration_lowrank_icl.py, modeling_lowrank_icl.py,
shared_compat.py, shared_config_checks.py and shared_value_inputs.py (tests/common/test_remote_code.py checks this
list against the imports and against what save_pretrained writes), and the processor, processing_lowrank_icl.py,
which its own save_pretrained writes beside preprocessor_config.json.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification

from .configuration_lowrank_icl import LowRankIclConfig
from .modeling_lowrank_icl import (
    LowRankIclForPromptClassification,
    LowRankIclModel,
    LowRankIclPreTrainedModel,
    local_table_attention,
    naive_masked_attention,
    sparse_table_attention,
    table_attention_mask,
)
from .processing_lowrank_icl import LowRankIclProcessor


AutoConfig.register(LowRankIclConfig.model_type, LowRankIclConfig, exist_ok=True)
AutoModel.register(LowRankIclConfig, LowRankIclModel, exist_ok=True)
AutoModelForSequenceClassification.register(LowRankIclConfig, LowRankIclForPromptClassification, exist_ok=True)
AutoFeatureExtractor.register(LowRankIclConfig, LowRankIclProcessor, exist_ok=True)
# Every save_pretrained (Trainer checkpoints included) copies the code files and writes the auto_map.
LowRankIclConfig.register_for_auto_class()
LowRankIclModel.register_for_auto_class("AutoModel")
LowRankIclForPromptClassification.register_for_auto_class("AutoModelForSequenceClassification")
LowRankIclProcessor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "LowRankIclConfig",
    "LowRankIclForPromptClassification",
    "LowRankIclModel",
    "LowRankIclPreTrainedModel",
    "LowRankIclProcessor",
    "local_table_attention",
    "naive_masked_attention",
    "sparse_table_attention",
    "table_attention_mask",
]
