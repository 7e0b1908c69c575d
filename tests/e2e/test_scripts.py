"""The README's main command (scripts/quickstart.py) and the baseline benchmark, on short budgets."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard


ROOT = Path(__file__).resolve().parents[2]


def _script(name, *args, timeout=900):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_quickstart_trains_exports_and_samples_without_hf_models(tmp_path, shared_data):
    out = tmp_path / "quick"
    stdout = _script("quickstart.py", "--max-steps", "8", "--out", str(out), "--sample-tokens", "40")
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in stdout
    assert "transformers_modules" in stdout  # the sample came from the remote-code copy of the model
    sample = stdout.split("-" * 60)[1].strip("\n")
    assert sample.startswith("ROMEO:\n") and len(sample) == len("ROMEO:\n") + 40  # one character per token
    card = ModelCard.load(out / "model" / "README.md")
    results = json.loads((out / "model" / "eval_results.json").read_text())
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["loss"] == round(results["eval_loss"], 4)
    assert results["global_step"] == 8
    # a used output folder is refused, nothing is overwritten
    weights = (out / "model" / "model.safetensors").read_bytes()
    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "quickstart.py"), "--out", str(out)],
                             cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "--fresh" in refused.stderr
    assert (out / "model" / "model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_baseline_benchmark_smoke(tmp_path, shared_data):
    out = tmp_path / "bench"
    _script("bench_ngt_baseline.py", "--steps", "16", "--out", str(out))
    report = json.loads(out.with_suffix(".json").read_text())
    same = report["same_steps"]
    assert same["ngt"]["model_type"] == "hfm_ngt" and same["llama"]["model_type"] == "llama"
    assert same["ngt"]["steps"] == same["llama"]["steps"] == 16
    assert report["same_wall_clock"]["ngt"]["steps"] == report["summary"]["ngt"]["steps_in_budget"]
    assert 0.5 < same["ngt"]["parameters"] / same["llama"]["parameters"] < 2  # matched sizes
    assert "| llama, 16 steps |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_twistor_hope_benchmark_smoke(tmp_path, shared_data):
    out = tmp_path / "twistor"
    _script("bench_twistor_hope.py", "--sections", "train", "ceiling", "decode", "quality", "--variants", "no_mobius",
            "--steps", "8", "--length", "8", "--rounds", "1", "--reference-rounds", "1", "--positions", "4", "16",
            "--decode-tokens", "2", "--out", str(out))  # fmt: skip
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["host"]["processor"] and report["setup"]["length"] == 8
    for path in ("reference", "fused", "lstm"):
        assert report["train"][path]["median_s"] > 0
    assert report["train"]["ratios"]["fused_over_reference_speedup"] > 0
    assert set(report["decode"]) == {"4", "16", "last_over_first"}
    ceiling = report["ceiling"]
    assert 0 < ceiling["gflop_in_per_step_products"] < ceiling["gflop_per_step"]
    for dtype in ("float32", "bfloat16"):
        assert 0 < ceiling[dtype]["per_step_products_s"] < ceiling[dtype]["matmul_floor_s"]
        assert ceiling[dtype]["max_speedup_over_reference"] > 0
    assert "## Matmul floor of the fused training step" in out.with_suffix(".md").read_text()
    quality = report["quality"]
    assert quality["llama"]["steps"] == quality["twistor_hope_no_mobius"]["steps"] == 8
    assert quality["twistor_hope_no_mobius"]["model_type"] == "hfm_twistor_hope"
    assert "| twistor_hope_no_mobius |" in out.with_suffix(".md").read_text()


def test_twistor_hope_ceiling_counts_the_flops_torch_counts():
    """The benchmark's shape recorder sees every matrix product: its FLOPs equal torch's own counter's."""
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_twistor_hope as bench

    model = bench.twistor("fused").train()
    ids = torch.randint(0, bench.VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
    with bench._MatmulShapes() as recorder:
        model(ids, labels=ids).loss.backward()
    with FlopCounterMode(display=False) as counter:
        model(ids, labels=ids).loss.backward()
    ours = sum(2 * b * m * k * n * count for (b, m, k, n), count in recorder.counts.items())
    assert ours == counter.get_total_flops() > 0
    assert any(m == 2 for _, m, _, _ in recorder.counts)  # the per-step products have the batch as rows


@pytest.mark.slow
def test_titans_ts_benchmark_smoke(tmp_path, shared_data):
    out = tmp_path / "titans"
    train_args = ["--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--context_length", "32",
                  "--train_stride", "40", "--max_validation_windows", "32"]  # fmt: skip
    _script("bench_titans_ts.py", "--horizons", "8", "12", "--seeds", "0", "1", "--jobs", "2", "--mode-windows", "20",
            "--rounds", "1", "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--train-args",
            *train_args)  # fmt: skip
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["host"]["processor"] and report["jobs"] == 2
    quality = report["quality"]
    for name in ("titans_ts", "patchtst"):
        for horizon in (8, 12):
            for seed in (0, 1):
                run = quality[f"ETTh1/{horizon}/{name}/seed{seed}"]
                assert run["steps"] == 2 and 0 < run["test_mse"] < 5 and run["parameters"] > 0
        # the seeds train different models (not one run scored twice)
        assert quality[f"ETTh1/8/{name}/seed0"]["test_mse"] != quality[f"ETTh1/8/{name}/seed1"]["test_mse"]
        summary = quality["summary"][f"ETTh1/{name}"]
        scores = {(h, s): quality[f"ETTh1/{h}/{name}/seed{s}"]["test_mse"] for h in (8, 12) for s in (0, 1)}
        assert summary["seeds"] == [0, 1] and summary["horizons"] == [8, 12]
        assert abs(summary["mean_test_mse"] - sum(scores.values()) / 4) < 1e-4
        for seed, mean in zip((0, 1), summary["mean_test_mse_per_seed"], strict=True):
            assert abs(mean - (scores[8, seed] + scores[12, seed]) / 2) < 1e-4
        assert abs(summary["test_mse_per_horizon"]["12"] - (scores[12, 0] + scores[12, 1]) / 2) < 1e-4
    assert set(quality["summary"]) == {"ETTh1/titans_ts", "ETTh1/patchtst"}
    modes = report["modes"]
    # the windows whose horizon has passed within the 20 (0..11 at horizon 8) have their labels in time
    for name, updates in (("ETTh1/8", 12), ("ETTh1/12", 8), ("synthetic_drift", 12)):
        for mode in ("independent", "online_memory", "online_full", "online_full_sparse10"):
            assert modes[f"{name}/{mode}"]["windows"] == 20, (name, mode)
        assert modes[f"{name}/online_full"]["online_updates"] == updates
    summary = modes["summary"]["ETTh1/online_memory"]
    scores = [modes[f"ETTh1/{h}/online_memory"]["mse"] for h in (8, 12)]
    assert summary["horizons"] == [8, 12] and abs(summary["mean_mse"] - sum(scores) / 2) < 1e-4
    assert modes["synthetic_drift/training"]["steps"] == 2
    speed = report["speed"]
    for key in ("hf_models_chunked", "hf_models_chunked_one_batch", "hf_models_reference"):
        assert speed[key]["forward_ms"] > 0 and speed[key]["forward_backward_ms"] > 0
    assert "## Evaluation modes" in out.with_suffix(".md").read_text()
    where = ["--horizons", "8", "12", "--jobs", "2", "--runs-dir", str(tmp_path / "runs")]
    # a recorded run trained with another setup than the run files and model configs give now (as after editing them)
    # is not kept: --resume names it and trains nothing
    runs = tmp_path / "runs"
    for folder, edit in ((runs / "titans_ts_ETTh1_12_seed1", ("config.json", "head_dropout", 0.5)),
                         (runs / "patchtst_ETTh1_8", ("train_config.yaml", "learning_rate", 0.5)),
                         (runs / "titans_ts_drift", ("config.json", "memory_max_lr", 0.5))):  # fmt: skip
        path = folder / edit[0]
        saved = path.read_text()
        if edit[0] == "train_config.yaml":
            setup = yaml.safe_load(saved)
            setup["training"][edit[1]] = edit[2]
            path.write_text(yaml.safe_dump(setup, sort_keys=False))
        else:
            path.write_text(json.dumps({**json.loads(saved), edit[1]: edit[2]}))
        refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_titans_ts.py"), "--sections", "quality",
                                  "modes", "--seeds", "0", "1", *where, "--out", str(out), "--mode-windows", "20",
                                  "--resume", "--train-args", *train_args], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 2 and "cannot keep" in refused.stderr, refused.stderr[-2000:]
        assert str(folder) in refused.stderr and json.loads(out.with_suffix(".json").read_text()) == report
        path.write_text(saved)
    # --resume: a third seed keeps the two seeds' runs and the drift model (same results, not trained again) and
    # trains only the new ones
    _script("bench_titans_ts.py", "--sections", "quality", "modes", "--seeds", "0", "1", "2", *where, "--out", str(out),
            "--mode-windows", "20", "--resume", "--train-args", *train_args)  # fmt: skip
    resumed = json.loads(out.with_suffix(".json").read_text())
    assert resumed["resumed_from"] == report["command"]
    for key, run in resumed["quality"].items():
        if key.endswith("seed2"):
            assert "kept" not in run and run["steps"] == 2, key
        elif key != "summary":
            assert run == {**quality[key], "kept": True}, key
    assert len(resumed["quality"]) == 13 and resumed["quality"]["summary"]["ETTh1/patchtst"]["seeds"] == [0, 1, 2]
    assert "(kept)" in out.with_suffix(".md").read_text()
    assert resumed["modes"]["synthetic_drift/training"] == {**modes["synthetic_drift/training"], "kept": True}
    assert resumed["modes"]["ETTh1/8/online_full"]["mse"] == modes["ETTh1/8/online_full"]["mse"]
    # what it cannot go on from is refused by name before anything trains
    for args, message in ((["--out", str(out), "--train-args", "--max_steps", "3"], "--train-args"),
                          (["--out", str(tmp_path / "none")], "does not exist"),
                          (["--out", str(out), "--runs-dir", ""], "--resume needs --runs-dir"),
                          (["--out", str(tmp_path / "runs" / "titans_ts_ETTh1_8" / "config")], "not a report")):  # fmt: skip
        refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_titans_ts.py"), "--seeds", "0", *where,
                                  "--resume", *args], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-2000:]
    # nor does it train into folders that hold runs (here the first seed's folder, which seed 0 already took)
    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_titans_ts.py"), "--sections", "quality",
                              "--seeds", "3", "4", *where, "--out", str(tmp_path / "other")], cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "already holds" in refused.stderr, refused.stderr[-2000:]
    assert not tmp_path.joinpath("other.json").exists()


def test_titans_ts_benchmark_horizon_run_files(tmp_path):
    """A horizon with a run file of its own trains that horizon with the model's default run file's data and training
    settings (the same protocol and budget); only the model's settings differ."""
    from hf_models.training.arguments import parse_train_args

    spec = importlib.util.spec_from_file_location("bench_titans_ts", ROOT / "scripts" / "bench_titans_ts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.HORIZON_RUN_FILES and bench.run_file("titans_ts", 96) == bench.MODELS["titans_ts"]
    for (name, horizon), path in bench.HORIZON_RUN_FILES.items():
        assert bench.run_file(name, horizon) == path
        assert bench.run_file("patchtst", horizon) == bench.MODELS["patchtst"]
        model, data, training = parse_train_args(ROOT / path, ["--output_dir", str(tmp_path)])
        default = parse_train_args(ROOT / bench.MODELS[name], ["--output_dir", str(tmp_path), "--prediction_length",
                                                               str(horizon)])  # fmt: skip
        assert data.prediction_length == horizon and vars(data) == vars(default[1])
        assert training.to_dict() == default[2].to_dict()
        assert model.model_config == default[0].model_config and model.model_overrides != default[0].model_overrides


@pytest.mark.slow
def test_lowrank_icl_benchmark_smoke(tmp_path):
    out = tmp_path / "lowrank"
    _script("bench_lowrank_icl.py", "--speed-tables", "3", "--speed-batches", "2", "--rounds", "1",
            "--quality-tables", "5", "--transfer-tables", "4", "--steps", "3", "--out", str(out))  # fmt: skip
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["host"]["processor"] and report["speed"]["V=3"]["length"] == 15
    assert report["speed"]["V=3"]["masked_over_sparse_speedup"] > 0
    quality = report["quality"]
    assert quality["low_rank_v5"]["steps"] == quality["dense_v5"]["steps"] == 3
    assert quality["low_rank_v5"]["position_parameters"] * 23 == quality["dense_v5"]["position_parameters"] * 7
    assert set(quality["low_rank_v5"]["transfer"]) == {"V=4"} and "transfer" not in quality["dense_v5"]
    assert "| low_rank | 5 |" in out.with_suffix(".md").read_text()
