"""The main job in one command: train a small NGT on tinyshakespeare (characters), evaluate it, export it as a
Hub-ready folder with its generated model card, reload the export through `trust_remote_code` in a fresh process
that cannot import hf_models, and print a sample from `pipeline("text-generation")`.

It runs the same code as the `hf-models` pipeline:

    hf-models train configs/train/ngt_tinyshakespeare_small.yaml --output_dir runs/quickstart/run --max_steps ...
    hf-models export runs/quickstart/run runs/quickstart/model

    python scripts/quickstart.py                                  # about 8 minutes on 2 CPU cores
    python scripts/quickstart.py --max-steps 50 --out runs/smoke  # a quick smoke run

The corpus defaults to ../shared/data/tinyshakespeare.txt beside the checkout; pass --corpus for another text file.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_models.hub.export import export  # noqa: E402
from hf_models.tasks import task_of_folder  # noqa: E402
from hf_models.training.arguments import parse_train_args  # noqa: E402
from hf_models.training.run import train  # noqa: E402


CONFIG = "configs/train/ngt_tinyshakespeare_small.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "quickstart"), help="run/ and model/ go here")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a field of the model config (VALUE parsed as JSON, else a string), "
        "e.g. --set gravity_kernel=attractive --set self_attention=true",
    )  # fmt: skip
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--sample-tokens", type=int, default=300)
    parser.add_argument("--fresh", action="store_true", help="delete --out first (otherwise it must be new)")
    return parser.parse_args(argv)


def model_overrides(assignments):
    overrides = {}
    for assignment in assignments:
        field, sep, value = assignment.partition("=")
        if not sep or not field:
            raise SystemExit(f"--set {assignment!r}: expected FIELD=VALUE")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value  # a bare string
    return overrides


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: pass --fresh to replace it, or --out for another folder")
    run_dir, model_dir = out / "run", out / "model"
    overrides = ["--output_dir", str(run_dir), "--corpus", args.corpus, "--report_to", "none",
                  "--max_steps", str(args.max_steps), "--warmup_steps", str(max(1, args.max_steps // 20)),
                  "--eval_steps", str(max(1, args.max_steps // 4)), "--save_steps", str(max(1, args.max_steps // 4))]  # fmt: skip
    if args.set:  # merged on top of the config's own overrides
        overrides += ["--model_overrides", json.dumps(model_overrides(args.set))]
    try:
        model_args, data_args, training_args = parse_train_args(CONFIG, overrides)
        print(f"[1/4] training NGT ({CONFIG}) on {data_args.corpus} for {training_args.max_steps} steps", flush=True)
        results = train(model_args, data_args, training_args)  # ends with `hf-models evaluate`'s measurement

        print(f"[2/4] evaluation on the held-out 10% of the text ({run_dir / 'eval_results.json'})", flush=True)
        print(
            f"      validation loss {results['eval_loss']:.3f} nats/char, perplexity {results['perplexity']:.2f}, "
            f"{results['bits_per_character']:.3f} bits/char",
            flush=True,
        )

        print(f"[3/4] exporting a Hub-ready folder with its model card to {model_dir}", flush=True)
        export(run_dir, model_dir)
    except ValueError as error:
        raise SystemExit(f"quickstart: {error}") from None
    print("      " + ", ".join(sorted(p.name for p in model_dir.iterdir())), flush=True)

    print("[4/4] reloading the export with pipeline('text-generation', trust_remote_code=True) in a fresh process "
          "that cannot import hf_models", flush=True)  # fmt: skip
    positions = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    new_tokens = min(args.sample_tokens, positions - len(args.prompt))  # characters: one token each
    text, info = task_of_folder(model_dir).run_pipeline(model_dir, args.prompt, max_new_tokens=new_tokens, seed=0)
    print(f"      loaded {info['model_module']}\n" + "-" * 60 + f"\n{text}\n" + "-" * 60, flush=True)


if __name__ == "__main__":
    main()
