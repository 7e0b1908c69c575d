"""The `hf-models` command: list and audit."""

import subprocess
import sys

from model_specs import SPECS

from hf_models.cli import main


def test_list_names_every_architecture(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for spec in SPECS:
        assert f"hfm_{spec.package}" in out


def test_audit_passes_a_saved_folder_and_fails_a_broken_one(tmp_path, capsys):
    spec = SPECS[0]
    spec.build().save_pretrained(tmp_path)
    assert main(["audit", str(tmp_path)]) == 0
    modeling = next(tmp_path.glob("modeling_*.py"))
    modeling.write_text("import hf_models\n" + modeling.read_text())
    assert main(["audit", str(tmp_path)]) == 1
    assert "imports 'hf_models'" in capsys.readouterr().out
    assert main(["audit", str(tmp_path / "missing")]) == 2


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "hf_models.cli", "list"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "hfm_ngt" in proc.stdout
