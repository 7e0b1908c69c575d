"""Test setup: offline Hub, a private modules cache, seeds, and the `spec` fixture over tests/model_specs.py."""

import os
import sys
import tempfile
from pathlib import Path


# Before transformers is imported anywhere: never reach the Hub, never write remote code into the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="hfm_test_modules_")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402
from model_specs import SPECS  # noqa: E402


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=SPECS, ids=[spec.name for spec in SPECS])
def spec(request):
    return request.param


def skip_if_listed(spec, check):
    """Skip `check` for `spec` when the spec lists it, with the written reason."""
    if check in spec.skips:
        pytest.skip(f"{spec.name}: {spec.skips[check]}")


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared corpora are expected at {SHARED_DATA}")
    return SHARED_DATA
