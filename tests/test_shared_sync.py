"""The shared blocks in hf_models/_shared/ and their shipped copies in the model folders never drift apart."""

import shutil

import hf_models._shared as shared


def test_every_copy_matches_its_canonical_file():
    assert shared.sync(check=True) == []


def test_check_reports_drift_and_sync_repairs_it(tmp_path, monkeypatch):
    package = tmp_path / "hf_models"
    shutil.copytree(shared.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(shared, "PACKAGE", package)
    monkeypatch.setattr(shared, "SHARED", package / "_shared")
    copy = package / "mhc" / "shared_token_inputs.py"
    copy.write_text(copy.read_text() + "\n# edited in place\n")
    (package / "ngt" / "shared_token_inputs.py").unlink()
    (package / "ngt" / "shared_unused.py").write_text("")
    problems = shared.sync(check=True)
    assert "mhc/shared_token_inputs.py is out of date" in problems
    assert "ngt/shared_token_inputs.py is missing" in problems
    assert any("shared_unused.py is not imported" in p for p in problems)
    shared.sync()
    (package / "ngt" / "shared_unused.py").unlink()
    assert shared.sync(check=True) == []
    assert copy.read_bytes() == (package / "_shared" / "shared_token_inputs.py").read_bytes()
