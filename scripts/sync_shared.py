"""Copy hf_models/_shared/shared_*.py into the model folders that import them (`--check`: report drift only).

python scripts/sync_shared.py            # after editing a file in hf_models/_shared/
python scripts/sync_shared.py --check    # exit 1 if any copy is missing or differs
"""

import argparse
import importlib.util
import sys
from pathlib import Path


# Loaded from its file: importing the hf_models package would need the very copies this script writes.
_spec = importlib.util.spec_from_file_location(
    "hfm_shared_sync", Path(__file__).resolve().parents[1] / "hf_models" / "_shared" / "__init__.py"
)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
sync = _module.sync


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    report = sync(check=args.check)
    for line in report:
        print(line)
    return 1 if args.check and report else 0


if __name__ == "__main__":
    sys.exit(main())
