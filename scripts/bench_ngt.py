"""Benchmark NGT against a stock transformers causal LM of matched size and shape.

Same process, same batch, same optimiser: training tokens/s and peak memory of one training step at sequence 256
and 1024 (fp32, and bf16 autocast where the CPU has native bf16), and decode milliseconds per token at positions 64
and 1024. The baseline is `LlamaForCausalLM` built from a config (no hand-written baseline) with the same hidden size,
layers, heads and vocabulary, and an intermediate size chosen so both models have about the same number of
parameters.

Throughput: the two models alternate round by round (`--rounds` rounds of `--steps` steps each), so both see the
same machine load; the report gives the best round (the headline ratio) and the median round of each model.
Peak memory is the growth of the process's resident set during a training step (Linux VmHWM, reset through
/proc/self/clear_refs before each measurement), so it counts everything the step allocates.

The results name the machine (processor, torch's CPU capability, native bf16) and go to benchmarks/ngt_<host kind>
(cpu_avx2, cpu_avx512, cpu_avx512_bf16, ...), so the figures of different machines sit side by side. Both models
run on the CPU.

    python scripts/bench_ngt.py                      # writes benchmarks/ngt_<host kind>.json and .md
    python scripts/bench_ngt.py --quick              # fewer steps and rounds, for a smoke run
    python scripts/bench_ngt.py --note "busy host"   # a remark recorded with the results
"""

import argparse
import ctypes
import gc
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_models import NgtConfig, NgtForCausalLM  # noqa: E402
from hf_models.ngt import ops_ngt  # noqa: E402
from hf_models.training import bf16_is_fast, host_info  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]


def memory_kib():
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmHWM", "VmRSS")}


def reset_peak():
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so the resident set shows live memory
    Path("/proc/self/clear_refs").write_text("5")


def build_models(args):
    ngt_config = NgtConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=args.max_len,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )
    torch.manual_seed(0)
    ngt = NgtForCausalLM(ngt_config)
    ngt_params = sum(p.numel() for p in ngt.parameters())
    # Llama's SwiGLU MLP has three matrices: pick the intermediate size that matches NGT's parameter count.
    per_layer_other = 4 * args.hidden * args.hidden + 2 * args.hidden
    llama_non_mlp = args.vocab * args.hidden + args.layers * per_layer_other + args.hidden
    intermediate = max(1, round((ngt_params - llama_non_mlp) / (3 * args.hidden * args.layers)))
    llama_config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        intermediate_size=intermediate,
        max_position_embeddings=args.max_len,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    llama = LlamaForCausalLM(llama_config)
    return {"ngt": ngt, "llama": llama}


def train_step(model, optimizer, ids, autocast):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def bench_training(models, seq, batch, steps, warmup, vocab, autocast, rounds):
    """Tokens/s (best and median of `rounds` rounds of `steps` steps, the models alternating round by round so that
    both see the same machine load) and the peak memory growth of one step."""
    generator = torch.Generator().manual_seed(seq)
    batches = [torch.randint(0, vocab, (batch, seq), generator=generator) for _ in range(steps)]
    optimizers, results = {}, {}
    for name, model in models.items():
        model.train()
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-4)
        train_step(model, optimizers[name], batches[0], autocast)  # optimizer state outside the measurement
        reset_peak()
        before = memory_kib()["VmRSS"]
        train_step(model, optimizers[name], batches[0], autocast)
        results[name] = {"peak_step_mib": (memory_kib()["VmHWM"] - before) / 1024, "round_seconds": []}
        for ids in batches[:warmup]:
            train_step(model, optimizers[name], ids, autocast)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for ids in batches:
                train_step(model, optimizers[name], ids, autocast)
            results[name]["round_seconds"].append(time.perf_counter() - start)
    for name, model in models.items():
        seconds, median = min(results[name]["round_seconds"]), statistics.median(results[name]["round_seconds"])
        results[name].update(
            tokens_per_s=steps * batch * seq / seconds,
            step_ms=1000 * seconds / steps,
            median_tokens_per_s=steps * batch * seq / median,
        )
        model.zero_grad(set_to_none=True)
    return results


@torch.no_grad()
def bench_decode(models, position, tokens, vocab):
    generator = torch.Generator().manual_seed(position)
    prompt = torch.randint(0, vocab, (1, position), generator=generator)
    results = {}
    for name, model in models.items():
        model.eval()
        out = model(input_ids=prompt, use_cache=True)
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        next_id = out.logits[:, -1:].argmax(-1)
        timings = []
        for _ in range(tokens):
            start = time.perf_counter()
            out = model(input_ids=next_id, cache=cache, use_cache=True)
            next_id = out.logits[:, -1:].argmax(-1)
            timings.append(time.perf_counter() - start)
        timings = sorted(timings)[: max(1, int(0.8 * len(timings)))]  # drop the slowest fifth (scheduler noise)
        results[name] = {"ms_per_token": 1000 * sum(timings) / len(timings)}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=1088)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step at length 256 (scaled for 1024)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. the machine was busy)")
    parser.add_argument("--out", help="output path without suffix (default: benchmarks/ngt_<host kind>)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.warmup, args.decode_tokens = 2, 3, 1, 8
    torch.set_num_threads(torch.get_num_threads())
    models = build_models(args)
    host = host_info()
    report = {
        "host": host,
        "setup": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "command": "python scripts/bench_ngt.py" + (" --quick" if args.quick else ""),
            "note": args.note,
            "steps": args.steps,
            "rounds": args.rounds,
            "hidden": args.hidden,
            "layers": args.layers,
            "heads": args.heads,
            "vocab": args.vocab,
            "params": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
            "llama_intermediate_size": models["llama"].config.intermediate_size,
            "ngt_chunk_size": models["ngt"].config.gravity_chunk_size,
            "ngt_block_rows": {},
        },
        "training": {},
        "decode": {},
    }
    precisions = [("fp32", False)] + ([("bf16", True)] if bf16_is_fast("cpu") else [])
    report["setup"]["bf16_measured"] = len(precisions) == 2
    if len(precisions) == 1:
        print("this CPU has no native bf16 instructions: bf16 autocast is not measured", flush=True)
    for seq, batch in ((256, args.batch), (1024, max(1, args.batch // 4))):
        # queries per fused block: gravity_chunk_size, capped on CPUs by the cache budget of ops_ngt
        report["setup"]["ngt_block_rows"][f"seq{seq}"] = ops_ngt._block_rows(
            models["ngt"].config.gravity_chunk_size, batch * args.heads, seq, torch.device("cpu")
        )
        for precision, autocast in precisions:
            result = bench_training(models, seq, batch, args.steps, args.warmup, args.vocab, autocast, args.rounds)
            result["batch"] = batch
            result["throughput_ratio"] = result["ngt"]["tokens_per_s"] / result["llama"]["tokens_per_s"]
            result["median_throughput_ratio"] = (
                result["ngt"]["median_tokens_per_s"] / result["llama"]["median_tokens_per_s"]
            )
            result["peak_memory_ratio"] = result["ngt"]["peak_step_mib"] / result["llama"]["peak_step_mib"]
            report["training"][f"seq{seq}_{precision}"] = result
            print(f"train seq={seq} {precision}: {json.dumps(result)}", flush=True)
    for position in (64, 1024):
        result = bench_decode(models, position, args.decode_tokens, args.vocab)
        report["decode"][f"pos{position}"] = result
        print(f"decode pos={position}: {json.dumps(result)}", flush=True)
    decode = report["decode"]
    report["summary"] = {
        **{f"train_throughput_ratio_{key}": r["throughput_ratio"] for key, r in report["training"].items()},
        **{f"peak_memory_ratio_{key}": r["peak_memory_ratio"] for key, r in report["training"].items()},
        "ngt_decode_ms_pos1024_over_pos64": decode["pos1024"]["ngt"]["ms_per_token"]
        / decode["pos64"]["ngt"]["ms_per_token"],
        "llama_decode_ms_pos1024_over_pos64": decode["pos1024"]["llama"]["ms_per_token"]
        / decode["pos64"]["llama"]["ms_per_token"],
    }
    out = Path(args.out or ROOT / "benchmarks" / f"ngt_{report['host']['kind']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(report))
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def render_markdown(report):
    setup, host = report["setup"], report["host"]
    bf16 = "native bf16" if host["cpu_native_bf16"] else "no native bf16"
    blocks = ", ".join(f"{rows} at {seq[3:]}" for seq, rows in setup["ngt_block_rows"].items())
    lines = [
        "# NGT vs stock LlamaForCausalLM (same process, same batch)",
        "",
        f"Machine: {host['processor']}; torch CPU capability {host['cpu_capability']}, {bf16} "
        f"(CPU flags: {', '.join(host['cpu_flags']) or 'none listed'}). "
        f"{setup['threads']} threads, torch {setup['torch']}, transformers {setup['transformers']}.",
        *([f"Note: {setup['note']}"] if setup.get("note") else []),
        "",
        f"hidden {setup['hidden']}, {setup['layers']} layers, {setup['heads']} heads, vocab {setup['vocab']}; "
        f"parameters NGT {setup['params']['ngt']:,} / Llama {setup['params']['llama']:,} "
        f"(Llama intermediate {setup['llama_intermediate_size']}, SDPA attention); NGT query blocks: {blocks} tokens. "
        f"Command: `{setup['command']}`.",
        "",
        "## Training step (forward + backward + AdamW)",
        "",
        f"Tokens/s of the best of {setup['rounds']} rounds of {setup['steps']} steps (the models alternate round by "
        "round); the median ratio compares the median rounds.",
        "",
        *(
            []
            if setup.get("bf16_measured")
            else [
                "bf16 autocast is not measured: this CPU has no native bf16 instructions (AVX512-BF16/AMX), where "
                "PyTorch's emulated bf16 matmuls run hundreds of times slower than float32.",
                "",
            ]
        ),
        "| seq | precision | batch | NGT tok/s | Llama tok/s | throughput ratio | median ratio | NGT peak MiB "
        "| Llama peak MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in report["training"].items():
        seq, precision = key.split("_")
        lines.append(
            f"| {seq[3:]} | {precision} | {r['batch']} | {r['ngt']['tokens_per_s']:.0f} | {r['llama']['tokens_per_s']:.0f} | "
            f"{r['throughput_ratio']:.2f} | {r['median_throughput_ratio']:.2f} | {r['ngt']['peak_step_mib']:.0f} | "
            f"{r['llama']['peak_step_mib']:.0f} | {r['peak_memory_ratio']:.2f} |"
        )
    lines += ["", "## Decode (batch 1, cached)", "", "| position | NGT ms/token | Llama ms/token |", "|---|---|---|"]
    for key, r in report["decode"].items():
        lines.append(f"| {key[3:]} | {r['ngt']['ms_per_token']:.2f} | {r['llama']['ms_per_token']:.2f} |")
    s = report["summary"]
    lines += [
        "",
        f"NGT decode time at position 1024 / position 64: {s['ngt_decode_ms_pos1024_over_pos64']:.2f} "
        f"(Llama: {s['llama_decode_ms_pos1024_over_pos64']:.2f}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
