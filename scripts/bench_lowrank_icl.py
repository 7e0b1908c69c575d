"""LowRank ICL: the sparse table attention against the dense masked path, and low-rank against dense on table
connectivity.

Sections:

- `speed`: one training step (forward + backward, no optimizer, float32) of the small preset (12 blocks, 128 wide,
  4 heads; configs/models/lowrank_icl/small.json) with the table masks computed sparsely (batched block attention and
  attention over the gathered V+3 rows, the default) and through the dense masked reference (L×L scores), at V=20
  (L = 83) and V=200 (L = 803); the full causal attention of the dense baseline (scaled_dot_product_attention) beside
  them. Reported: seconds per step (median of rounds) and the masked / sparse ratio.
- `quality`: the low-rank model (low-rank positions, table masks) against the dense baseline (dense positional table,
  full causal attention: the original's TransformerModel), and between them low-rank positions with full attention
  (one flag at a time), at V=3 (C=2), V=5 and V=20 (C=3) with the same budget per V
  (configs/train/lowrank_icl_table_bench_v{3,5,20}.yaml: 64 wide, 6 blocks, 3000 steps of 64 balanced prompts, 1000
  at V=20), evaluated on 2000 prompts at the natural class rates: accuracy, balanced accuracy, F1, AUROC, parameters,
  positional parameters, training seconds per step (the run's wall time, evaluations included). Then the low-rank
  model trained at the largest V evaluated at V=10, 30, 40 (the dense table cannot read them).

The results name the machine and go to benchmarks/lowrank_icl_<host kind>.json and .md (`--out` to change).

    python scripts/bench_lowrank_icl.py                          # speed and quality, ~30 minutes on 2 cores
    python scripts/bench_lowrank_icl.py --sections speed --rounds 2 --out /tmp/smoke
    python scripts/bench_lowrank_icl.py --sections quality --runs-dir runs/lowrank_icl_bench   # keep the runs (export)
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_twistor_hope import time_steps  # noqa: E402

from hf_models import LowRankIclConfig, LowRankIclForPromptClassification  # noqa: E402
from hf_models.training import describe_host, host_info  # noqa: E402


PRESET = ROOT / "configs" / "models" / "lowrank_icl" / "small.json"
DENSE = {"position_embedding_type": "dense", "attention_pattern": "full"}
# the two flags one at a time: the low-rank model, the dense baseline, and low-rank positions with full attention
VARIANTS = {"low_rank": {}, "dense": DENSE, "low_rank_positions_full_attention": {"attention_pattern": "full"}}
METRICS = ("eval_accuracy", "eval_balanced_accuracy", "eval_f1", "eval_auroc", "eval_loss", "eval_positive_rate")


def preset(num_tables, **overrides):
    config = LowRankIclConfig.from_pretrained(str(PRESET)).to_dict()
    config.update(num_tables=num_tables, max_position_embeddings=None, **overrides)
    torch.manual_seed(0)
    return LowRankIclForPromptClassification(LowRankIclConfig(**config)).train()


def speed_section(args):
    results = {}
    for num_tables, batch in zip(args.speed_tables, args.speed_batches, strict=True):
        sparse = preset(num_tables)
        masked = preset(num_tables, table_attention_implementation="masked")
        masked.load_state_dict(sparse.state_dict())
        full = preset(num_tables, attention_pattern="full")
        length = sparse.config.prompt_length()
        generator = torch.Generator().manual_seed(num_tables)
        features = torch.randn(batch, length, sparse.config.n_dims, generator=generator)
        labels = torch.randint(0, 2, (batch,), generator=generator).float() * 2 - 1
        entry = {"length": length, "batch": batch}
        for name, model in (("sparse", sparse), ("masked", masked), ("full_attention", full)):

            def step(model=model, features=features, labels=labels):
                model.zero_grad(set_to_none=True)
                model(features, labels=labels).loss.backward()

            print(f"speed: V={num_tables} {name}", flush=True)
            times = time_steps(step, args.rounds)
            entry[name] = {"seconds": [round(t, 4) for t in times], "median_s": round(statistics.median(times), 4)}
        entry["masked_over_sparse_speedup"] = round(entry["masked"]["median_s"] / entry["sparse"]["median_s"], 2)
        results[f"V={num_tables}"] = entry
    return results


def quality_section(args):
    from hf_models.training.arguments import parse_train_args
    from hf_models.training.run import evaluate_folder, train

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.runs_dir or scratch
        for num_tables in args.quality_tables:
            config = ROOT / "configs" / "train" / f"lowrank_icl_table_bench_v{num_tables}.yaml"
            for name, overrides in VARIANTS.items():
                folder = Path(tmp) / f"{name}_v{num_tables}"
                cli = ["--output_dir", str(folder), "--model_overrides", json.dumps(overrides), "--precision", "no",
                       "--save_strategy", "no", "--disable_tqdm", "true"]  # fmt: skip
                if args.steps:
                    cli += ["--max_steps", str(args.steps)]
                model_args, data_args, training_args = parse_train_args(config, cli)
                print(f"quality: training {name} at V={num_tables}", flush=True)
                start = time.perf_counter()
                outcome = train(model_args, data_args, training_args)
                seconds = time.perf_counter() - start
                model = LowRankIclForPromptClassification.from_pretrained(folder)
                positions = sum(p.numel() for p in model.model.position_embeddings.parameters())
                entry = {key.removeprefix("eval_"): round(outcome[key], 4) for key in METRICS if key in outcome}
                entry.update(
                    parameters=model.num_parameters(),
                    position_parameters=positions,
                    steps=outcome["global_step"],
                    seconds_per_step=round(seconds / outcome["global_step"], 4),
                )
                if name == "low_rank" and num_tables == max(args.quality_tables):
                    entry["transfer"] = {}
                    for other in args.transfer_tables:
                        print(f"quality: {name} trained at V={num_tables}, evaluated at V={other}", flush=True)
                        measured = evaluate_folder(folder, write=False, num_tables=other)
                        entry["transfer"][f"V={other}"] = {
                            key.removeprefix("eval_"): round(measured[key], 4) for key in METRICS if key in measured
                        }
                results[f"{name}_v{num_tables}"] = entry
    return results


def render_markdown(report):
    host = report["host"]
    lines = [
        "# LowRank ICL: sparse table attention, and low-rank against dense on table connectivity",
        "",
        f"{describe_host(host)} Command: `{report['command']}`.",
        "",
    ]
    if "speed" in report:
        lines += ["## Training step (forward + backward), small preset (12 blocks, 128 wide), float32", "",
                  "| V | L | batch | sparse s/step | masked s/step | full attention s/step | masked / sparse |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, entry in report["speed"].items():
            lines.append(f"| {key.removeprefix('V=')} | {entry['length']} | {entry['batch']} | "
                         f"{entry['sparse']['median_s']} | {entry['masked']['median_s']} | "
                         f"{entry['full_attention']['median_s']} | {entry['masked_over_sparse_speedup']}x |")  # fmt: skip
        lines.append("")
    if "quality" in report:
        lines += ["## Table connectivity, same budget (2000 evaluation prompts at the natural class rates)", "",
                  "| model | V | balanced accuracy | F1 | AUROC | accuracy | positive rate | parameters | positional "
                  "parameters | s / step |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, entry in report["quality"].items():
            name, _, tables = key.rpartition("_v")
            lines.append(f"| {name} | {tables} | {entry['balanced_accuracy']} | {entry['f1']} | "
                         f"{entry.get('auroc', '-')} | {entry['accuracy']} | {entry['positive_rate']} | "
                         f"{entry['parameters']:,} | {entry['position_parameters']:,} | {entry['seconds_per_step']} |")  # fmt: skip
        transfer = next((e["transfer"] for e in report["quality"].values() if "transfer" in e), None)
        if transfer:
            lines += ["", "Transfer of the low-rank model trained at the largest V:", "",
                      "| evaluated at | balanced accuracy | F1 | AUROC | accuracy | positive rate |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            for key, entry in transfer.items():
                lines.append(f"| {key} | {entry['balanced_accuracy']} | {entry['f1']} | {entry.get('auroc', '-')} | "
                             f"{entry['accuracy']} | {entry['positive_rate']} |")  # fmt: skip
        lines.append("")
    if report.get("note"):
        lines += [f"Note: {report['note']}", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["speed", "quality"], choices=["speed", "quality"])
    parser.add_argument("--speed-tables", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--speed-batches", type=int, nargs="+", default=[64, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quality-tables", type=int, nargs="+", default=[3, 5, 20], choices=[3, 5, 20])
    parser.add_argument("--transfer-tables", type=int, nargs="+", default=[10, 30, 40])
    parser.add_argument("--steps", type=int, default=0, help="quality: training steps (default: the YAML's)")
    parser.add_argument("--runs-dir", help="quality: keep the run folders here (default: a temporary folder)")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", help="output path without suffix (default: benchmarks/lowrank_icl_<host kind>)")
    args = parser.parse_args(argv)
    if len(args.speed_tables) != len(args.speed_batches):
        parser.error("--speed-tables and --speed-batches need one batch size per table count")
    host = host_info()
    report = {
        "command": "python " + " ".join(["scripts/bench_lowrank_icl.py", *(sys.argv[1:] if argv is None else argv)]),
        "host": host,
        "note": args.note,
    }
    if "speed" in args.sections:
        report["speed"] = speed_section(args)
    if "quality" in args.sections:
        report["quality"] = quality_section(args)
    out = Path(args.out or ROOT / "benchmarks" / f"lowrank_icl_{report['host']['kind']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(report))
    print(render_markdown(report))


if __name__ == "__main__":
    main()
