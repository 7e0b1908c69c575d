"""Draw the attention masks of a LowRank ICL config (the local block-diagonal and the sparse summary layers) as a PNG.

python scripts/visualize_masks.py                                   # the recommended config, V=20, C=3
python scripts/visualize_masks.py --config configs/models/lowrank_icl/tiny.json --num-tables 6 --out /tmp/m.png
"""

import argparse
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    from hf_models import LowRankIclConfig
    from hf_models.lowrank_icl.visualize_lowrank_icl import plot_masks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "models" / "lowrank_icl" / "small.json"))
    parser.add_argument("--num-tables", type=int, default=None, help="V (default: the config's)")
    parser.add_argument("--bidirectional", action="store_true", help="draw the masks without causality")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "lowrank_icl_masks.png"))
    args = parser.parse_args(argv)
    config = LowRankIclConfig.from_pretrained(args.config)
    if args.bidirectional:
        config.is_causal = False
    densities = plot_masks(config, args.out, args.num_tables)
    for kind, value in densities.items():
        print(f"{kind}: {100 * value:.2f}% of the pairs allowed")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
