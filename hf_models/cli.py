"""The `hf-models` command (also `python -m hf_models.cli`).

hf-models list             the architectures, their model types and Auto classes
hf-models audit FOLDER     check that a saved model folder works as Hub remote code (static audit)
"""

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoConfig

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
    folder_config = (
        json.loads((args.folder / "config.json").read_text()) if (args.folder / "config.json").exists() else {}
    )
    required = [key for key in (folder_config.get("auto_map") or {}) if key != "AutoConfig"]
    problems = audit_folder(args.folder, required)
    for problem in problems:
        print(problem)
    print(f"{args.folder}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="hf-models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the architectures").set_defaults(func=_list)
    audit = commands.add_parser("audit", help="static remote-code audit of a saved model folder")
    audit.add_argument("folder", type=Path)
    audit.set_defaults(func=_audit)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "folder", None) is not None and not args.folder.is_dir():
        print(f"hf-models: not a folder: {args.folder}", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
