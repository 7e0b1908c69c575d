"""3-D PCA of an NGT's learned final-layer coordinates as an interactive plotly HTML page (point size and colour
by token mass).

    python scripts/visualize_coords.py MODEL_DIR --out coords.html [--text "ROMEO:\nWhat light..."] [--corpus FILE]
"""

import argparse
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_models.ngt.visualize_ngt import coordinates_html  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a saved or exported NGT folder")
    parser.add_argument("--out", type=Path, default=Path("coords.html"))
    parser.add_argument("--text", help="text to place (\\n for a line break)")
    parser.add_argument("--corpus", type=Path, help="take the text from the start of this file instead")
    args = parser.parse_args(argv)
    if args.corpus is not None:
        text = args.corpus.read_text(encoding="utf-8")[:4096]
    else:
        text = (args.text or "ROMEO:\nBut soft, what light through yonder window breaks?\n").replace("\\n", "\n")
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        coordinates_html(model, tokenizer, text, args.out, title=f"NGT coordinates of {args.model.name}")
    except ValueError as error:
        raise SystemExit(f"visualize_coords: {error}") from None
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
