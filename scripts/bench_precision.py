"""bf16 autocast against float32 for training NGT's `small` config (and a stock Llama of the same size).

Both precisions start from the same weights and see the same tinyshakespeare batches (characters, the small
config's block and batch), so the two loss curves can be compared step by step. Reported per model: training
tokens/s in each precision (after warmup steps), the bf16/fp32 throughput ratio, and how far the bf16 loss curve
is from the fp32 one.

bf16 only pays where the hardware has it: CUDA GPUs with bf16, and CPUs with AVX512-BF16 or AMX. On other CPUs
PyTorch emulates bf16 matrix products and bf16 runs many times slower than float32; the script still measures
it (with --emulated-steps steps, as a full curve would take hours) and says so in the report.

    python scripts/bench_precision.py                 # writes benchmarks/precision_<host kind>.json and .md
    python scripts/bench_precision.py --device cuda   # on a GPU
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import hf_models  # noqa: E402, F401  (registers hfm_ngt)
from hf_models.data import char_tokenizer, load_text_splits, pack_blocks  # noqa: E402
from hf_models.training import bf16_is_fast, host_info  # noqa: E402


def build_models(vocab_size, block_size):
    ngt_config = AutoConfig.from_pretrained(str(ROOT / "configs" / "models" / "ngt" / "small.json"))
    ngt_config.vocab_size, ngt_config.max_position_embeddings = vocab_size, max(block_size, 256)
    torch.manual_seed(0)
    ngt = AutoModelForCausalLM.from_config(ngt_config)
    hidden, layers = ngt_config.hidden_size, ngt_config.num_hidden_layers
    # the SwiGLU MLP has three matrices: the intermediate size that matches NGT's parameter count
    non_mlp = vocab_size * hidden + layers * (4 * hidden * hidden + 2 * hidden) + hidden
    intermediate = max(1, round((ngt.num_parameters() - non_mlp) / (3 * hidden * layers)))
    llama_config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=ngt_config.num_attention_heads, intermediate_size=intermediate,
        max_position_embeddings=ngt_config.max_position_embeddings, tie_word_embeddings=True,
        attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    return {"ngt": ngt, "llama": AutoModelForCausalLM.from_config(llama_config)}


def run(model, state, batches, device, bf16, warmup):
    """Train a copy of the weights in `state` on `batches`; returns the per-step losses and tokens/s after warmup."""
    model.load_state_dict(state)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, fused=device == "cuda")
    losses, start = [], None
    for step, ids in enumerate(batches):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        ids = ids.to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if device == "cuda":
        torch.cuda.synchronize()
    timed = len(batches) - warmup
    seconds = time.perf_counter() - start
    return losses, timed * batches[0].numel() / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=150, help="steps per run where bf16 is native")
    parser.add_argument("--emulated-steps", type=int, default=4, help="steps per run where bf16 is emulated")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument(
        "--out",
        help="output path without suffix (default: benchmarks/precision_<host kind>: cpu_native_bf16, "
        "cpu_emulated_bf16 or cuda)",
    )
    args = parser.parse_args(argv)

    native = bf16_is_fast(args.device)
    steps = args.steps if native else args.emulated_steps
    if steps <= args.warmup:
        raise SystemExit(f"--steps/--emulated-steps ({steps}) must exceed --warmup ({args.warmup})")
    splits = load_text_splits(args.corpus)
    tokenizer = char_tokenizer([splits["train"][0]["text"], splits["validation"][0]["text"]])
    blocks = pack_blocks(splits["train"], tokenizer, args.block_size)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(blocks), generator=generator)[: steps * args.batch_size].tolist()
    ids = torch.tensor(blocks.select(order)["input_ids"]).view(steps, args.batch_size, args.block_size)
    batches = list(ids)

    report = {"models": {}}
    for name, model in build_models(len(tokenizer), args.block_size).items():
        state = {key: value.clone() for key, value in model.state_dict().items()}
        fp32_losses, fp32_rate = run(model, state, batches, args.device, False, args.warmup)
        bf16_losses, bf16_rate = run(model, state, batches, args.device, True, args.warmup)
        gaps = [abs(a - b) for a, b in zip(fp32_losses, bf16_losses, strict=True)]
        report["models"][name] = {
            "parameters": model.num_parameters(),
            "fp32_tokens_per_second": round(fp32_rate, 1),
            "bf16_tokens_per_second": round(bf16_rate, 1),
            "bf16_over_fp32": round(bf16_rate / fp32_rate, 4),
            "max_abs_loss_gap": round(max(gaps), 4),
            "final_loss_fp32": round(fp32_losses[-1], 4),
            "final_loss_bf16": round(bf16_losses[-1], 4),
            "loss_fp32": [round(x, 4) for x in fp32_losses],
            "loss_bf16": [round(x, 4) for x in bf16_losses],
        }
        print(name, json.dumps({k: v for k, v in report["models"][name].items() if not k.startswith("loss_")}),
              flush=True)  # fmt: skip
    report["environment"] = {**host_info(), "device": args.device, "native_bf16": native}
    report["setup"] = {"steps": steps, "warmup": args.warmup, "batch_size": args.batch_size,
                       "block_size": args.block_size, "command": "python scripts/bench_precision.py"}  # fmt: skip
    kind = "cuda" if args.device == "cuda" else "cpu_native_bf16" if native else "cpu_emulated_bf16"
    out = Path(args.out or ROOT / "benchmarks" / f"precision_{kind}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(report))


def render_markdown(report):
    env, setup = report["environment"], report["setup"]
    lines = [
        "# bf16 autocast vs float32 training (NGT small config, and a stock Llama of the same size)",
        "",
        f"torch {env['torch']}, transformers {env['transformers']}, {env['device']} ({env['processor']}, torch CPU "
        f"capability {env['cpu_capability']}), {env['threads']} threads. Native bf16: {'yes' if env['native_bf16'] else 'no'}. Same initial weights and "
        f"batches in both precisions: {setup['steps']} steps of batch {setup['batch_size']} x {setup['block_size']} "
        f"characters of tinyshakespeare, AdamW lr 3e-3, {setup['warmup']} warmup step(s) not timed. "
        f"Command: `{setup['command']}`.",
        "",
        "| model | parameters | fp32 tok/s | bf16 tok/s | bf16 / fp32 | max loss gap | final loss fp32 | final loss bf16 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["models"].items():
        lines.append(
            f"| {name} | {row['parameters']:,} | {row['fp32_tokens_per_second']:.0f} | "
            f"{row['bf16_tokens_per_second']:.0f} | {row['bf16_over_fp32']:.3f} | {row['max_abs_loss_gap']:.4f} | "
            f"{row['final_loss_fp32']:.4f} | {row['final_loss_bf16']:.4f} |"
        )
    if not env["native_bf16"]:
        lines += [
            "",
            "This processor has no native bf16 instructions (no AVX512-BF16, no AMX): PyTorch emulates bf16 matrix "
            "products, so bf16 autocast is slower than float32 here and `precision: auto` trains in float32. The "
            "ratio target (bf16 at least 1.8x fp32) needs a CPU with AVX512-BF16/AMX or a GPU; run this script "
            "there (`--device cuda` on a GPU).",
        ]
    lines += ["", "## Loss per step", "", "| model | step | fp32 | bf16 |", "|---|---|---|---|"]
    for name, row in report["models"].items():
        lines += [
            f"| {name} | {i} | {a:.4f} | {b:.4f} |"
            for i, (a, b) in enumerate(zip(row["loss_fp32"], row["loss_bf16"], strict=True))
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
