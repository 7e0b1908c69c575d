"""Titans-TS end to end: `hf-models train` of the forecasting task on ETTh1 (inherited YAML), `hf-models evaluate`
equal to the run's own test evaluation and in the online modes, export with its card (test MSE/MAE in the
model-index, the forecast plot), and the export's shipped `time-series-forecasting` pipeline in a process without
hf_models forecasting a user's series as the package's model does."""

import json

import pytest
import torch
from card_snippets import card_snippets
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModelForTimeSeriesPrediction

from hf_models.cli import main
from hf_models.hub import audit_folder
from hf_models.tasks import task_of_folder
from hf_models.training.run import evaluate_folder


pytestmark = pytest.mark.slow


def test_train_evaluate_export_and_forecast_without_hf_models(tmp_path, shared_data):
    run, out = tmp_path / "run", tmp_path / "export"
    assert main(["train", "configs/train/titans_ts_etth1_tiny.yaml", "--output_dir", str(run), "--series",
                 str(shared_data / "ETTh1.csv"), "--precision", "no"]) == 0  # fmt: skip
    results = json.loads((run / "eval_results.json").read_text())
    assert results["global_step"] == 12 and results["series"] == "ETTh1" and results["test_windows"] == 2873
    assert 0 < results["test_mse"] < 3 and results["test_rmse"] == pytest.approx(results["test_mse"] ** 0.5)
    again = evaluate_folder(run, write=False)
    assert again["eval_mse"] == pytest.approx(results["test_mse"], rel=1e-5)
    assert again["eval_windows"] == results["test_windows"]
    target = tmp_path / "online.json"
    assert main(["evaluate", str(run), "--mode", "online_full", "--sparse-step", "5", "--max-eval-windows", "30",
                 "--online-lr", "0.001", "--output", str(target)]) == 0  # fmt: skip
    online = json.loads(target.read_text())
    # horizon 8: windows 0..21 have their labels before the last forecast, every 5th of them steps
    assert online["eval_mode"] == "online_full" and online["eval_online_updates"] == 5
    assert online["eval_windows"] == 30

    assert main(["export", str(run), str(out), "--repo-id", "hf-models/titans-ts-test"]) == 0
    assert not audit_folder(out, ("AutoModel", "AutoModelForTimeSeriesPrediction"))
    assert (out / "processing_titans_ts.py").exists() and (out / "forecast.png").stat().st_size > 1000
    card = ModelCard.load(out / "README.md")
    card_snippets(out)
    assert card.data.pipeline_tag == "time-series-forecasting"
    metrics = {m["type"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert {"mse", "mae"} <= metrics
    assert "![forecast](forecast.png)" in card.text and 'repo_id = "hf-models/titans-ts-test"' in card.text
    # the inherited recipe averages the weights: the model evaluated and exported is the average (evaluate == the
    # run's own test evaluation above), and the card says so
    assert "exponential moving average (decay 0.99)" in card.text

    model = AutoModelForTimeSeriesPrediction.from_pretrained(out).eval()
    processor = AutoFeatureExtractor.from_pretrained(out)
    generator = torch.Generator().manual_seed(0)
    series = [torch.randn(40, 7, generator=generator) * 4 + 20, torch.randn(32, 7, generator=generator)]
    forecasts, info = task_of_folder(out).run_pipeline(out, series)
    assert info["task"] == "time-series-forecasting" and info["pipeline"] == "TimeSeriesForecastingPipeline"
    assert info["model_module"].startswith("transformers_modules")
    assert info["pipeline_module"].startswith("transformers_modules")
    with torch.no_grad():
        expected = [processor.post_process(model(**processor(s)).prediction_outputs)[0] for s in series]
    for got, want in zip(forecasts, expected, strict=True):
        assert list(got) == processor.channel_names
        for name in want:
            assert got[name] == pytest.approx(want[name], abs=1e-4)
