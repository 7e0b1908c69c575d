"""`hf-models audit` as a security check: hostile folders are refused with what their code can do, and the project's
own shipped files report exactly what they do."""

import json
import pickle

import pytest
from model_specs import SPECS

from hf_models.cli import main
from hf_models.hub import audit_folder, scan_folder, scan_source


NGT = next(spec for spec in SPECS if spec.package == "ngt")
MHC = next(spec for spec in SPECS if spec.package == "mhc")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved NGT folder (config with auto_map, safetensors, code): the base of each hostile folder."""
    folder = tmp_path_factory.mktemp("ngt")
    NGT.build().save_pretrained(folder)
    return folder


def hostile(saved, tmp_path, code=None, extra_files=None):
    """A copy of `saved` whose modeling file starts with `code`, plus `extra_files` {name: bytes}."""
    folder = tmp_path / "model"
    folder.mkdir()
    for path in saved.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    if code is not None:
        modeling = folder / "modeling_ngt.py"
        modeling.write_text(code + "\n" + modeling.read_text())
    for name, data in (extra_files or {}).items():
        (folder / name).write_bytes(data)
    return folder


HOSTILE = [
    ("import subprocess\ndef f():\n    subprocess.run(['curl', 'x'])\n", "process", "subprocess.run"),
    ("import subprocess as sp\ndef f():\n    sp.Popen('sh')\n", "process", "sp.Popen('sh')"),
    ("import os\ndef f():\n    os.system('rm -rf ~')\n", "process", "os.system"),
    ("from os import system as s\ndef f():\n    s('id')\n", "process", "from os import system"),
    ("from subprocess import *\ndef f():\n    check_output(['id'])\n", "process", "check_output"),
    ("import os\ndef f():\n    os.execv('/bin/sh', ['sh'])\n", "process", "os.execv"),
    ("import base64\ndef f():\n    exec(base64.b64decode('cHJpbnQoMSk='))\n", "dynamic-code", "exec(base64.b64decode"),
    ("def f(s):\n    return eval(s)\n", "dynamic-code", "eval(s)"),
    ("import importlib\ndef f(n):\n    return importlib.import_module(n)\n", "dynamic-code", "import_module(n)"),
    ("def f():\n    return __import__('subprocess')\n", "process", "__import__('subprocess')"),
    ("import os\ndef f(n):\n    return getattr(os, n)('id')\n", "dynamic-code", "getattr(os, n)"),
    ("import pickle\ndef f(b):\n    return pickle.loads(b)\n", "pickle", "pickle.loads"),
    ("import torch\ndef f(p):\n    return torch.load(p)\n", "pickle", "torch.load(p)"),
    ("import socket\ndef f():\n    socket.create_connection(('x', 1))\n", "network", "socket"),
    ("import urllib.request\ndef f():\n    urllib.request.urlopen('http://x')\n", "network", "urlopen"),
]


@pytest.mark.parametrize("code, kind, detail", HOSTILE, ids=[f"{i}-{h[1]}" for i, h in enumerate(HOSTILE)])
def test_hostile_code_is_refused_with_what_it_does(saved, tmp_path, capsys, code, kind, detail):
    folder = hostile(saved, tmp_path, code)
    problems = audit_folder(folder, NGT.all_auto_classes)
    assert any(f": {kind}: " in p and detail in p for p in problems), problems
    assert main(["audit", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{kind} (REFUSED):" in out and detail in out


def test_reported_capabilities_do_not_fail_but_are_listed(saved, tmp_path, capsys):
    code = (
        "import os\nfrom os import environ\nfrom pathlib import Path\n"
        "def f(p):\n    Path(p).write_text('x')\n    with open(p, 'a') as h:\n        h.write('y')\n"
        "    return os.getenv('HOME'), environ.get('X')\n"
        "def g():\n    from torch.utils import cpp_extension\n    return cpp_extension.load_inline('m', '')\n"
    )
    folder = hostile(saved, tmp_path, code)
    assert audit_folder(folder, NGT.all_auto_classes) == []
    assert main(["audit", str(folder)]) == 0
    out = capsys.readouterr().out
    for line in ("file-write (reported):", "Path(p).write_text('x')", "open(p, 'a')", "environment (reported):",
                 "os.getenv('HOME')", "from os import environ", "native-build (reported):", "load_inline"):  # fmt: skip
        assert line in out, (line, out)
    # reading files, str.replace and torch calls are not file writes
    quiet = "import torch\ndef f(p, s):\n    open(p).read()\n    open(p, 'rb')\n    return s.replace('a', 'b'), torch.zeros(1)\n"
    assert scan_source(quiet, "m.py") == []


def test_environment_read_at_import_breaks_the_shipped_file_rules(saved, tmp_path):
    folder = hostile(saved, tmp_path, "import os\nDEBUG = os.environ.get('DEBUG')\n")
    assert any("reads os.environ at import" in p for p in audit_folder(folder, NGT.all_auto_classes))


@pytest.mark.parametrize(
    "name, data",
    [
        ("weights.pickle", pickle.dumps({"w": [1.0]})),
        ("pytorch_model.bin", b"PK\x03\x04rest of a torch zip"),
        ("innocent.dat", pickle.dumps([1, 2, 3], protocol=4)),  # pickled data under another name: sniffed
    ],
)
def test_pickle_files_are_refused_whatever_their_name(saved, tmp_path, capsys, name, data):
    folder = hostile(saved, tmp_path, extra_files={name: data})
    assert any(name in p and "pickled data" in p for p in audit_folder(folder, NGT.all_auto_classes))
    assert main(["audit", str(folder)]) == 1
    assert name in capsys.readouterr().out


def test_unfinished_exports_are_refused(saved, tmp_path, capsys):
    partial = hostile(saved, tmp_path)
    partial = partial.rename(tmp_path / "exported.partial")
    assert main(["audit", str(partial)]) == 1
    assert "unfinished export" in capsys.readouterr().out
    assert audit_folder(partial, NGT.all_auto_classes, staging=True) == []  # the export's own check before renaming
    marked = tmp_path / "exported"
    partial.rename(marked)
    (marked / ".export-in-progress").write_text("")
    assert any(".export-in-progress" in p for p in audit_folder(marked, NGT.all_auto_classes))


def test_json_report(saved, tmp_path, capsys):
    folder = hostile(saved, tmp_path, "import os\ndef f():\n    os.system('x')\n    return os.environ\n")
    assert main(["audit", str(folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["problems"]
    kinds = {(f["kind"], f["function"], f["refused"]) for f in report["capabilities"]}
    assert kinds == {("process", "f", True), ("environment", "f", False)}


def _report(folder):
    """{(kind, file, function)} of a saved folder: line numbers left out, so edits elsewhere do not move it."""
    return sorted({(f.kind, f.file, f.function) for f in scan_folder(folder)})


def test_ngt_ships_code_that_does_nothing_outside_the_model(tmp_path):
    NGT.build().save_pretrained(tmp_path)
    assert _report(tmp_path) == []


def test_mhc_ships_code_that_does_exactly_its_kernel_build(tmp_path):
    """mHC builds its fused CPU kernels once, at the first training step: torch's C++ extension build in its cache
    folder (or a private temporary one), under a file lock, switched by one environment variable."""
    MHC.build().save_pretrained(tmp_path)
    assert audit_folder(tmp_path, MHC.all_auto_classes) == []
    assert _report(tmp_path) == [
        ("environment", "kernels_mhc.py", "load"),  # HF_MODELS_MHC_KERNELS=0 switches the build off
        ("file-write", "kernels_mhc.py", "_acquire"),  # the build lock file
        ("file-write", "kernels_mhc.py", "_build_privately"),  # a temporary build folder where the cache is unwritable
        ("file-write", "kernels_mhc.py", "_cache_folder"),  # the cache folder, created if missing
        ("file-write", "kernels_mhc.py", "_load_or_build"),  # the build folder; the library renamed into the cache
        ("file-write", "kernels_mhc.py", "_lock_functions"),  # unlock
        ("file-write", "kernels_mhc.py", "_lock_functions.try_lock"),  # flock
        ("file-write", "kernels_mhc.py", "_lock_functions.try_lock_windows"),  # msvcrt.locking
        ("file-write", "kernels_mhc.py", "_not_writable"),  # a probe file: can the cache be written?
        ("native-build", "kernels_mhc.py", "_build"),  # cpp_extension.load_inline
        ("native-build", "kernels_mhc.py", "_cache_folder"),  # torch's extension folder
        ("native-build", "kernels_mhc.py", "_import_library"),  # importing the built library from the cache
    ]
