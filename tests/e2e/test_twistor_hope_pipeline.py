"""Twistor-HOPE end to end: `hf-models train` (nested training path) on tinyshakespeare, export with its card, and
the export loaded through remote code in a process without hf_models: same logits and generations as the package's
own model, and `pipeline("text-generation")` through the task."""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from hf_models.cli import main
from hf_models.hub import audit_folder, run_isolated
from hf_models.tasks import task_of_folder


pytestmark = pytest.mark.slow


def test_train_export_and_reload_without_hf_models(tmp_path, shared_data):
    run, out = tmp_path / "run", tmp_path / "export"
    assert main(["train", "configs/train/twistor_hope_tinyshakespeare_tiny.yaml", "--output_dir", str(run),
                 "--max_steps", "12"]) == 0  # fmt: skip
    results = json.loads((run / "eval_results.json").read_text())
    assert results["global_step"] == 12 and results["eval_loss"] < 4.2  # below uniform over 66 characters (4.19)
    state = json.loads((run / "trainer_state.json").read_text())
    assert not any("skipped_nonfinite_batches" in entry for entry in state["log_history"])
    assert main(["export", str(run), str(out)]) == 0
    assert not audit_folder(out, ("AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"))
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-generation" and "twistor-hope" in card.data.tags
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert f"Parameters: {model.num_parameters():,}" in card.text

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    outputs, info = run_isolated(out, "AutoModelForCausalLM", {"input_ids": ids}, max_new_tokens=6)
    assert info["hf_models_modules"] == [] and info["model_module"].startswith("transformers_modules")
    with torch.no_grad():
        torch.testing.assert_close(outputs["logits"], model(ids).logits)
    assert torch.equal(outputs["generated"], model.generate(ids, max_new_tokens=6, do_sample=False))

    task = task_of_folder(out)
    text, info = task.run_pipeline(out, "ROMEO:\n", max_new_tokens=30, seed=0)
    assert info["model_module"].startswith("transformers_modules") and text.startswith("ROMEO:\n")
    assert len("ROMEO:\n") < len(text) <= len("ROMEO:\n") + 30  # characters: one token each
