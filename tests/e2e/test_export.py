"""`hf-models export` / `push`: a Hub-ready folder whose card parses, whose model-index round-trips through
huggingface_hub, and whose usage snippets run as written in a process without hf_models."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from card_snippets import card_snippets
from huggingface_hub import ModelCard

from hf_models.cli import main
from hf_models.hub import audit_folder


TINY = "configs/train/ngt_tinyshakespeare_tiny.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    cli = ["--output_dir", str(folder), "--max_steps", "10", "--save_steps", "5", "--sample_prompt", "JULIET:\n"]
    assert main(["train", TINY, *cli]) == 0
    return folder


def test_export_writes_a_complete_hub_folder(run_dir, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    expected = {"README.md", "config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                "eval_results.json", "training_curve.png", "configuration_ngt.py", "modeling_ngt.py", "ops_ngt.py"}  # fmt: skip
    assert expected <= names, expected - names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)  # no Trainer pickles either
    assert not audit_folder(out, ("AutoModel", "AutoModelForCausalLM"))
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert "custom_code" in card.data.tags and "ngt" in card.data.tags
    measured = json.loads((out / "eval_results.json").read_text())
    parsed = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert parsed == {
        "loss": round(measured["eval_loss"], 4),
        "perplexity": round(measured["perplexity"], 4),
        "bits_per_character": round(measured["bits_per_character"], 4),
    }
    assert "## Citation" in card.text and "Parameters:" in card.text
    assert card.data.datasets == ["karpathy/tiny_shakespeare"]  # the local corpus's Hub dataset, linked
    # the recipe line carries the optimizer and prints whole numbers as the config wrote them (2, not 2.0)
    recipe = next(line for line in card.text.splitlines() if line.startswith("- Recipe:"))
    for part in ("optimizer adamw_torch_fused (betas 0.9, 0.999)", "(cosine, 2 warmup steps)", "gradient clipping 1,"):
        assert part in recipe, recipe
    sample = json.loads((run_dir / "samples.jsonl").read_text().splitlines()[-1])
    assert f"(step {sample['step']};" in card.text and f"````text\n{sample['text']}\n````" in card.text


def test_card_snippets_run_without_hf_models(run_dir, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    snippets = card_snippets(out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    for snippet in snippets:
        script = tmp_path / "snippet.py"
        script.write_text('import sys\nsys.modules["hf_models"] = None\n' + snippet)
        proc = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "JULIET:" in proc.stdout  # the snippets start from the run's own sample prompt
        assert "JULIET:\\n" in snippet and "ROMEO" not in snippet


def test_export_refuses_a_used_folder_and_exports_a_checkpoint(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    # a run folder with checkpoints only (interrupted): the newest checkpoint is exported and evaluated
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train_config.yaml").write_bytes((run_dir / "train_config.yaml").read_bytes())
    shutil.copytree(run_dir / "checkpoint-5", partial / "checkpoint-5")
    assert main(["export", str(partial), str(tmp_path / "from_checkpoint")]) == 0
    assert json.loads((tmp_path / "from_checkpoint" / "eval_results.json").read_text())["eval_loss"] > 0
    assert not (partial / "checkpoint-5" / "eval_results.json").exists()  # the run's files are left alone


def test_push_offline_fails_clearly_and_changes_nothing(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", str(out), "someone/ngt-test"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    assert main(["push", str(out), "someone/ngt-test"]) == 2
    assert "token" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


def test_chat_answers_each_prompt(run_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "hf_models.cli", "chat", str(run_dir), "--max-new-tokens", "10"],
        input="ROMEO:\\nJULIET:\n\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "ROMEO:" and any(line.startswith("JULIET:") for line in lines)


def test_visualize_coords_writes_an_offline_plot(run_dir, tmp_path):
    out = tmp_path / "coords.html"
    proc = subprocess.run(
        [sys.executable, "scripts/visualize_coords.py", str(run_dir), "--out", str(out), "--text", "ROMEO:\\nGood night"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = out.read_text()
    assert "scatter3d" in html and "mass" in html and "plotly" in html
    assert "'R' (mass" in html  # hover labels name the tokens


def test_coordinates_projection(run_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_models.ngt.visualize_ngt import ngt_coordinates

    model = AutoModelForCausalLM.from_pretrained(run_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    points, masses, tokens, explained = ngt_coordinates(model, tokenizer, "ROMEO:\nGood night, good night!")
    assert points.shape == (len(tokens), 3) and masses.shape == (len(tokens),)
    assert torch.all(masses > 0) and 0 < explained <= 1.0 + 1e-6
    assert torch.allclose(points.mean(0), torch.zeros(3), atol=1e-4)  # centred
    with pytest.raises(ValueError, match="at least 4"):
        ngt_coordinates(model, tokenizer, "RO")


def test_training_curve_labels_the_loss_and_shows_logged_accuracy(tmp_path):
    from hf_models.hub.export import training_curve

    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.8, "eval_loss": 1.5, "eval_accuracy": 0.5}]
    labels = training_curve(history, tmp_path / "image.png", loss_label="cross-entropy loss")
    assert labels == ["train loss", "validation loss", "validation accuracy"]
    assert training_curve(history[:1], tmp_path / "text.png") == ["train loss"]
    assert (tmp_path / "image.png").read_bytes()[:4] == b"\x89PNG"


def test_every_architecture_has_card_facts_that_parse():
    """model_cards/<name>.yaml of every architecture loads as YAML with the fields the card template reads (a stray
    ': ' in a plain list item turns it into a mapping and breaks every export of that architecture)."""
    import yaml

    from hf_models import ARCHITECTURES
    from hf_models.resources import cards_dir

    for name in ARCHITECTURES:
        facts = yaml.safe_load((cards_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
        assert {"name", "model_type", "summary"} <= set(facts), name  # what the export reads without a default
        for field in ("tags", "deviations_from_reference", "limitations"):
            assert all(isinstance(item, str) for item in facts[field]), (name, field)
