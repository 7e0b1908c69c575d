"""The Python blocks of a generated model card, found and checked to be laid out as the project's own code is (`ruff
format` with pyproject.toml's settings): a card's usage example reads like the code beside it."""

import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def assert_formatted(code, name="card_snippet.py"):
    """`ruff format` (the project's settings) leaves `code` as it is."""
    check = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "--diff", "--stdin-filename",
                            str(ROOT / "tests" / name), "-"], input=code, cwd=ROOT, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert check.returncode == 0, f"{name} is not formatted:\n{check.stdout}{check.stderr}"


def python_blocks(markdown):
    """The code of each ```python block of `markdown`, in order."""
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def card_snippets(folder, count=2):
    """The `count` Python blocks of `folder`/README.md, each one that `ruff format` leaves as it is."""
    snippets = python_blocks((Path(folder) / "README.md").read_text())
    assert len(snippets) == count, f"{len(snippets)} Python blocks in the card, not {count}"
    for index, snippet in enumerate(snippets):
        assert_formatted(snippet, f"card_snippet_{index}.py")
    return snippets
