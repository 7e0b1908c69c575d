"""The files read at run time: the model card template and facts (`model_cards/`) and the shipped configs (`configs/`).

In a repository checkout (and an editable install) they are the checkout's top-level folders. A wheel ships copies of
both inside the package (`hf_models/model_cards`, `hf_models/configs`, see `[tool.setuptools]` in pyproject.toml), so an
installed `hf-models` trains, evaluates and exports from any working directory.
"""

from pathlib import Path


PACKAGE = Path(__file__).resolve().parent
_PARENT = PACKAGE.parent  # the checkout when hf_models is used from one, site-packages in a wheel install


def checkout_root():
    """The repository checkout this package is used from (an editable install), or None (a wheel install)."""
    if (_PARENT / "pyproject.toml").is_file() and (_PARENT / "model_cards").is_dir():
        return _PARENT
    return None


def _folder(name):
    packaged = PACKAGE / name
    if packaged.is_dir():
        return packaged
    root = checkout_root()
    return (root or _PARENT) / name


def cards_dir():
    """`model_cards/`: template.md and <name>.yaml (the packaged copy when present, else the checkout's)."""
    return _folder("model_cards")


def configs_dir():
    """`configs/`: train YAMLs, model configs, accelerate configs (the packaged copy when present, else the
    checkout's)."""
    return _folder("configs")


def search_roots():
    """Where a relative path that is not found in the working directory is looked up, in order: the repository
    checkout, then the package (whose `configs/` and `model_cards/` are the shipped copies)."""
    roots = [root] if (root := checkout_root()) is not None else []
    if (PACKAGE / "configs").is_dir() or (PACKAGE / "model_cards").is_dir():
        roots.append(PACKAGE)
    return roots


def resolve(path):
    """A path as given (relative to the working directory), else under the first of `search_roots()` that has it
    (`configs/train/x.yaml` works from any working directory); unchanged when none has it."""
    candidate = Path(path)
    if candidate.exists() or candidate.is_absolute():
        return candidate
    for root in search_roots():
        if (root / candidate).exists():
            return root / candidate
    return candidate


def searched():
    """The lookup order in words, for error messages."""
    return ", then ".join(["the working directory", *(str(root) for root in search_roots())])
