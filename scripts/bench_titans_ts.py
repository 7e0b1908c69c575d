"""Titans-TS: forecasting quality against transformers' PatchTST on the ETT data, the evaluation modes, and the neural
memory's speed.

Sections:

- `quality`: for each series (`--series`, default ETTh1) and horizon (`--horizons`, default 96 192 336 720), Titans-TS
  (configs/train/titans_ts_etth1.yaml; at 336 and 720 steps titans_ts_etth1_336.yaml / _720.yaml, whose dropout was
  chosen for that horizon) and the baseline `PatchTSTForPrediction` (configs/train/patchtst_etth1.yaml: the PatchTST
  paper's ETTh1 settings) are trained by the same forecasting task (`hf-models train`: the long-term protocol, the same
  windows, epochs, batch, learning rate and schedule) in this run, and scored on the test windows (MSE / MAE,
  standardised scale). ETTm1 trains on every `--minute-stride`-th window (4: as many training windows as the hourly
  files); its test windows are all of them. `--seeds 0 1 2` trains every run once per seed (the summary gives the mean
  over horizons and seeds, each seed's mean and each horizon's): at 720 steps three seeds' test MSEs span up to 0.03 on
  ETTh1, more than the models differ. `--jobs 2` trains two at a time, each in its own process with half the cores.
- `modes`: the evaluation modes (independent, online memory, online full model, the last also with labels on every
  `--sparse-step`-th window only) of the Titans-TS models trained for the first series at each horizon (the first
  seed's, from the quality section, or trained here), with each mode's mean over the horizons, and of one trained on
  the seeded concept-drift series (configs/train/titans_ts_drift.yaml) at the first horizon.
- `speed`: the neural memory alone (dim 64, one head of 64, depth 2, chunk 16, batch 2 x 256 tokens): forward and
  forward + backward of the chunked op (memory batches of one chunk, the default, and of the whole sequence, which is
  titans-pytorch's default), of the token-by-token reference, and of titans-pytorch's `NeuralMemory` at the same
  configuration when it is installed (the `dev` extra pins titans-pytorch==0.5.5).

The results name the machine and go to benchmarks/titans_ts_<host kind>.json and .md (`--out` to change); the JSON
is rewritten after every finished run, so an interrupted benchmark keeps what it measured. `--resume` goes on from
it: the trainings that JSON already holds (quality runs and the modes section's drift model; the same run, settings
and kind of machine, its folder still in `--runs-dir`) are kept, the others trained; so an interrupted benchmark
finishes, or one gets more seeds, without training again what it has. A recorded run whose folder was trained with
another setup than the run files and model configs give now (edited since: its train_config.yaml or config.json
differs) is not kept, and is refused by name rather than trained over.

    python scripts/bench_titans_ts.py                                              # all sections on ETTh1, seed 0
    python scripts/bench_titans_ts.py --sections quality modes --seeds 0 1 2 --jobs 2     # 47 minutes on 2 cores
    python scripts/bench_titans_ts.py --sections quality --series ETTh2 ETTm1 --runs-dir runs/titans_bench
    python scripts/bench_titans_ts.py --sections speed --rounds 3 --out /tmp/smoke
    python scripts/bench_titans_ts.py --sections quality modes --seeds 0 1 2 3 4 --jobs 2 --runs-dir runs/b --resume
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hf_models.training import describe_host, host_info  # noqa: E402


# as the run configs name the series: relative to the checkout (resolve_path), so results files hold no local path
DATA = "../shared/data"
MODELS = {
    "titans_ts": "configs/train/titans_ts_etth1.yaml",
    "patchtst": "configs/train/patchtst_etth1.yaml",
}
# the horizons that train a run file of their own (settings chosen for that horizon on the validation split); the
# others train MODELS' file with `--prediction_length`
HORIZON_RUN_FILES = {
    ("titans_ts", 336): "configs/train/titans_ts_etth1_336.yaml",
    ("titans_ts", 720): "configs/train/titans_ts_etth1_720.yaml",
}


def run_file(name, horizon):
    """The run file model `name` trains at `horizon` steps: its own for that horizon, if any, else MODELS'."""
    return HORIZON_RUN_FILES.get((name, horizon), MODELS[name])


def run_arguments(config, folder, overrides, extra=()):
    """The parsed arguments (model, data, training) of one run: `config` with the overrides and extra options."""
    from hf_models.training.arguments import parse_train_args

    arguments = ["--output_dir", str(folder), "--disable_tqdm", "true", "--report_to", "none", *extra]
    for key, value in overrides.items():
        arguments += [f"--{key}", str(value)]
    return parse_train_args(ROOT / config, arguments)


def train_run(config, folder, overrides, extra=()):
    """Train one run through the forecasting task; returns its recorded results, seconds and parameter count."""
    from hf_models.training.run import train

    model_args, data_args, training_args = run_arguments(config, folder, overrides, extra)
    start = time.perf_counter()
    results = train(model_args, data_args, training_args)
    seconds = time.perf_counter() - start
    from transformers import AutoConfig

    from hf_models.tasks.forecasting import forecaster_class

    model = forecaster_class(AutoConfig.from_pretrained(folder)).from_pretrained(folder)
    return {
        "config": config,
        "overrides": overrides,
        "parameters": model.num_parameters(),
        "steps": results["global_step"],
        "train_seconds": round(seconds, 1),
        "val_mse": round(results["eval_mse"], 4),
        "test_mse": round(results["test_mse"], 4),
        "test_mae": round(results["test_mae"], 4),
        "precision": results["precision"],
    }


def job_threads(jobs):
    """Torch threads of each of `jobs` trainings run at a time: an equal share of the cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_folder(runs, name, series, horizon, seed=None):
    """Where a quality run trains; the first seed's (seed=None) is the one the modes section evaluates."""
    return runs / (f"{name}_{series}_{horizon}" + ("" if seed is None else f"_seed{seed}"))


def _train_job(config, folder, overrides, extra, threads):
    """One training in a worker process of `--jobs` (its own torch thread count)."""
    torch.set_num_threads(threads)
    return train_run(config, folder, overrides, extra)


def quality_plan(args, runs, previous=None):
    """The quality runs, each series x horizon x model x seed: (key -> the training's arguments, for those to train;
    key -> (series, horizon, name, seed), for all; key -> result, for those kept). `previous` (key -> result, from
    `--resume`): a run is kept rather than trained where the same key was trained with the same config and overrides
    into the same folder, which still holds that result."""
    several = len(args.seeds) > 1
    runs_to_do, where = {}, {}  # key -> the training's arguments; key -> (series, horizon, name, seed)
    for series in args.series:
        stride = args.minute_stride if series.startswith("ETTm") else 1
        for horizon in args.horizons:
            for name in MODELS:
                config = run_file(name, horizon)
                for seed in args.seeds:
                    key = f"{series}/{horizon}/{name}" + (f"/seed{seed}" if several else "")
                    folder = run_folder(runs, name, series, horizon, None if seed == args.seeds[0] else seed)
                    overrides = {"series": f"{DATA}/{series}.csv", "prediction_length": horizon,
                                 "train_stride": stride}  # fmt: skip
                    runs_to_do[key] = (config, folder, overrides, ["--seed", str(seed), *args.train_args])
                    where[key] = (series, horizon, name, seed)
    kept = {key: result for key, job in runs_to_do.items() if (result := _kept(previous, key, job))}
    return {key: job for key, job in runs_to_do.items() if key not in kept}, where, kept


def quality_section(args, save, plan):
    """The runs of `plan` (`quality_plan`): `--jobs` trainings at a time (each in its own process with its share of
    the cores), the results in a fixed order whatever finishes first."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    runs_to_do, where, done = plan
    for key in done:
        print(f"quality: {key} kept", flush=True)

    def record(key, result):
        done[key] = result
        save({k: done[k] for k in where if k in done})

    if args.jobs == 1:
        for key, job in runs_to_do.items():
            print(f"quality: {key}", flush=True)
            record(key, train_run(*job))
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_train_job, *job, job_threads(args.jobs)): key for key, job in runs_to_do.items()}
            for future in as_completed(futures):
                print(f"quality: {futures[future]} done", flush=True)
                record(futures[future], future.result())
    results = {k: done[k] for k in where}

    def mean(metric, series, name, horizon=None, seed=None):
        """`metric` averaged over the runs of one series and model (of one horizon, of one seed when given)."""
        scores = [results[k][metric] for k, (s, h, n, sd) in where.items()
                  if (s, n) == (series, name) and horizon in (None, h) and seed in (None, sd)]  # fmt: skip
        return round(statistics.mean(scores), 4)

    summary = {}
    for series in args.series:
        for name in MODELS:
            entry = {"mean_test_mse": mean("test_mse", series, name), "mean_test_mae": mean("test_mae", series, name),
                     "horizons": list(args.horizons), "seeds": list(args.seeds)}  # fmt: skip
            if len(args.seeds) > 1:  # the spread: each seed's mean over the horizons, each horizon's over the seeds
                entry["mean_test_mse_per_seed"] = [mean("test_mse", series, name, seed=seed) for seed in args.seeds]
                entry["test_mse_per_horizon"] = {str(h): mean("test_mse", series, name, h) for h in args.horizons}
            summary[f"{series}/{name}"] = entry
    results["summary"] = summary
    save(results)
    return results


def _kept(previous, key, job):
    """`previous[key]` marked kept where `--resume` keeps it, else None: it was recorded for the same config and
    overrides, and the run folder of `job` (the training's arguments) still holds the run that recorded it (its
    eval_results.json has the same test MSE) trained as `job` would train now (`same_setup`)."""
    config, folder, overrides, _ = job
    result = (previous or {}).get(key)
    if not result or (result.get("config"), result.get("overrides")) != (config, overrides):
        return None
    recorded = folder / "eval_results.json"
    if not recorded.exists() or round(json.loads(recorded.read_text())["test_mse"], 4) != result["test_mse"]:
        return None
    return {**result, "kept": True} if same_setup(*job) else None


# what a run folder holds that the arguments do not give: the forecasting task sets the training arguments' label names
# and column handling, and config.json's channels and lengths (from the series and the data settings, which are in
# train_config.yaml); saving adds the rest of these config.json fields
_TASK_ARGUMENTS = {"label_names", "remove_unused_columns"}
_RUN_FIELDS = {"num_input_channels", "context_length", "prediction_length", "custom_pipelines", "auto_map", "dtype",
               "_name_or_path", "transformers_version"}  # fmt: skip


def same_setup(config, folder, overrides, extra=()):
    """Whether the run in `folder` was trained as these arguments would train it now: its train_config.yaml is the
    configuration they resolve to (the run file, what it inherits, the options) and its config.json the model the
    model config file and overrides give. A run file or model config edited since the run trained is not the same."""
    import yaml
    from transformers import AutoConfig

    from hf_models.training.arguments import load_yaml, resolved_config
    from hf_models.training.run import load_model_config

    if not (folder / "train_config.yaml").exists():
        return False
    model_args, data_args, training_args = run_arguments(config, folder, overrides, extra)
    resolved, recorded = resolved_config(model_args, data_args, training_args), load_yaml(folder / "train_config.yaml")
    for setup in (resolved, recorded):
        for name in _TASK_ARGUMENTS:
            setup.get("training", {}).pop(name, None)
    if yaml.safe_load(yaml.safe_dump(resolved, sort_keys=False)) != recorded:
        return False
    wanted, trained = load_model_config(model_args).to_dict(), AutoConfig.from_pretrained(folder).to_dict()
    return all(wanted.get(k) == trained.get(k) for k in wanted.keys() | trained.keys() if k not in _RUN_FIELDS)


def previous_runs(path, host, train_args):
    """The trainings of the report at `path` (`--resume`): its quality runs and the modes section's, key -> result. It
    must have run on this kind of machine with the same threads per training and the same `--train-args`; a
    ValueError names what differs."""
    if not path.exists():
        raise ValueError(f"--resume: {path} does not exist; there is no earlier report to go on from")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--resume: {path} is not JSON ({error})") from None
    if not isinstance(report, dict) or not {"host", "command"} <= report.keys():
        raise ValueError(f"--resume: {path} is not a report of this benchmark (no host and command)")
    for field in ("kind", "threads"):
        if report["host"].get(field) != host.get(field):
            raise ValueError(f"--resume: {path} ran with host {field}={report['host'].get(field)!r}, this run has "
                             f"{host.get(field)!r}; its runs are not this benchmark's")  # fmt: skip
    command = shlex.split(report["command"])
    earlier = command[command.index("--train-args") + 1 :] if "--train-args" in command else []
    if earlier != list(train_args):
        raise ValueError(f"--resume: {path} trained with --train-args {earlier}, this run with {list(train_args)}")
    runs = {key: value for key, value in report.get("quality", {}).items() if key != "summary"}
    runs.update((key, value) for key, value in report.get("modes", {}).items() if key.endswith("/training"))
    return runs, report["command"]


def mode_targets(args, runs):
    """The models of the modes section: (name, run folder, config, overrides) for the first series at each horizon,
    then the drift series'."""
    series = args.series[0]
    targets = [(f"{series}/{horizon}", run_folder(runs, "titans_ts", series, horizon), run_file("titans_ts", horizon),
                {"series": f"{DATA}/{series}.csv", "prediction_length": horizon})
               for horizon in args.horizons]  # fmt: skip
    targets.append(("synthetic_drift", runs / "titans_ts_drift", "configs/train/titans_ts_drift.yaml",
                    {"prediction_length": args.horizons[0]}))  # fmt: skip
    return targets


def modes_section(args, runs, save, previous=None):
    """Modes A, B, C and C with sparse labels for the first series at each horizon and for the drift series; a model
    the quality section did not train is trained here, or kept from `previous` (`--resume`) as the quality runs are."""
    from hf_models import TitansTsForPrediction
    from hf_models.tasks.forecasting import evaluate_forecaster, series_splits
    from hf_models.training.arguments import load_yaml

    results = {}
    series = args.series[0]
    for name, folder, config, overrides in mode_targets(args, runs):
        key = f"{name}/training"
        if kept := _kept(previous, key, (config, folder, overrides, args.train_args)):
            results[key] = kept
        elif not (folder / "config.json").exists():
            print(f"modes: training {name}", flush=True)
            results[key] = train_run(config, folder, overrides, args.train_args)
        splits = series_splits(load_yaml(folder / "train_config.yaml")["data"])  # the run's own series
        for mode, sparse in (("independent", 1), ("online_memory", 1), ("online_full", 1),
                             ("online_full", args.sparse_step)):  # fmt: skip
            model = TitansTsForPrediction.from_pretrained(folder)
            label = mode if sparse == 1 else f"{mode}_sparse{sparse}"
            print(f"modes: {name} {label}", flush=True)
            start = time.perf_counter()
            scores = evaluate_forecaster(model, splits, "test", mode, 128, args.online_lr, sparse, args.mode_windows)
            scores["seconds"] = round(time.perf_counter() - start, 1)
            results[f"{name}/{label}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
            results[f"{name}/{label}"]["prediction_length"] = model.config.prediction_length
            save(results)
    if len(args.horizons) > 1:  # each mode's mean over the horizons of the series
        summary = {}
        for label in ("independent", "online_memory", "online_full", f"online_full_sparse{args.sparse_step}"):
            scores = [results[f"{series}/{h}/{label}"] for h in args.horizons]
            summary[f"{series}/{label}"] = {"mean_mse": round(statistics.mean(s["mse"] for s in scores), 4),
                                            "mean_mae": round(statistics.mean(s["mae"] for s in scores), 4),
                                            "horizons": list(args.horizons)}  # fmt: skip
        results["summary"] = summary
        save(results)
    return results


def _time(function, rounds):
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def speed_section(args):
    """The memory op alone at titans-pytorch's test configuration: dim 64, heads 1 x 64, depth 2 (expansion 4),
    chunk 16, batch 2 x 256 tokens."""
    from hf_models import TitansTsConfig
    from hf_models.titans_ts import TitansTsNeuralMemory

    torch.manual_seed(0)
    x = torch.randn(2, 256, 64)
    results = {"setup": "dim 64, 1 head of 64, memory MLP depth 2 (expansion 4), chunk 16, batch 2 x 256 tokens"}
    # chunked: each chunk's surprise at the weights the previous chunk left (the default); chunked_one_batch: every
    # chunk's at the call's start weights, as titans-pytorch's default (memory_batch_size = the whole sequence)
    for name, implementation, batch in (("chunked", "chunked", None), ("chunked_one_batch", "chunked", 256),
                                        ("reference", "reference", None)):  # fmt: skip
        config = TitansTsConfig(hidden_size=64, num_attention_heads=4, memory_num_heads=1, memory_head_dim=64,
                                memory_depth=2, memory_expansion_factor=4, memory_chunk_size=16,
                                memory_batch_size=batch, memory_implementation=implementation)  # fmt: skip
        memory = TitansTsNeuralMemory(config)
        state = memory.initial_state(2, torch.float32, "cpu")

        def forward(memory=memory, state=state):
            with torch.no_grad():
                memory(x, state)

        def train_step(memory=memory, state=state):
            memory.zero_grad(set_to_none=True)
            memory(x, state)[0].square().mean().backward()

        rounds = args.rounds if implementation == "chunked" else max(1, args.rounds // 3)
        results[f"hf_models_{name}"] = {"forward_ms": _time(forward, rounds),
                                        "forward_backward_ms": _time(train_step, rounds),
                                        "parameters": sum(p.numel() for p in memory.parameters())}  # fmt: skip
        print(f"speed: {name} {results[f'hf_models_{name}']}", flush=True)
    try:
        from titans_pytorch import NeuralMemory
    except ImportError:
        results["titans_pytorch"] = "not installed (pip install titans-pytorch==0.5.5)"
    else:
        import titans_pytorch

        reference = NeuralMemory(dim=64, chunk_size=16, dim_head=64, heads=1)

        def forward():
            with torch.no_grad():
                reference(x)

        def train_step():
            reference.zero_grad(set_to_none=True)
            reference(x)[0].square().mean().backward()

        results["titans_pytorch"] = {"version": getattr(titans_pytorch, "__version__", "?"),
                                     "forward_ms": _time(forward, args.rounds),
                                     "forward_backward_ms": _time(train_step, args.rounds),
                                     "parameters": sum(p.numel() for p in reference.parameters())}  # fmt: skip
        for key in ("forward_ms", "forward_backward_ms"):
            for ours in ("chunked", "chunked_one_batch"):
                results[f"{key}_titans_pytorch_over_{ours}"] = round(
                    results["titans_pytorch"][key] / results[f"hf_models_{ours}"][key], 2
                )
    return results


def render_markdown(report):
    host = report["host"]
    lines = ["# Titans-TS: forecasting against PatchTST, evaluation modes, memory speed", "",
             f"{describe_host(host)} Command: `{report['command']}`.", ""]  # fmt: skip
    if report.get("resumed_from"):
        lines[-1:-1] = ["", f"Resumed: the runs marked (kept) were trained by `{report['resumed_from']}` (or before "
                        "it, if that run resumed too) and kept; the others were trained by this command."]  # fmt: skip
    quality = report.get("quality")
    if quality:
        lines += ["## Test MSE / MAE (standardised), same task, protocol and budget", "",
                  "| series | horizon | model | seed | parameters | steps | train s | val MSE | test MSE | test MAE |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, value in quality.items():
            if key != "summary":
                series, horizon, name, *seed = key.split("/")
                seed = seed[0].removeprefix("seed") if seed else "0"
                seconds = f"{value['train_seconds']}" + (" (kept)" if value.get("kept") else "")
                lines.append(f"| {series} | {horizon} | {name} | {seed} | {value['parameters']:,} | "
                             f"{value['steps']} | {seconds} | {value['val_mse']} | "
                             f"{value['test_mse']} | {value['test_mae']} |")  # fmt: skip
        if quality.get("summary"):
            lines += ["", "| series / model | mean test MSE | mean test MAE | horizons | seeds | each seed's mean MSE "
                      "| each horizon's mean MSE |", "|---|---|---|---|---|---|---|"]  # fmt: skip
            for key, value in quality["summary"].items():
                per_seed = ", ".join(map(str, value.get("mean_test_mse_per_seed", []))) or "-"
                per_horizon = value.get("test_mse_per_horizon", {})
                per_horizon = ", ".join(f"{h}: {v}" for h, v in per_horizon.items()) or "-"
                lines.append(f"| {key} | {value['mean_test_mse']} | {value['mean_test_mae']} | "
                             f"{', '.join(map(str, value['horizons']))} | "
                             f"{', '.join(map(str, value.get('seeds', [0])))} | {per_seed} | "
                             f"{per_horizon} |")  # fmt: skip
        lines.append("")
    modes = report.get("modes")
    if modes:
        lines += ["## Evaluation modes (test windows in time order)", "",
                  "| series / mode | MSE | MAE | windows | online steps | seconds |", "|---|---|---|---|---|---|"]  # fmt: skip
        for key, value in modes.items():
            if "mse" in value and "mode" in value:
                lines.append(f"| {key} | {value['mse']} | {value['mae']} | {value['windows']} | "
                             f"{value.get('online_updates', '-')} | {value['seconds']} |")  # fmt: skip
        if modes.get("summary"):
            lines += ["", "| series / mode | mean MSE | mean MAE | horizons |", "|---|---|---|---|"]
            for key, value in modes["summary"].items():
                lines.append(f"| {key} | {value['mean_mse']} | {value['mean_mae']} | "
                             f"{', '.join(map(str, value['horizons']))} |")  # fmt: skip
        lines.append("")
    speed = report.get("speed")
    if speed:
        lines += [f"## Neural memory alone ({speed['setup']})", "", "| implementation | forward ms | forward + backward ms "
                  "| parameters |", "|---|---|---|---|"]  # fmt: skip
        for key in ("hf_models_chunked", "hf_models_chunked_one_batch", "hf_models_reference", "titans_pytorch"):
            value = speed.get(key)
            if isinstance(value, dict):
                lines.append(f"| {key} | {value['forward_ms']} | {value['forward_backward_ms']} | "
                             f"{value['parameters']:,} |")  # fmt: skip
            elif value:
                lines.append(f"| {key} | {value} | | |")
        lines.append("")
    if report.get("note"):
        lines += [f"Note: {report['note']}", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["quality", "modes", "speed"],
                        choices=["quality", "modes", "speed"])  # fmt: skip
    parser.add_argument("--series", nargs="+", default=["ETTh1"], choices=["ETTh1", "ETTh2", "ETTm1"])
    parser.add_argument("--horizons", type=int, nargs="+", default=[96, 192, 336, 720])
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="quality: train every run once per seed; the summary averages them and shows the spread",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="quality: trainings at a time, each in its own process with cpu_count / jobs threads",
    )
    parser.add_argument("--minute-stride", type=int, default=4)
    parser.add_argument("--sparse-step", type=int, default=10)
    parser.add_argument("--online-lr", type=float, default=1e-4)
    parser.add_argument("--mode-windows", type=int, default=0, help="modes: the first N test windows (0: all)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs-dir", help="keep the trained runs here (default: a temporary folder)")
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `hf-models train` arguments for every run (last on the line), e.g. --max_steps 8")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="keep the trainings --out's JSON already holds (their folders in --runs-dir), train the "
                        "others")  # fmt: skip
    parser.add_argument("--note", default="")
    parser.add_argument("--out", help="output path without suffix (default: benchmarks/titans_ts_<host kind>)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1; got {args.jobs}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must not repeat a seed; got {args.seeds}")
    if args.resume and not args.runs_dir:
        parser.error("--resume needs --runs-dir: the kept runs' folders (a temporary folder holds none)")
    host = host_info()
    report = {
        "command": "python " + " ".join(["scripts/bench_titans_ts.py", *(sys.argv[1:] if argv is None else argv)]),
        "host": host,
        "note": args.note,
    }
    if args.jobs > 1:
        report["host"]["threads"] = job_threads(args.jobs)  # each training's, in its own process
        report["jobs"] = args.jobs
    out = Path(args.out or ROOT / "benchmarks" / f"titans_ts_{report['host']['kind']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = None
    if args.resume:
        try:
            previous, report["resumed_from"] = previous_runs(out.with_suffix(".json"), report["host"], args.train_args)
        except ValueError as error:
            parser.error(str(error))

    def write():
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(render_markdown(report))

    def saver(section):
        def save(results):
            report[section] = results
            write()

        return save

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs_dir or tmp)
        runs.mkdir(parents=True, exist_ok=True)
        if "modes" in args.sections and previous:  # a recorded drift model is kept, not used as it is now
            _, folder, config, overrides = mode_targets(args, runs)[-1]
            key = "synthetic_drift/training"
            if key in previous and folder.is_dir() and not _kept(previous, key, (config, folder, overrides,
                                                                                args.train_args)):  # fmt: skip
                parser.error(f"--runs-dir: {folder} holds a drift model that --resume cannot keep: its folder holds "
                             "another result, or it was trained with another setup (the run file or model config "
                             "was edited since); move it aside to train it again")  # fmt: skip
        if "quality" in args.sections:
            plan = quality_plan(args, runs, previous)
            taken = [str(folder) for _, folder, *_ in plan[0].values() if folder.is_dir() and any(folder.iterdir())]
            if taken and args.resume:
                parser.error(f"--runs-dir {runs} already holds {len(taken)} of the runs to train (e.g. {taken[0]}), "
                             f"which --resume cannot keep: {out.with_suffix('.json')} does not record them, or their "
                             "folders hold another result, or they were trained with another setup (the run files "
                             "or model configs were edited since); move them aside to train them again")  # fmt: skip
            if taken:
                parser.error(f"--runs-dir {runs} already holds {len(taken)} of the runs to train (e.g. {taken[0]}); "
                             "give an empty --runs-dir, or --resume with the report that recorded them")  # fmt: skip
            report["quality"] = quality_section(args, saver("quality"), plan)
        if "modes" in args.sections:
            report["modes"] = modes_section(args, runs, saver("modes"), previous)
    if "speed" in args.sections:
        report["speed"] = speed_section(args)
    write()


if __name__ == "__main__":
    main()
