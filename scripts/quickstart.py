"""Train a small NGT on tinyshakespeare (characters), save it as a Hub-ready folder, reload it through
`trust_remote_code` in a fresh process that cannot import hf_models, and print a generated sample.

    python scripts/quickstart.py                                  # about 7 minutes on 2 CPU cores
    python scripts/quickstart.py --max-steps 50 --out runs/smoke  # a quick smoke run

The corpus defaults to ../shared/data/tinyshakespeare.txt beside the checkout; pass --corpus for another text file.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from transformers import GenerationConfig, Trainer, TrainingArguments


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_models import NgtConfig, NgtForCausalLM  # noqa: E402
from hf_models.data import char_tokenizer, load_text_splits, pack_blocks  # noqa: E402
from hf_models.hub import audit_folder, run_isolated_pipeline  # noqa: E402
from hf_models.training import bf16_is_fast  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "quickstart"))
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a field of configs/models/ngt/small.json (VALUE parsed as JSON, else a string), "
        "e.g. --set gravity_kernel=attractive --set self_attention=true",
    )  # fmt: skip
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--sample-tokens", type=int, default=240)
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bf16 autocast (default: where the device has native bf16, CPUs with AVX512-BF16/AMX included)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    print(f"[1/4] corpus {args.corpus}", flush=True)
    splits = load_text_splits(args.corpus)
    tokenizer = char_tokenizer([splits["train"][0]["text"], splits["validation"][0]["text"]])
    train = pack_blocks(splits["train"], tokenizer, args.block_size)
    validation = pack_blocks(splits["validation"], tokenizer, args.block_size)
    print(f"      {len(tokenizer)} characters, {len(train)} training blocks of {args.block_size}", flush=True)

    config = NgtConfig.from_json_file(str(ROOT / "configs" / "models" / "ngt" / "small.json"))
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    config.max_position_embeddings = max(config.max_position_embeddings, args.block_size)
    for assignment in args.set:
        field, _, value = assignment.partition("=")
        if not hasattr(config, field):
            raise SystemExit(f"--set {assignment}: NgtConfig has no field {field!r}")
        try:
            setattr(config, field, json.loads(value))
        except json.JSONDecodeError:
            setattr(config, field, value)  # a bare string
    try:
        config = NgtConfig(**config.to_dict())  # re-validates the overridden fields
    except ValueError as error:
        raise SystemExit(f"--set: {error}") from None
    torch.manual_seed(0)
    model = NgtForCausalLM(config)
    print(f"[2/4] training NGT ({model.num_parameters():,} parameters) for {args.max_steps} steps", flush=True)
    training_args = TrainingArguments(
        output_dir=str(out / "run"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=32,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 20),
        weight_decay=0.1,
        max_grad_norm=1.0,
        bf16=bf16_is_fast() if args.bf16 is None else args.bf16,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=max(1, args.max_steps // 20),
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        seed=0,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train)
    trainer.train()
    metrics = trainer.evaluate(validation.select(range(min(len(validation), 256))))
    val_loss = metrics["eval_loss"]
    print(f"      validation loss {val_loss:.3f} (perplexity {math.exp(val_loss):.2f})", flush=True)

    export = out / "model"
    print(f"[3/4] saving a Hub-ready folder to {export}", flush=True)
    model.generation_config = GenerationConfig(pad_token_id=tokenizer.pad_token_id, max_length=args.block_size)
    model.save_pretrained(export)
    tokenizer.save_pretrained(export)
    (export / "eval_results.json").write_text(
        json.dumps({"eval_loss": val_loss, "perplexity": math.exp(val_loss)}, indent=2)
    )
    problems = audit_folder(export, ("AutoModel", "AutoModelForCausalLM"))
    if problems:
        raise SystemExit("the exported folder fails the remote-code audit:\n" + "\n".join(problems))

    print("[4/4] reloading through trust_remote_code in a fresh process without hf_models", flush=True)
    new_tokens = min(args.sample_tokens, args.block_size - len(tokenizer(args.prompt)["input_ids"]))
    text, module = run_isolated_pipeline(export, args.prompt, max_new_tokens=new_tokens, seed=0)
    print(f"      loaded {module}\n" + "-" * 60 + f"\n{text}\n" + "-" * 60, flush=True)


if __name__ == "__main__":
    main()
