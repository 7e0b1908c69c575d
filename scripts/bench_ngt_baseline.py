"""NGT against a stock transformers causal LM on nanoGPT's CPU "baby GPT" recipe (tinyshakespeare characters).

Every model is trained by the same `hf-models train` code path (`hf_models.training.run.train`) from
configs/train/ngt_tinyshakespeare_baby.yaml and configs/train/llama_tinyshakespeare_baby.yaml: same data, same
character tokenizer, same optimiser, schedule, batch and steps; the baseline is `LlamaForCausalLM` built from
configs/models/llama/baby.json (no hand-written baseline). NGT runs twice: with the reference's defaults
(repulsive kernel) and with the attractive kernel plus the learned self score. Reported:

- validation loss after the same number of steps (2000, the recipe's; full held-out 10% of the text);
- validation loss after the same wall-clock budget: the stock model's training time for its 2000 steps, in which
  NGT gets as many steps as its measured speed allows (a second NGT run with that many steps and the same schedule
  shape, so its learning rate also decays to the end);
- training tokens/s of each (time inside optimizer steps only, evaluation excluded).

nanoGPT's anchor for this recipe is a validation loss of about 1.88.

    python scripts/bench_ngt_baseline.py              # ~16 minutes on 2 cores; writes benchmarks/ngt_baseline.*
    python scripts/bench_ngt_baseline.py --steps 100  # a smoke run (writes to --out)
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import TrainerCallback


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hf_models.training.arguments import parse_train_args  # noqa: E402
from hf_models.training.run import train  # noqa: E402


CONFIGS = {
    "llama": ("configs/train/llama_tinyshakespeare_baby.yaml", {}),
    "ngt": ("configs/train/ngt_tinyshakespeare_baby.yaml", {}),  # the reference's defaults (repulsive kernel)
    "ngt_attractive": (
        "configs/train/ngt_tinyshakespeare_baby.yaml",
        {"gravity_kernel": "attractive", "self_attention": True},
    ),
}
NGT_VARIANTS = ("ngt", "ngt_attractive")
NANOGPT_ANCHOR = 1.88


class StepTimer(TrainerCallback):
    """Seconds spent inside optimizer steps, and the validation curve against them."""

    def __init__(self):
        self.seconds, self.curve, self._start = 0.0, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self._start

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.curve.append({"step": state.global_step, "train_seconds": round(self.seconds, 2),
                           "eval_loss": round(metrics["eval_loss"], 4)})  # fmt: skip


def run(name, steps, workdir, warmup, phase):
    """Train `name` for `steps` in its own folder under `workdir` (named by `phase`, so that the same-budget run
    never lands in the same-steps run's folder when the two step counts happen to coincide)."""
    config, overrides = CONFIGS[name]
    folder = workdir / f"{phase}_{name}_{steps}"
    model_args, data_args, training_args = parse_train_args(
        ROOT / config,
        ["--output_dir", str(folder), "--model_overrides", json.dumps(overrides),
         "--max_steps", str(steps), "--warmup_steps",
         str(warmup), "--eval_steps", str(max(1, steps // 8)), "--save_strategy", "no", "--report_to", "none",
         "--disable_tqdm", "true", "--precision", "no"],  # float32 on every host, as the report says
    )  # fmt: skip
    timer = StepTimer()
    print(f"training {name} for {steps} steps", flush=True)
    results = train(model_args, data_args, training_args, callbacks=[timer])
    tokens = steps * training_args.per_device_train_batch_size * data_args.block_size
    model_config = json.loads((folder / "config.json").read_text())
    from transformers import AutoConfig, AutoModelForCausalLM

    parameters = AutoModelForCausalLM.from_config(AutoConfig.for_model(**model_config)).num_parameters()
    return {
        "config": config,
        "model_overrides": overrides,
        "model_type": model_config["model_type"],
        "parameters": parameters,
        "steps": steps,
        "train_seconds": round(timer.seconds, 2),
        "tokens_per_second": round(tokens / timer.seconds, 1),
        "val_loss": round(results["eval_loss"], 4),
        "curve": timer.curve,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "ngt_baseline"))
    args = parser.parse_args(argv)
    warmup = max(1, args.steps // 20)
    same_steps, same_clock = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in CONFIGS:
            same_steps[name] = run(name, args.steps, workdir, warmup, "same_steps")
        budget = same_steps["llama"]["train_seconds"]
        for name in NGT_VARIANTS:
            steps = max(1, int(budget / same_steps[name]["train_seconds"] * args.steps))
            same_clock[name] = run(name, steps, workdir, max(1, steps // 20), "same_clock")
    llama = same_steps["llama"]
    summary = {"steps": args.steps, "llama_val_loss": llama["val_loss"], "nanogpt_anchor_val_loss": NANOGPT_ANCHOR}
    for name in NGT_VARIANTS:
        summary[name] = {
            "val_loss_same_steps": same_steps[name]["val_loss"],
            "val_loss_same_wall_clock": same_clock[name]["val_loss"],
            "steps_in_budget": same_clock[name]["steps"],
            "tokens_per_second_over_llama": round(
                same_steps[name]["tokens_per_second"] / llama["tokens_per_second"], 3
            ),
        }
    report = {
        "command": "python scripts/bench_ngt_baseline.py" + (f" --steps {args.steps}" if args.steps != 2000 else ""),
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "precision": "fp32",
        },
        "same_steps": same_steps,
        "same_wall_clock": {"budget_seconds": budget, **same_clock},
        "summary": summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(report))
    print(json.dumps(report["summary"], indent=2))


def render_markdown(report):
    env, same, clock, summary = (
        report["environment"],
        report["same_steps"],
        report["same_wall_clock"],
        report["summary"],
    )
    lines = [
        "# NGT vs stock LlamaForCausalLM on nanoGPT's baby-GPT recipe (tinyshakespeare, characters)",
        "",
        f"torch {env['torch']}, transformers {env['transformers']}, {env['machine']}, {env['threads']} threads, "
        f"{env['precision']}. Every model is trained by `hf-models train` with the same data, tokenizer, optimiser, "
        f"schedule and batch (block 64, batch 12). `ngt` is the reference's default (repulsive kernel); "
        f"`ngt_attractive` sets `gravity_kernel=attractive, self_attention=True`. Command: `{report['command']}`.",
        "",
        "| model | parameters | steps | training s | tokens/s | val loss |",
        "|---|---|---|---|---|---|",
    ]
    rows = [(f"{name}, {summary['steps']} steps", row) for name, row in same.items()]
    rows += [(f"{name}, same wall-clock", clock[name]) for name in NGT_VARIANTS]
    for label, row in rows:
        lines.append(
            f"| {label} | {row['parameters']:,} | {row['steps']} | {row['train_seconds']:.1f} | "
            f"{row['tokens_per_second']:.0f} | {row['val_loss']:.3f} |"
        )
    lines += [
        "",
        f"Same wall-clock budget = the stock model's {clock['budget_seconds']:.0f} s of training for its "
        f"{summary['steps']} steps; each NGT variant runs as many steps as its measured speed fits in it. Training "
        "tokens/s over Llama's: "
        + ", ".join(f"{name} {summary[name]['tokens_per_second_over_llama']:.2f}" for name in NGT_VARIANTS)
        + f". nanoGPT's anchor for this recipe: val loss about {summary['nanogpt_anchor_val_loss']}.",
        "",
        "## Validation curves (200 held-out blocks; training seconds exclude evaluation)",
        "",
        "| run | step | training s | val loss |",
        "|---|---|---|---|",
    ]
    for label, row in rows:
        lines += [f"| {label} | {p['step']} | {p['train_seconds']:.1f} | {p['eval_loss']:.3f} |" for p in row["curve"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
