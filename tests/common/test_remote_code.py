"""Battery: the shipped files pass the static audit, and a saved folder loads and matches in a process without
hf_models (remote code through `trust_remote_code=True`)."""

import importlib
import re
from pathlib import Path

import torch

from hf_models.hub import audit_folder, audit_source, run_isolated, shipped_files


def _package_folder(spec):
    return Path(importlib.import_module(f"hf_models.{spec.package}").__file__).parent


def test_shipped_package_files_pass_the_audit(spec):
    folder = _package_folder(spec)
    files = {p.name for p in folder.iterdir()}
    shipped = shipped_files(folder, [f"configuration_{spec.package}.py", f"modeling_{spec.package}.py"])
    problems = []
    for name in shipped:
        problems += audit_source((folder / name).read_text(encoding="utf-8"), name, files)
    assert not problems, "\n".join(problems)
    config_source = (folder / f"configuration_{spec.package}.py").read_text(encoding="utf-8")
    assert "import torch" not in config_source, "the configuration file must not import torch"


def test_save_pretrained_ships_exactly_the_package_files(spec, tmp_path):
    model = spec.build()
    model.save_pretrained(tmp_path)
    folder = _package_folder(spec)
    expected = shipped_files(folder, [f"configuration_{spec.package}.py", f"modeling_{spec.package}.py"])
    saved = sorted(p.name for p in tmp_path.glob("*.py"))
    assert saved == expected
    for name in saved:  # what is tested is what is shipped
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name
    problems = audit_folder(tmp_path, spec.all_auto_classes)
    assert not problems, "\n".join(problems)
    # the list a reader sees in the architecture's __init__.py is this one
    package_doc = importlib.import_module(f"hf_models.{spec.package}").__doc__
    listed = re.findall(r"\b\w+\.py\b", package_doc.partition("the shipped files are")[2].partition("(")[0])
    assert sorted(listed) == expected, f"hf_models/{spec.package}/__init__.py lists {listed}; shipped: {expected}"


def test_audit_catches_bad_imports():
    files = {"modeling_x.py", "helpers.py"}
    bad = "import numpy\nfrom ..pkg import a\nfrom . import helpers\nfrom .missing import b\nimport os\nx = os.environ['A']\n"
    problems = audit_source(bad, "modeling_x.py", files)
    assert len(problems) == 5, problems
    good = "import math\nimport torch\nfrom .helpers import h\ntry:\n    import triton\nexcept ImportError:\n    triton = None\n"
    assert audit_source(good, "modeling_x.py", files) == []


def test_isolated_remote_code_load_reproduces_outputs(spec, tmp_path):
    model = spec.build().eval()
    inputs = spec.make_inputs(model.config, batch=2, seq=12, seed=3)
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = model(**inputs)
    max_new = 6 if spec.can_generate else 0
    outputs, info = run_isolated(tmp_path, spec.auto_class, inputs, max_new_tokens=max_new)
    assert info["hf_models_modules"] == [], info
    assert info["model_module"].startswith("transformers_modules"), info
    torch.testing.assert_close(outputs[spec.output_key], expected[spec.output_key], rtol=0, atol=0)
    if spec.can_generate:
        gen_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        generated = model.generate(**gen_inputs, max_new_tokens=max_new, do_sample=False)
        assert torch.equal(outputs["generated"], generated)


def test_audit_refuses_compilation_at_import_only():
    """torch.compile at import (a module-level call, a decorator, a default value) is refused; a compile inside a
    function, which runs only when called (an opt-in fast path), is not."""
    files = {"modeling_x.py"}
    at_import = [
        "import torch\nf = torch.compile(lambda x: x)\n",
        "import torch\n@torch.compile\ndef f(x):\n    return x\n",
        "import torch\n@torch.compile(mode='default')\ndef f(x):\n    return x\n",
        "import torch\nclass M:\n    g = torch.compile(abs)\n",
        "import torch\ndef f(x, g=torch.compile(abs)):\n    return g(x)\n",
    ]
    for source in at_import:
        problems = audit_source(source, "modeling_x.py", files)
        assert len(problems) == 1 and "torch.compile at import" in problems[0], (source, problems)
    lazy = "import torch\n_C = {}\ndef fast(f):\n    if f not in _C:\n        _C[f] = torch.compile(f)\n    return _C[f]\n"
    assert audit_source(lazy, "modeling_x.py", files) == []
