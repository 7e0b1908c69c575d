"""Titans-TS: registration with the Auto classes and re-exports.

This file is not shipped to the Hub; the shipped files are configuration_titans_ts.py, modeling_titans_ts.py,
ops_titans_ts.py, shared_compat.py, shared_config_checks.py and shared_value_inputs.py (tests/common/test_remote_code.py
checks this list against the imports and against what save_pretrained writes), and the processor,
processing_titans_ts.py, which its own save_pretrained writes beside preprocessor_config.json.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForTimeSeriesPrediction

from .configuration_titans_ts import TitansTsConfig
from .modeling_titans_ts import (
    TitansTsForPrediction,
    TitansTsMemoryState,
    TitansTsModel,
    TitansTsNeuralMemory,
    TitansTsPreTrainedModel,
)
from .ops_titans_ts import chunked_neural_memory, memory_mlp, naive_neural_memory, neural_memory
from .processing_titans_ts import TitansTsProcessor


AutoConfig.register(TitansTsConfig.model_type, TitansTsConfig, exist_ok=True)
AutoModel.register(TitansTsConfig, TitansTsModel, exist_ok=True)
AutoModelForTimeSeriesPrediction.register(TitansTsConfig, TitansTsForPrediction, exist_ok=True)
AutoFeatureExtractor.register(TitansTsConfig, TitansTsProcessor, exist_ok=True)
# Every save_pretrained (Trainer checkpoints included) copies the code files and writes the auto_map.
TitansTsConfig.register_for_auto_class()
TitansTsModel.register_for_auto_class("AutoModel")
TitansTsForPrediction.register_for_auto_class("AutoModelForTimeSeriesPrediction")
TitansTsProcessor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "TitansTsConfig",
    "TitansTsForPrediction",
    "TitansTsMemoryState",
    "TitansTsModel",
    "TitansTsNeuralMemory",
    "TitansTsPreTrainedModel",
    "TitansTsProcessor",
    "chunked_neural_memory",
    "memory_mlp",
    "naive_neural_memory",
    "neural_memory",
]
