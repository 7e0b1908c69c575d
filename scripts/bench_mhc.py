"""mHC benchmarks: the training-step overhead of n = 4 streams over a plain residual (n = 1), the original MNIST recipe,
and tinyshakespeare at the baby-GPT step budget of the NGT / stock-Llama comparison.

- overhead: `MhcForCausalLM` at the text config (configs/models/mhc/small.json: 4 layers, 128 wide, block 256,
  batch 16), same process, same batches, AdamW steps; 6 rounds of 5 steps, the variants taking turns so they see
  the same machine load; the ratio to n = 1 as best round over best round and as the median of the per-round
  ratios. Variants: mHC n = 4 as configured by default
  (`hyper_connection_implementation="auto"`: the fused C++ CPU kernels), the same on PyTorch ops (`"eager"`) and
  through torch.compile (`"compile"`; its compilation happens in the warmup steps), n = 1 (a plain pre-norm
  residual transformer with the same weights otherwise), and HC n = 4 (unconstrained, eager, for reference); then
  mHC fused / eager / compiled against n = 1 at 256 and 512 wide (4 rounds). All of it in float32 and, where the CPU
  has native bf16 (what `precision: auto` trains in there), again under bf16 autocast (fused and eager mHC against
  n = 1; the kernels keep the streams and the coefficients in float32 under autocast, as the eager path does).

The results name the machine (processor, torch's CPU capability, native bf16) and go to benchmarks/mhc_<host kind>
(cpu_avx2, cpu_avx512, cpu_avx512_bf16, ...): each kind of machine keeps its own figures, and a run of some sections
replaces only those in the file of its kind.
- text: `hf-models train configs/train/mhc_tinyshakespeare_baby.yaml` (nanoGPT's baby-GPT recipe, 2000 steps),
  and the same with `expansion_rate=1` (a plain residual), next to the numbers in benchmarks/ngt_baseline.json for
  NGT and the stock Llama on the same recipe.
- mnist: `hf-models train configs/train/mhc_mnist_small.yaml` (the original model: dim 96, 6 layers, 4 heads,
  rate 2; 5 epochs of AdamW at 3e-4 on a cosine, batch 4, no dropout, patch dropping 0.1, label smoothing 0.1,
  1-pixel shifts; see the config), test accuracy and plain cross-entropy per epoch and the wall-clock it took.

    python scripts/bench_mhc.py                            # all three; writes benchmarks/mhc_<host kind>.json and .md
    python scripts/bench_mhc.py --sections overhead        # only the step overhead (about half an hour)
    python scripts/bench_mhc.py --sections overhead --precisions fp32 --widths 128 --overhead-steps 3   # a quick look
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hf_models import MhcConfig, MhcForCausalLM  # noqa: E402
from hf_models.mhc import kernels_mhc  # noqa: E402
from hf_models.training import host_info  # noqa: E402
from hf_models.training.arguments import parse_train_args  # noqa: E402
from hf_models.training.run import train  # noqa: E402


VARIANTS = {
    "mhc_n4": {},
    "mhc_n4_eager": {"hyper_connection_implementation": "eager"},
    "mhc_n4_compiled": {"hyper_connection_implementation": "compile"},
    "plain_n1": {"expansion_rate": 1},
    "hc_n4": {"hyper_connection_type": "hc"},
}


def bench_overhead(steps, batch, seq, rounds=6, variants=VARIANTS, width=None, precision="fp32"):
    """Step times of `variants` (config overrides) at the text config, or at `width` (hidden size; 4 heads,
    feed-forward 4x) with everything else the same, in float32 or (`precision="bf16"`) under bf16 autocast as the
    Trainer runs it. Each round runs every variant for `steps` steps, in reverse order every other round. Reported:
    the best round of each variant (and best / best of plain n = 1), and the median and range of the per-round ratios
    to the plain round next to it (the machine's speed drifts over minutes, so a ratio within one round is the
    steadier measure)."""
    if kernels_mhc.load() is None:  # "auto" would quietly measure the eager path
        raise SystemExit(f"the fused mHC CPU kernels did not build: {kernels_mhc.load_error()}")
    base = MhcConfig.from_pretrained(str(ROOT / "configs" / "models" / "mhc" / "small.json")).to_dict()
    if width is not None:
        base.update(hidden_size=width, intermediate_size=4 * width)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(1, base["vocab_size"], (batch, seq), generator=generator) for _ in range(steps)]
    models, optimizers, seconds, faults = {}, {}, {}, {}
    for name, overrides in variants.items():
        torch.manual_seed(0)
        models[name] = MhcForCausalLM(MhcConfig(**{**base, **overrides, "max_position_embeddings": seq})).train()
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-4)
        seconds[name], faults[name] = [], []
        for ids in batches[:2]:  # warmup (allocator, optimizer state, torch.compile)
            _step(models[name], optimizers[name], ids, precision)
    for round_index in range(rounds):
        for name in list(variants)[:: 1 if round_index % 2 == 0 else -1]:
            before = _page_faults()
            start = time.perf_counter()
            for ids in batches:
                _step(models[name], optimizers[name], ids, precision)
            seconds[name].append(time.perf_counter() - start)
            faults[name].append((_page_faults() - before) / steps)
    result = {}
    for name in variants:
        best = min(seconds[name])
        result[name] = {
            "parameters": models[name].num_parameters(),
            "tokens_per_second": round(steps * batch * seq / best, 1),
            "step_ms": round(1000 * best / steps, 2),
            "page_faults_per_step": round(statistics.median(faults[name])),
        }
    plain = result["plain_n1"]["step_ms"]
    for name in variants:
        result[name]["step_time_over_plain"] = round(result[name]["step_ms"] / plain, 4)
        paired = [mine / theirs for mine, theirs in zip(seconds[name], seconds["plain_n1"], strict=True)]
        result[name]["per_round_ratio_median"] = round(statistics.median(paired), 4)
        result[name]["per_round_ratio_range"] = [round(min(paired), 4), round(max(paired), 4)]
    return {"steps": steps, "batch": batch, "seq": seq, "rounds": rounds, "width": base["hidden_size"],
            "variants": result}  # fmt: skip


WIDTHS = (128, 256, 512)
# settings that make this CPU pass for a lesser one (AVX2 on an AVX-512 CPU, no native bf16)
LOWERED = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "HF_MODELS_CPU_BF16")
PRECISIONS = ("fp32", "bf16")


def bench_overhead_section(steps, batch, seq, widths=WIDTHS, precisions=PRECISIONS, rounds=None):
    """The overhead section: for each precision, every width. In float32 at the text config's 128 wide all variants
    (6 rounds); elsewhere mHC fused / eager / compiled against n = 1 (4 rounds; under bf16 autocast fused and eager,
    as torch.compile of the autocast step adds little but its compilation time). The stream work grows as n * C per
    token, the layers' matmuls as C^2, so the relative overhead falls with the width."""
    result = {"steps": steps, "batch": batch, "seq": seq, "precisions": {}}
    for precision in precisions:
        rows = {}
        for width in widths:
            if precision == "fp32" and width == 128:
                names = list(VARIANTS)
            elif precision == "fp32":
                names = ["mhc_n4", "mhc_n4_eager", "mhc_n4_compiled", "plain_n1"]
            else:
                names = ["mhc_n4", "mhc_n4_eager", "plain_n1"]
            count = rounds or (6 if precision == "fp32" and width == 128 else 4)
            run = bench_overhead(steps, batch, seq, count, {name: VARIANTS[name] for name in names}, width, precision)
            rows[str(width)] = {"rounds": count, "variants": run["variants"]}
            print(f"{precision} {width}: " + ", ".join(
                f"{name} {row['step_ms']:.1f} ms ({row['step_time_over_plain']:.3f}x best, "
                f"{row['per_round_ratio_median']:.3f}x median)" for name, row in run["variants"].items()
            ), flush=True)  # fmt: skip
        result["precisions"][precision] = rows
    return result


def _page_faults():
    """Minor page faults of this process so far (first touches of memory the C library took from the system)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _step(model, optimizer, ids, precision="fp32"):
    # bf16 as the Trainer runs it on the CPU: the forward under autocast, the backward and the optimizer outside
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with autocast:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class _Clock(TrainerCallback):
    def __init__(self):
        self.start, self.evaluations = None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0, 3),
                 "seconds": round(time.perf_counter() - self.start, 1)}  # fmt: skip
        entry.update({k: round(v, 5) for k, v in metrics.items() if k in ("eval_loss", "eval_accuracy")})
        if "eval_cross_entropy" in metrics:  # image runs: the plain loss (eval_loss is smoothed when training is)
            entry["eval_loss"] = round(metrics["eval_cross_entropy"], 5)
        self.evaluations.append(entry)


def _run(config, workdir, extra=()):
    model_args, data_args, training_args = parse_train_args(
        ROOT / config, ["--output_dir", str(workdir), "--report_to", "none", "--disable_tqdm", "true", *extra]
    )
    clock = _Clock()
    start = time.perf_counter()
    results = train(model_args, data_args, training_args, callbacks=[clock])
    return results, clock.evaluations, time.perf_counter() - start


def bench_text(workdir):
    config = "configs/train/mhc_tinyshakespeare_baby.yaml"
    results, curve, seconds = _run(config, workdir / "text")
    # the same model and recipe with one stream: a plain pre-norm residual transformer
    overrides = {**json.loads(parse_train_args(ROOT / config)[0].model_overrides), "expansion_rate": 1}
    plain, _, plain_seconds = _run(config, workdir / "text_n1", ["--model_overrides", json.dumps(overrides)])
    reference = ROOT / "benchmarks" / "ngt_baseline.json"
    others = {}
    if reference.exists():
        same = json.loads(reference.read_text())["same_steps"]
        others = {name: {"val_loss": row["val_loss"], "steps": row["steps"]} for name, row in same.items()}
    return {"val_loss": round(results["eval_loss"], 4), "steps": results["global_step"],
            "wall_seconds": round(seconds, 1), "curve": curve, "same_recipe": others,
            "plain_n1": {"val_loss": round(plain["eval_loss"], 4), "steps": plain["global_step"],
                         "wall_seconds": round(plain_seconds, 1)}}  # fmt: skip


def bench_mnist(workdir, epochs):
    config = "configs/train/mhc_mnist_small.yaml"
    extra = ["--num_train_epochs", str(epochs)] if epochs else []
    training = parse_train_args(ROOT / config, extra)[2]
    recipe = {key: getattr(training, key) for key in ("per_device_train_batch_size", "learning_rate", "warmup_steps")}
    results, curve, seconds = _run(config, workdir / "mnist", extra)
    curve = [entry for i, entry in enumerate(curve) if entry["step"] not in {e["step"] for e in curve[:i]}]
    # the plain cross-entropy: Trainer's eval_loss is label-smoothed when the recipe smooths the labels
    loss = results.get("eval_cross_entropy", results["eval_loss"])
    return {"recipe": recipe, "test_accuracy": round(results["eval_accuracy"], 5), "test_loss": round(loss, 5),
            "steps": results["global_step"], "wall_seconds": round(seconds, 1), "per_epoch": curve}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="overhead,text,mnist")
    parser.add_argument("--overhead-steps", type=int, default=5, help="steps per variant and round")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="overhead: hidden sizes to measure")
    parser.add_argument(
        "--precisions",
        default=None,
        help="overhead: fp32 and/or bf16 (autocast); default fp32,bf16 where the CPU has native bf16, else fp32",
    )
    parser.add_argument("--rounds", type=int, default=None, help="overhead: rounds per comparison (default 6 / 4)")
    parser.add_argument("--mnist-epochs", type=float, default=None, help="default: the recipe's 5")
    parser.add_argument("--out", default=None, help="output path without suffix (default: benchmarks/mhc_<host kind>)")
    parser.add_argument(
        "--run-dir",
        default=None,
        help="keep the trained runs here (text/, mnist/) for `hf-models export`; default: a temporary folder",
    )
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"overhead", "text", "mnist"}
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}")
    host = host_info()
    lowered = {key: os.environ[key] for key in LOWERED if key in os.environ}
    if lowered:  # another kind of CPU approximated on this one
        host["note"] = (
            "Run with " + ", ".join(f"{k}={v}" for k, v in lowered.items()) + ": torch's capability, MKL, oneDNN "
            "and the kernels' build lowered on a CPU that can do more, an approximation of such a machine (the same "
            "caches and memory)."
        )
    precisions = [
        p.strip() for p in (args.precisions or ("fp32,bf16" if host["cpu_native_bf16"] else "fp32")).split(",")
    ]
    if set(precisions) - set(PRECISIONS) or not precisions:
        raise SystemExit(f"--precisions: use fp32 and/or bf16, got {args.precisions!r}")
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    out = Path(args.out or ROOT / "benchmarks" / f"mhc_{host['kind']}")
    report = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    report["kind"] = host["kind"]
    command = " ".join(["python scripts/bench_mhc.py", *(argv if argv is not None else sys.argv[1:])])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.run_dir or tmp
        if "overhead" in sections:
            # glibc's malloc settings change how often freed memory goes back to the system (and is faulted in
            # again): a run with MALLOC_* set is kept apart from the default one
            malloc = {key: value for key, value in os.environ.items() if key.startswith("MALLOC_")}
            key = "overhead_malloc_tuned" if malloc else "overhead"
            report[key] = {
                "command": " ".join([*(f"{k}={v}" for k, v in malloc.items()), command]), "host": host,
                "malloc": malloc,
                **bench_overhead_section(args.overhead_steps, 16, 256, widths, precisions, args.rounds),
            }  # fmt: skip
            print(json.dumps(report[key], indent=2), flush=True)
        if "text" in sections:
            report["text"] = {"command": command, "host": host, **bench_text(Path(tmp))}
            print(json.dumps({k: v for k, v in report["text"].items() if k != "curve"}, indent=2), flush=True)
        if "mnist" in sections:
            report["mnist"] = {"command": command, "host": host, **bench_mnist(Path(tmp), args.mnist_epochs)}
            print(json.dumps(report["mnist"], indent=2), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(report))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def describe_host(host):
    """One line naming the machine a section ran on."""
    bf16 = "native bf16" if host.get("cpu_native_bf16") else "no native bf16"
    flags = f" (CPU flags: {', '.join(host['cpu_flags'])})" if host.get("cpu_flags") else ""
    note = f" {host['note']}" if host.get("note") else ""
    return (
        f"Machine: {host['processor']}; torch CPU capability {host['cpu_capability']}, {bf16}{flags}; "
        f"{host['threads']} threads, torch {host['torch']}, transformers {host['transformers']}.{note}"
    )


def render_markdown(report):
    lines = [
        f"# mHC benchmarks ({report.get('kind', 'this machine')})",
        "",
        "Each section names the machine and the command that produced it (`--sections` reruns one alone); figures of "
        "other kinds of machine are in the other benchmarks/mhc_<kind>.md files.",
    ]
    for key in ("overhead", "overhead_malloc_tuned"):
        if key not in report:
            continue
        o = report[key]
        malloc = ", ".join(f"{k}={v}" for k, v in o.get("malloc", {}).items())
        lines += [
            "",
            "## Training-step overhead: mHC n=4 over the same model with n=1"
            + (f" (glibc malloc tuned: {malloc})" if malloc else ""),
            "",
            describe_host(o["host"]),
            "",
            f"AdamW steps on batch {o['batch']} x {o['seq']} tokens, the text config (4 layers, 4 heads, feed-forward "
            f"4x) at each width; {o['steps']} steps per variant and round, the variants taking turns (in reverse "
            "order every other round). ms/step is each variant's best round; the ratios divide by plain n=1: best by "
            "best, and the median (range) of the ratios within a round."
            + (
                " bf16: the forward under CPU autocast, as `precision: auto` trains on a CPU with native bf16."
                if "bf16" in o["precisions"]
                else ""
            )
            + f" Command: `{o.get('command', '')}`.",
        ]
        for precision, rows in o["precisions"].items():
            for width, row in rows.items():
                if len(row["variants"]) <= 4:
                    continue
                lines += ["", f"{precision}, {width} wide, {row['rounds']} rounds:", "",
                          "| variant | parameters | tokens/s | ms/step | best / best | per-round median (range) | "
                          "page faults / step |", "|---|---|---|---|---|---|---|"]  # fmt: skip
                for name, v in row["variants"].items():
                    low, high = v["per_round_ratio_range"]
                    lines.append(
                        f"| {name} | {v['parameters']:,} | {v['tokens_per_second']:.0f} | {v['step_ms']:.1f} | "
                        f"{v['step_time_over_plain']:.3f} | {v['per_round_ratio_median']:.3f} ({low:.3f}-{high:.3f}) | "
                        f"{v.get('page_faults_per_step', '-')} |"
                    )
        lines += ["", "mHC n=4 over n=1 by width: best ms/step, best / best and the per-round median (range):", "",
                  "| precision | width | rounds | plain n=1 ms/step | mHC n=4 fused (auto) | eager | compiled | "
                  "page faults / step: n=1, fused |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for precision, rows in o["precisions"].items():
            for width, row in rows.items():
                variants = row["variants"]
                cells = []
                for name in ("mhc_n4", "mhc_n4_eager", "mhc_n4_compiled"):
                    if name not in variants:
                        cells.append("-")
                        continue
                    v = variants[name]
                    low, high = v["per_round_ratio_range"]
                    cells.append(
                        f"{v['step_ms']:.1f} ms, {v['step_time_over_plain']:.3f}x / "
                        f"{v['per_round_ratio_median']:.3f}x ({low:.3f}-{high:.3f})"
                    )
                faults = [str(variants[name].get("page_faults_per_step", "-")) for name in ("plain_n1", "mhc_n4")]
                lines.append(
                    f"| {precision} | {width} | {row['rounds']} | {variants['plain_n1']['step_ms']:.1f} | "
                    + " | ".join(cells)
                    + f" | {', '.join(faults)} |"
                )
    if "text" in report:
        t = report["text"]
        lines += ["", "## tinyshakespeare (characters), nanoGPT's baby-GPT recipe", "", describe_host(t["host"]), "",
                  "| model | steps | val loss |", "|---|---|---|",
                  f"| mHC n=4 | {t['steps']} | {t['val_loss']:.3f} |"]  # fmt: skip
        if "plain_n1" in t:
            p = t["plain_n1"]
            lines.append(
                f"| the same model with n=1 (a plain pre-norm residual) | {p['steps']} | {p['val_loss']:.3f} |"
            )
        lines += [f"| {name} | {row['steps']} | {row['val_loss']:.3f} |" for name, row in t["same_recipe"].items()]
        n1 = f"; n=1: {t['plain_n1']['wall_seconds']:.0f} s" if "plain_n1" in t else ""
        lines += ["", f"mHC wall-clock (training and evaluations): {t['wall_seconds']:.0f} s{n1}. "
                  f"Command: `{t.get('command', '')}`."]  # fmt: skip
    if "mnist" in report:
        m = report["mnist"]
        r = m["recipe"]
        lines += ["", "## MNIST (configs/train/mhc_mnist_small.yaml: the original model, 5 epochs of AdamW; batch "
                  f"{r['per_device_train_batch_size']}, peak lr {r['learning_rate']:.0e} on a cosine after "
                  f"{r['warmup_steps']:g} warmup steps, no dropout, patch dropping 0.1, label smoothing 0.1, "
                  "1-pixel shifts)", "", describe_host(m["host"]), "",
                  f"Test accuracy {m['test_accuracy']:.4f} (cross-entropy {m['test_loss']:.4f}) after {m['steps']} steps; "
                  f"wall-clock {m['wall_seconds'] / 60:.1f} min. Command: `{m.get('command', '')}`.", "",
                  "| epoch | step | seconds | test accuracy | test cross-entropy |", "|---|---|---|---|---|"]  # fmt: skip
        seen = set()  # the final evaluation repeats the last epoch's
        for e in m["per_epoch"]:
            if e["step"] not in seen:
                seen.add(e["step"])
                lines.append(
                    f"| {e['epoch']} | {e['step']} | {e['seconds']} | {e.get('eval_accuracy', float('nan')):.4f} | "
                    f"{e.get('eval_loss', float('nan')):.4f} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
