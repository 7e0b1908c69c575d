"""Twistor-HOPE speed: the fused recurrence against its per-step reference and against torch.nn.LSTM, and decoding.

Sections (all on the small preset, hidden_size 128, twistor and cell width 256, 2 cell layers, vocabulary 65):

- `train`: one training step (forward + backward, no optimizer) on batch 8 x 128 tokens, float32: the fused path
  (`recurrent_implementation="fused"`, the default), the per-step reference (the original's loop structure), and
  the anchor `torch.nn.LSTM` of the same width and depth (input 256, hidden 256, 2 layers, between an embedding and
  an LM head; PyTorch's native fused recurrent kernel). The fused path also runs under bf16 autocast where the CPU
  has native bf16. Reported: seconds per step (median of rounds), tokens/s, ratios.
- `ceiling`: how fast any implementation of the same arithmetic could be on this machine. Every matrix product of
  one fused training step is recorded with its shape (m x k times k x n) under a dispatch mode; each distinct shape
  is then timed alone in this process (float32 and bfloat16), and the step's matmul time at those rates is summed.
  The recurrence forces m = batch (8) for the per-step products, which run far below the machine's large-matmul
  rate, so this sum is a floor for the step no matter how the per-step work is fused; reference time over that
  floor is the largest speedup reachable without changing the arithmetic.
- `decode`: greedy decoding with the recurrent state: milliseconds per new token after prompts of 64, 256, 512 and
  1024 tokens (the state has a fixed size, so the cost should not grow with the position).
- `quality`: nanoGPT's baby-GPT recipe on tinyshakespeare characters (configs/train/twistor_hope_tinyshakespeare_baby.yaml,
  2000 steps, float32), trained by the same `run` function as scripts/bench_ngt_baseline.py, beside the stock Llama
  of that benchmark in the same process, plus the ablations named in `--variants` (`no_memory`: no continuum memory;
  `no_nested`: no nested levels and no constraint loss; `no_mobius`: the cells' Möbius mixing off and the adaptive
  Möbius coupling starting at 0).

The results name the machine and go to benchmarks/twistor_hope_<host kind>.json and .md.

    python scripts/bench_twistor_hope.py                   # train, ceiling and decode, ~5 minutes on 2 cores
    python scripts/bench_twistor_hope.py --sections quality --variants full no_memory no_nested no_mobius  # ~1 hour
    python scripts/bench_twistor_hope.py --sections decode --rounds 2 --out /tmp/smoke
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from hf_models import TwistorHopeConfig, TwistorHopeForCausalLM  # noqa: E402
from hf_models.training import bf16_is_fast, describe_host, host_info  # noqa: E402


PRESET = ROOT / "configs" / "models" / "twistor_hope" / "small.json"
VOCAB = 65


def twistor(implementation="fused"):
    config = TwistorHopeConfig.from_pretrained(str(PRESET))
    config.vocab_size, config.hidden_dropout, config.recurrent_implementation = VOCAB, 0.0, implementation
    config = TwistorHopeConfig(**config.to_dict())
    torch.manual_seed(0)
    return TwistorHopeForCausalLM(config)


class LstmLM(nn.Module):
    """The anchor: embedding -> torch.nn.LSTM (the cell width and depth of the preset) -> LM head."""

    def __init__(self, width, layers):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.lstm = nn.LSTM(width, width, num_layers=layers, batch_first=True)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, input_ids, labels):
        logits = self.head(self.lstm(self.embed(input_ids))[0])
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def time_steps(step, rounds, warmup=1):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def train_section(args):
    ids = torch.randint(0, VOCAB, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    tokens = args.batch * args.length
    results = {}

    def twistor_step(model, autocast=False):
        def step():
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(ids, labels=ids).loss
            loss.backward()

        return step

    fused = twistor("fused").train()
    width, layers = fused.config.recurrent_hidden_size, fused.config.num_recurrent_layers
    lstm = LstmLM(width, layers).train()

    def lstm_step():
        lstm.zero_grad(set_to_none=True)
        lstm(ids, ids).backward()

    runs = {"fused": twistor_step(fused), "lstm": lstm_step}
    if bf16_is_fast("cpu"):
        runs["fused_bf16_autocast"] = twistor_step(fused, autocast=True)
    for name, step in runs.items():
        print(f"train: {name}", flush=True)
        times = time_steps(step, args.rounds)
        results[name] = {"seconds": [round(t, 4) for t in times], "median_s": round(statistics.median(times), 4)}
    print("train: reference (per-step loop)", flush=True)
    reference = twistor("reference").train()
    reference.load_state_dict(fused.state_dict())
    times = time_steps(twistor_step(reference), args.reference_rounds)
    results["reference"] = {"seconds": [round(t, 4) for t in times], "median_s": round(statistics.median(times), 4)}
    for entry in results.values():
        entry["tokens_per_s"] = round(tokens / entry["median_s"], 1)
    results["parameters"] = {"twistor_hope": fused.num_parameters(), "lstm": sum(p.numel() for p in lstm.parameters())}
    median = {k: v["median_s"] for k, v in results.items() if isinstance(v, dict) and "median_s" in v}
    results["ratios"] = {
        "fused_over_reference_speedup": round(median["reference"] / median["fused"], 2),
        "lstm_over_fused_speedup": round(median["fused"] / median["lstm"], 2),
    }
    if "fused_bf16_autocast" in median:
        results["ratios"]["reference_over_fused_bf16_speedup"] = round(
            median["reference"] / median["fused_bf16_autocast"], 2
        )
    return results


class _MatmulShapes(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the (m, k, n) of every mm / addmm / bmm dispatched while active."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = getattr(func, "overloadpacket", None)
        if packet in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            left, right = (args[1], args[2]) if packet is torch.ops.aten.addmm else (args[0], args[1])
            batch = left.shape[0] if left.dim() == 3 else 1
            key = (batch, left.shape[-2], left.shape[-1], right.shape[-1])
            self.counts[key] = self.counts.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def _matmul_seconds(shape, dtype, budget=0.2):
    """Seconds per product of one shape, alone, at this process's thread count."""
    batch, m, k, n = shape
    left, right = torch.randn(batch, m, k, dtype=dtype), torch.randn(batch, k, n, dtype=dtype)
    for _ in range(3):
        torch.matmul(left, right)
    repeats = max(3, min(2000, int(budget / max(1e-6, 2 * batch * m * k * n / 5e10))))
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(left, right)
    return (time.perf_counter() - start) / repeats


def ceiling_section(args, reference_seconds=None):
    """The matmul floor of one fused training step (see the module docstring)."""
    ids = torch.randint(0, VOCAB, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    model = twistor("fused").train()
    with _MatmulShapes() as recorder:
        model(ids, labels=ids).loss.backward()
    flops = {shape: 2 * shape[0] * shape[1] * shape[2] * shape[3] * count for shape, count in recorder.counts.items()}
    sequential = {shape for shape in recorder.counts if shape[1] <= args.batch}  # the per-step products (m = batch)
    results = {
        "gflop_per_step": round(sum(flops.values()) / 1e9, 3),
        "gflop_in_per_step_products": round(sum(flops[s] for s in sequential) / 1e9, 3),
        "distinct_shapes": len(flops),
    }
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        seconds = {shape: _matmul_seconds(shape, dtype) * recorder.counts[shape] for shape in recorder.counts}
        floor = sum(seconds.values())
        entry = {
            "matmul_floor_s": round(floor, 4),
            "per_step_products_s": round(sum(seconds[s] for s in sequential), 4),
            "per_step_products_gflops": round(
                sum(flops[s] for s in sequential) / max(1e-9, sum(seconds[s] for s in sequential)) / 1e9, 1
            ),
        }
        big = _matmul_seconds((1, 1024, 1024, 1024), dtype)
        entry["large_matmul_gflops"] = round(2 * 1024**3 / big / 1e9, 1)
        if reference_seconds:
            entry["max_speedup_over_reference"] = round(reference_seconds / floor, 2)
        results[name] = entry
        print(f"ceiling {name}: {entry}", flush=True)
    return results


@torch.no_grad()
def decode_section(args):
    model = twistor("fused").eval()
    results = {}
    for position in args.positions:
        prompt = torch.randint(0, VOCAB, (1, position), generator=torch.Generator().manual_seed(position))
        out = model(prompt, use_cache=True)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(args.decode_tokens + 2):
            start = time.perf_counter()
            out = model(token, cache=cache, use_cache=True)
            times.append(time.perf_counter() - start)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        times = times[2:]  # the first calls warm the allocator
        results[str(position)] = {"ms_per_token": round(1000 * statistics.median(times), 3)}
        print(f"decode after {position} tokens: {results[str(position)]['ms_per_token']} ms/token", flush=True)
    first, last = results[str(args.positions[0])], results[str(args.positions[-1])]
    results["last_over_first"] = round(last["ms_per_token"] / first["ms_per_token"], 3)
    return results


QUALITY_VARIANTS = {
    "full": {},
    "no_memory": {"num_memories": 0, "memory_update_periods": []},
    "no_nested": {"use_nested_learning": False, "num_nested_levels": 0},
    "no_mobius": {"mobius_coupling": 0.0, "adaptive_coupling_base": 0.0, "adaptive_range_init": 0.0},
}


def quality_section(args, save=lambda results: None):
    """`save(results so far)` runs after each model, so an interrupted run keeps the models it finished."""
    import tempfile

    import bench_ngt_baseline as baseline

    baseline.CONFIGS["twistor_hope"] = ("configs/train/twistor_hope_tinyshakespeare_baby.yaml", {})
    for name in args.variants:
        baseline.CONFIGS[f"twistor_hope_{name}"] = (
            "configs/train/twistor_hope_tinyshakespeare_baby.yaml",
            {"hidden_dropout": 0.0, **QUALITY_VARIANTS[name]},
        )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["llama"] + [f"twistor_hope_{v}" for v in args.variants]:
            results[name] = baseline.run(name, args.steps, Path(tmp), max(1, args.steps // 20), "same_steps")
            save({**results, "nanogpt_anchor_val_loss": baseline.NANOGPT_ANCHOR})
    results["nanogpt_anchor_val_loss"] = baseline.NANOGPT_ANCHOR
    return results


def render_markdown(report):
    host = report["host"]
    lines = [
        "# Twistor-HOPE: fused recurrence, per-step reference, torch.nn.LSTM, decoding",
        "",
        f"{describe_host(host)} Command: `{report['command']}`.",
        "",
    ]
    if "train" in report:
        train = report["train"]
        setup = report["setup"]
        lines += [
            f"## Training step (forward + backward), small preset, batch {setup['batch']} x {setup['length']} tokens",
            "",
            "| path | s / step (median) | tokens/s |",
            "|---|---|---|",
        ]
        for name in ("reference", "fused", "fused_bf16_autocast", "lstm"):
            if name in train:
                lines.append(f"| {name} | {train[name]['median_s']} | {train[name]['tokens_per_s']} |")
        lines += ["", "Ratios: " + ", ".join(f"{k} {v}x" for k, v in train["ratios"].items()), "",
                  f"Parameters: Twistor-HOPE {train['parameters']['twistor_hope']:,}, LSTM anchor "
                  f"{train['parameters']['lstm']:,}.", ""]  # fmt: skip
    if "ceiling" in report:
        ceiling = report["ceiling"]
        lines += [
            "## Matmul floor of the fused training step",
            "",
            f"{ceiling['gflop_per_step']} GFLOP of matrix products per step ({ceiling['distinct_shapes']} shapes), "
            f"{ceiling['gflop_in_per_step_products']} GFLOP of them in the per-step products of the recurrence "
            f"(m = batch). Each shape timed alone here; the sum is what the products cost even with zero overhead "
            "around them.",
            "",
            "| dtype | matmul floor s / step | per-step products s | their GFLOP/s | large-matmul GFLOP/s | "
            "largest speedup over the reference |",
            "|---|---|---|---|---|---|",
        ]
        for name in ("float32", "bfloat16"):
            entry = ceiling[name]
            lines.append(f"| {name} | {entry['matmul_floor_s']} | {entry['per_step_products_s']} | "
                         f"{entry['per_step_products_gflops']} | {entry['large_matmul_gflops']} | "
                         f"{entry.get('max_speedup_over_reference', '-')} |")  # fmt: skip
        lines.append("")
    if "decode" in report:
        decode = report["decode"]
        lines += ["## Greedy decoding with the recurrent state (batch 1)", "", "| prompt tokens | ms / new token |",
                  "|---|---|"]  # fmt: skip
        for key, value in decode.items():
            if isinstance(value, dict):
                lines.append(f"| {key} | {value['ms_per_token']} |")
        lines += ["", f"Last over first: {decode['last_over_first']}x.", ""]
    if "quality" in report:
        quality = report["quality"]
        lines += [f"## nanoGPT baby recipe on tinyshakespeare characters ({report['setup'].get('steps', 2000)} steps, "
                  "float32)", "", "| model | parameters | training s | tokens/s | val loss |", "|---|---|---|---|---|"]  # fmt: skip
        for name, value in quality.items():
            if isinstance(value, dict):
                lines.append(f"| {name} | {value['parameters']:,} | {value['train_seconds']} | "
                             f"{value['tokens_per_second']} | {value['val_loss']} |")  # fmt: skip
        lines += ["", f"nanoGPT's anchor for this recipe: about {quality['nanogpt_anchor_val_loss']}.", "",
                  "Validation curves (step: val loss): " + "; ".join(
                      f"{name}: " + ", ".join(f"{c['step']}: {c['eval_loss']}" for c in value["curve"])
                      for name, value in quality.items() if isinstance(value, dict)), ""]  # fmt: skip
    if report.get("note"):
        lines += [f"Note: {report['note']}", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["train", "ceiling", "decode"],
        choices=["train", "ceiling", "decode", "quality"],
    )
    parser.add_argument("--variants", nargs="+", default=["full"], choices=list(QUALITY_VARIANTS))
    parser.add_argument("--steps", type=int, default=2000, help="quality: training steps per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reference-rounds", type=int, default=2)
    parser.add_argument("--positions", type=int, nargs="+", default=[64, 256, 512, 1024])
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", help="output path without suffix (default: benchmarks/twistor_hope_<host kind>)")
    args = parser.parse_args(argv)
    host = host_info()
    report = {
        "command": "python scripts/bench_twistor_hope.py" + (" " + " ".join(argv) if argv else ""),
        "host": host,
        "setup": {"preset": "small", "batch": args.batch, "length": args.length, "vocab": VOCAB, "precision": "fp32"},
        "note": args.note,
    }
    if argv is None:
        report["command"] = "python " + " ".join(["scripts/bench_twistor_hope.py", *sys.argv[1:]])
    if "train" in args.sections:
        report["train"] = train_section(args)
    if "ceiling" in args.sections:
        reference = report.get("train", {}).get("reference", {}).get("median_s")
        report["ceiling"] = ceiling_section(args, reference)
    if "decode" in args.sections:
        report["decode"] = decode_section(args)
    default = f"twistor_hope_{'quality' if args.sections == ['quality'] else report['host']['kind']}"
    out = Path(args.out or ROOT / "benchmarks" / default)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write():
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(render_markdown(report))

    if "quality" in args.sections:
        report["setup"]["steps"] = args.steps

        def save(results):
            report["quality"] = results
            write()

        report["quality"] = quality_section(args, save)
    write()
    print(json.dumps({k: report[k] for k in ("train", "decode") if k in report}.get("train", {}).get("ratios", {})))


if __name__ == "__main__":
    main()
