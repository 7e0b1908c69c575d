"""mHC (Manifold-Constrained Hyper-Connections): registration with the Auto classes and re-exports.

This file is not shipped to the Hub; the shipped files are configuration_mhc.py, modeling_mhc.py, ops_mhc.py,
kernels_mhc.py, shared_cache.py, shared_compat.py, shared_config_checks.py and
shared_token_inputs.py (tests/common/test_remote_code.py checks this list
against the imports and against what save_pretrained writes).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageClassification

from .configuration_mhc import MhcConfig
from .modeling_mhc import MhcForCausalLM, MhcForImageClassification, MhcModel, MhcPreTrainedModel


AutoConfig.register(MhcConfig.model_type, MhcConfig, exist_ok=True)
AutoModel.register(MhcConfig, MhcModel, exist_ok=True)
AutoModelForCausalLM.register(MhcConfig, MhcForCausalLM, exist_ok=True)
AutoModelForImageClassification.register(MhcConfig, MhcForImageClassification, exist_ok=True)
# Every save_pretrained (Trainer checkpoints included) copies the code files and writes the auto_map.
MhcConfig.register_for_auto_class()
MhcModel.register_for_auto_class("AutoModel")
MhcForCausalLM.register_for_auto_class("AutoModelForCausalLM")
MhcForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["MhcConfig", "MhcForCausalLM", "MhcForImageClassification", "MhcModel", "MhcPreTrainedModel"]
