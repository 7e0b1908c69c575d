"""hf_models: research architectures as Hugging Face `transformers` models.

Importing the package registers every architecture with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelFor<Task>`), so `AutoModelForCausalLM.from_pretrained(folder)` works in-process; folders saved by these
models also carry their code and load anywhere with `trust_remote_code=True`.
"""

__version__ = "0.1.0"

from .ngt import NgtConfig, NgtForCausalLM, NgtModel  # noqa: E402  (registration happens on import)


ARCHITECTURES = ("ngt",)

__all__ = ["ARCHITECTURES", "NgtConfig", "NgtForCausalLM", "NgtModel", "__version__"]
