"""hf_models: research architectures as Hugging Face `transformers` models.

Importing the package registers every architecture with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelFor<Task>`), so `AutoModelForCausalLM.from_pretrained(folder)` works in-process; folders saved by these
models also carry their code and load anywhere with `trust_remote_code=True`.
"""

__version__ = "0.1.0"

# registration with the Auto classes happens on import
from .lowrank_icl import (  # noqa: E402
    LowRankIclConfig,
    LowRankIclForPromptClassification,
    LowRankIclModel,
    LowRankIclProcessor,
)
from .mhc import MhcConfig, MhcForCausalLM, MhcForImageClassification, MhcModel  # noqa: E402
from .ngt import NgtConfig, NgtForCausalLM, NgtModel  # noqa: E402
from .titans_ts import TitansTsConfig, TitansTsForPrediction, TitansTsMemoryState, TitansTsModel  # noqa: E402
from .twistor_hope import (  # noqa: E402
    TwistorHopeConfig,
    TwistorHopeForCausalLM,
    TwistorHopeForSequenceClassification,
    TwistorHopeModel,
)


ARCHITECTURES = ("ngt", "mhc", "twistor_hope", "lowrank_icl", "titans_ts")

__all__ = [
    "ARCHITECTURES",
    "LowRankIclConfig",
    "LowRankIclForPromptClassification",
    "LowRankIclModel",
    "LowRankIclProcessor",
    "MhcConfig",
    "MhcForCausalLM",
    "MhcForImageClassification",
    "MhcModel",
    "NgtConfig",
    "NgtForCausalLM",
    "NgtModel",
    "TitansTsConfig",
    "TitansTsForPrediction",
    "TitansTsMemoryState",
    "TitansTsModel",
    "TwistorHopeConfig",
    "TwistorHopeForCausalLM",
    "TwistorHopeForSequenceClassification",
    "TwistorHopeModel",
    "__version__",
]
