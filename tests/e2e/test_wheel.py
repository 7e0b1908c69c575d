"""A wheel install (`pip install .`, not editable) trains, evaluates and exports from another folder: the card template,
the card facts and the configs ship inside the package (hf_models/resources.py)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "hf_models", "model_cards", "configs"]


def _run(command, cwd, env=None, timeout=600):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the checkout's sources (so the build writes nothing into the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(source)], cwd=tmp)  # fmt: skip
    (built,) = (tmp / "dist").glob("hf_models-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory):
    """A fresh venv holding only the wheel's hf_models; the main environment's dependencies are visible through a .pth
    line (a path added that way is not a site dir, so the main environment's editable-install finder is not run)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], cwd=venv.parent)  # fmt: skip
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv))
    (Path(str(site).strip()) / "main_env_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_wheel_ships_every_package_and_the_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "hf_models").rglob("__init__.py")}
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing, f"subpackages missing from the wheel (add them to [tool.setuptools] packages): {missing}"
    for folder in ("model_cards", "configs"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in {".md", ".yaml", ".json"}:
                assert f"hf_models/{path.relative_to(REPO).as_posix()}" in names, f"{path} is not in the wheel"


def test_wheel_install_trains_evaluates_exports(venv_python, shared_data, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    where = _run([str(venv_python), "-c", "import hf_models; print(hf_models.__file__)"], cwd=work, env=env).strip()
    assert Path(where).is_relative_to(venv_python.parents[1]), f"hf_models imported from {where}, not the wheel"

    cli = [str(venv_python), "-m", "hf_models.cli"]
    _run(cli + ["train", "configs/train/ngt_tinyshakespeare_tiny.yaml", "--corpus",
                str(shared_data / "tinyshakespeare.txt"), "--output_dir", "run", "--max_steps", "2", "--save_steps",
                "2", "--sample_max_new_tokens", "0", "--max_eval_blocks", "2"], cwd=work, env=env)  # fmt: skip
    assert (work / "run" / "config.json").is_file()
    _run(cli + ["evaluate", "run"], cwd=work, env=env)
    _run(cli + ["export", "run", "export"], cwd=work, env=env)
    card = (work / "export" / "README.md").read_text(encoding="utf-8")
    assert "## Usage" in card and "trust_remote_code" in card
