"""NGT (Newtonian Gravity Transformer): registration with the Auto classes and re-exports.

This file is not shipped to the Hub; the shipped files are configuration_ngt.py, modeling_ngt.py, ops_ngt.py,
shared_cache.py, shared_compat.py, shared_config_checks.py and shared_token_inputs.py (tests/common/test_remote_code.py
checks this list against the imports and against what save_pretrained writes).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_ngt import NgtConfig
from .modeling_ngt import NgtForCausalLM, NgtModel, NgtPreTrainedModel


AutoConfig.register(NgtConfig.model_type, NgtConfig, exist_ok=True)
AutoModel.register(NgtConfig, NgtModel, exist_ok=True)
AutoModelForCausalLM.register(NgtConfig, NgtForCausalLM, exist_ok=True)
# Every save_pretrained (Trainer checkpoints included) copies the code files and writes the auto_map.
NgtConfig.register_for_auto_class()
NgtModel.register_for_auto_class("AutoModel")
NgtForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["NgtConfig", "NgtForCausalLM", "NgtModel", "NgtPreTrainedModel"]
