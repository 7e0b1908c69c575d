"""LowRank ICL end to end: `hf-models train` of the prompt classification task (inherited YAML), `hf-models evaluate`
equal to the run's own evaluation and at another number of tables, export with its card (balanced metrics in the
model-index, the mask figure), and the export loaded with its processor through remote code in a process without
hf_models, answering a user's tables as the package's model does."""

import json

import pytest
import torch
from card_snippets import card_snippets
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

from hf_models.cli import main
from hf_models.hub import audit_folder, run_isolated
from hf_models.tasks import task_of_folder
from hf_models.training.run import evaluate_folder


pytestmark = pytest.mark.slow


def test_train_evaluate_export_and_answer_without_hf_models(tmp_path):
    run, out = tmp_path / "run", tmp_path / "export"
    assert main(["train", "configs/train/lowrank_icl_table_tiny.yaml", "--output_dir", str(run), "--max_steps", "30",
                 "--precision", "no"]) == 0  # fmt: skip
    results = json.loads((run / "eval_results.json").read_text())
    assert results["global_step"] == 30 and results["eval_num_tables"] == 4 and results["eval_examples"] == 128
    for key in ("eval_accuracy", "eval_balanced_accuracy", "eval_f1", "eval_auroc", "eval_loss"):
        assert 0 <= results[key] <= (1 if key != "eval_loss" else 2), key
    again = evaluate_folder(run, write=False)
    for key in ("eval_accuracy", "eval_balanced_accuracy", "eval_f1", "eval_auroc", "eval_positive_rate"):
        assert again[key] == pytest.approx(results[key], abs=1e-6), key
    assert again["eval_loss"] == pytest.approx(results["eval_loss"], abs=1e-5)
    wider = evaluate_folder(run, write=False, num_tables=7, eval_examples=64)
    assert wider["eval_num_tables"] == 7 and wider["eval_examples"] == 64
    target = tmp_path / "balanced.json"
    assert main(["evaluate", str(run), "--eval-balanced", "true", "--eval-examples", "40", "--edge-probability",
                 "0.3", "--output", str(target)]) == 0  # fmt: skip
    balanced = json.loads(target.read_text())
    assert balanced["eval_positive_rate"] == pytest.approx(0.5, abs=0.2) and balanced["eval_examples"] == 40

    assert main(["export", str(run), str(out), "--repo-id", "hf-models/lowrank-icl-test"]) == 0
    assert not audit_folder(out, ("AutoModel", "AutoModelForSequenceClassification"))
    assert (out / "attention_masks.png").stat().st_size > 1000 and (out / "processing_lowrank_icl.py").exists()
    card = ModelCard.load(out / "README.md")
    card_snippets(out, count=1)
    assert card.data.pipeline_tag == "tabular-classification"
    metrics = {m["type"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert {"accuracy", "balanced_accuracy", "f1", "roc_auc", "loss"} <= metrics
    assert (
        "![attention masks](attention_masks.png)" in card.text and "AutoFeatureExtractor.from_pretrained" in card.text
    )

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    processor = AutoFeatureExtractor.from_pretrained(out)
    prompts = [
        ([["user_id", "name", "email"], ["order_id", "user_id", "total"], ["product_id", "order_id", "price"]],
         ["name", "price"]),
        ([[1, 2, 3], [4, 5, 6], [7, 8, 9], [9, 10, 11], [12, 13, 14]], [1, 11]),
    ]  # fmt: skip
    answers, info = task_of_folder(out).run_pipeline(out, prompts)
    assert info["model_module"].startswith("transformers_modules") and info["processor"] == "LowRankIclProcessor"
    assert info["processor_module"].startswith("transformers_modules")
    with torch.no_grad():
        expected = [processor.post_process(model(**processor(t, q)).logits)[0] for t, q in prompts]
    assert [a["connected"] for a in answers] == [e["connected"] for e in expected]
    assert [a["score"] for a in answers] == pytest.approx([e["score"] for e in expected], abs=1e-6)

    inputs = processor(*prompts[1])
    outputs, info = run_isolated(out, "AutoModelForSequenceClassification", dict(inputs))
    assert info["hf_models_modules"] == []
    with torch.no_grad():
        torch.testing.assert_close(outputs["logits"], model(**inputs).logits)
