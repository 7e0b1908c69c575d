"""The `hf-models` command (also `python -m hf_models.cli`).

hf-models train CONFIG.yaml [--resume] [--<field> VALUE ...]
                           train with transformers.Trainer; fields of the YAML's model/data/training sections
                           (TrainingArguments included) can be overridden, e.g. --max_steps 20 --output_dir runs/x
hf-models evaluate FOLDER [--corpus FILE | --image-dataset SOURCE [--eval-split S] [--max-eval-samples N]]
                          [--output FILE]
                           text: validation loss, perplexity, bits per character; images: accuracy and loss on the
                           run's eval split (an exported image folder names its data). Printed, and written to
                           --output, else to FOLDER/eval_results.json for a run on its own data
hf-models export RUN_DIR OUT_DIR [--repo-id ID]
                           a run's final model (or newest checkpoint) -> a Hub-ready folder with its model card
hf-models push OUT_DIR REPO_ID [--private] [--revision R]
                           upload an exported folder with huggingface_hub
hf-models chat FOLDER      type prompts, read continuations (sampled) from a saved text model
hf-models list             the architectures, their model types and Auto classes
hf-models audit FOLDER [--json]
                           before trust_remote_code: what the folder's code can do (processes, code from strings,
                           network, pickles: refused; native builds, file writes, environment: reported) and whether
                           it works as Hub remote code (static; nothing is run)
"""

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoConfig
from transformers.hf_argparser import string_to_bool

from . import ARCHITECTURES
from .hub import audit_folder


def _list(_args):
    for name in ARCHITECTURES:
        model_type = f"hfm_{name}"
        config_class = AutoConfig.for_model(model_type).__class__
        auto_map = config_class().auto_map
        print(f"{name:14s} model_type={model_type:18s} {', '.join(sorted(auto_map))}")
    return 0


def _audit(args):
    from .hub.capabilities import pickle_files, render_report, scan_folder

    folder_config = (
        json.loads((args.folder / "config.json").read_text()) if (args.folder / "config.json").exists() else {}
    )
    required = [key for key in (folder_config.get("auto_map") or {}) if key != "AutoConfig"]
    problems = audit_folder(args.folder, required)
    findings = scan_folder(args.folder)
    if args.json:
        report = {
            "folder": str(args.folder),
            "ok": not problems,
            "problems": problems,
            "capabilities": [finding.as_dict() for finding in findings],
            "pickle_files": pickle_files(args.folder),
        }
        print(json.dumps(report, indent=2))
        return 1 if problems else 0
    report = render_report(findings, pickle_files(args.folder))
    print("what the code can do when it runs:" if report else "what the code can do when it runs: nothing outside "
          "the model (no processes, code from strings, network, pickles, native builds, file writes or environment)")  # fmt: skip
    for line in report:
        print(f"  {line}")
    for problem in problems:
        print(problem)
    print(f"{args.folder}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _train(args):
    from .training.arguments import parse_train_args
    from .training.run import train

    model_args, data_args, training_args = parse_train_args(args.config, args.overrides)
    results = train(model_args, data_args, training_args, resume=args.resume)
    if results is not None:
        print(json.dumps(results, indent=2))
    return 0


def _task_options():
    """Every task's `hf-models evaluate` options: name -> (help, type), from the task registry."""
    import dataclasses

    from .tasks import TASKS

    options = {}
    for task in TASKS.values():
        types = {item.name: item.type for item in dataclasses.fields(task.data_arguments)}
        for name, help_text in task.evaluate_options.items():
            kind = types.get(name)
            parse = {int: int, int | None: int, float: float, float | None: float, bool: string_to_bool}.get(kind, str)
            options[name] = (help_text, parse)
    return options


def _add_task_options(command):
    for name, (help_text, kind) in _task_options().items():
        command.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=help_text)


def _evaluate(args):
    from .training.run import EVAL_RESULTS_NAME, evaluate_and_record

    options = {name: getattr(args, name) for name in _task_options()}
    results, written = evaluate_and_record(args.folder, output=args.output, **options)
    print(json.dumps(results, indent=2))
    if written is not None:
        print(f"hf-models evaluate: results written to {written}", file=sys.stderr)
    else:
        print(
            f"hf-models evaluate: results not written: {args.folder / EVAL_RESULTS_NAME} stays as it is (an "
            "export's is what its card reports, a run's is its evaluation on its own data); pass --output FILE to "
            "save them",
            file=sys.stderr,
        )
    return 0


def _export(args):
    from .hub.export import export

    print(f"exported {export(args.run_dir, args.out_dir, repo_id=args.repo_id)}")
    return 0


def _push(args):
    from .hub.export import push

    commit = push(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"uploaded {args.folder} to {args.repo_id}: {commit}")
    return 0


def _chat(args):
    from .chat import chat

    chat(args.folder, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="hf-models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model from a YAML config (configs/train/)")
    train.add_argument("config", help="configs/train/<name>_<dataset>_<size>.yaml")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    train.set_defaults(func=_train)
    evaluate = commands.add_parser("evaluate", help="evaluate a run or model folder on held-out text or images")
    evaluate.add_argument("folder", type=Path)
    _add_task_options(evaluate)
    evaluate.add_argument(
        "--output",
        type=Path,
        help="write the results to this JSON file (default: FOLDER/eval_results.json, only for a run folder "
        "evaluated on its own data; an export's file stays what its card reports)",
    )
    evaluate.set_defaults(func=_evaluate)
    export = commands.add_parser("export", help="a run -> a Hub-ready folder with a generated model card")
    export.add_argument("run_dir", type=Path)
    export.add_argument("out_dir", type=Path)
    export.add_argument("--repo-id", help="the Hub id the card's usage snippets load (default: the folder path)")
    export.set_defaults(func=_export)
    push = commands.add_parser("push", help="upload an exported folder to the Hub")
    push.add_argument("folder", type=Path)
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", help="branch to upload to (created if missing)")
    push.set_defaults(func=_push)
    chat = commands.add_parser("chat", help="interactive generation from a saved text model")
    chat.add_argument("folder", type=Path)
    chat.add_argument("--max-new-tokens", type=int, default=200)
    chat.add_argument("--temperature", type=float, default=0.8)
    chat.set_defaults(func=_chat)
    commands.add_parser("list", help="the architectures").set_defaults(func=_list)
    audit = commands.add_parser("audit", help="static remote-code audit of a saved model folder")
    audit.add_argument("folder", type=Path)
    audit.add_argument("--json", action="store_true", help="the problems and the capability report as JSON")
    audit.set_defaults(func=_audit)
    return parser


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for name in ("folder", "run_dir"):
        path = getattr(args, name, None)
        if path is not None and not path.is_dir():
            print(f"hf-models {args.command}: not a folder: {path}", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except (ValueError, OSError) as error:
        # bad input, a missing or unreadable file, an unreachable Hub: one line naming it instead of a traceback
        print(f"hf-models {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
