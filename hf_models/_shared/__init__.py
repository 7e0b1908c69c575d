"""Canonical copies of the code blocks that several architectures ship (`shared_<topic>.py`).

A model folder must be self-contained on the Hub, so it cannot import from here: it imports its own byte-identical
copy (`from .shared_token_inputs import ...`). `sync()` writes those copies into every model folder whose shipped files
import them, and `sync(check=True)` reports drift without writing (run by the tests and by
`python scripts/sync_shared.py --check`).
"""

import re
from pathlib import Path


SHARED = Path(__file__).resolve().parent
PACKAGE = SHARED.parent
_IMPORT = re.compile(r"^from \.(shared_\w+) import", re.M)


def _wanted(folder):
    """The shared modules a model folder imports (from any of its files, transitively through the copies)."""
    names, todo = set(), [p for p in folder.glob("*.py") if not p.name.startswith("shared_")]
    while todo:
        for name in _IMPORT.findall(todo.pop().read_text(encoding="utf-8")):
            if name not in names:
                names.add(name)
                todo.append(SHARED / f"{name}.py")
    return names


def sync(check=False):
    """Copy each imported shared module into its model folders. Returns the list of problems (`check=True`: copies
    that are missing, differ from the canonical file, or are no longer imported) or of files written."""
    report = []
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        wanted = _wanted(folder)
        for name in sorted(wanted):
            canonical = SHARED / f"{name}.py"
            if not canonical.exists():
                report.append(f"{folder.name}: imports .{name}, which has no canonical file {canonical}")
                continue
            copy = folder / f"{name}.py"
            if copy.exists() and copy.read_bytes() == canonical.read_bytes():
                continue
            if check:
                report.append(f"{folder.name}/{name}.py is {'out of date' if copy.exists() else 'missing'}")
            else:
                copy.write_bytes(canonical.read_bytes())
                report.append(f"wrote {copy.relative_to(PACKAGE.parent)}")
        for stale in sorted(folder.glob("shared_*.py")):
            if stale.stem not in wanted:
                report.append(f"{folder.name}/{stale.name} is not imported by the model (delete it)")
    return report
