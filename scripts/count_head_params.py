"""Each head of the head list at the recipe's size (ResNet-50 D8 features: 2048 channels into a
512-wide head, 19 classes), its parameter count into results/head_params.csv.

    scripts/run python scripts/count_head_params.py

The counts are what tests/unit/test_head_fidelity.py checks against the official layer lists; the
docs quote them from this file (tests/unit/test_docs.py checks the file against that test's table).
"""

import argparse
import csv
from pathlib import Path

from lit_seg.models.heads import HEADS

ROOT = Path(__file__).resolve().parents[1]
ENCODER_CHANNELS = [3, 256, 512, 1024, 2048]  # the head reads the last; as tests/unit/test_head_fidelity.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "results", help="folder of head_params.csv")
    args = parser.parse_args()
    rows = []
    for name, variant in HEADS.items():
        head = variant.build(ENCODER_CHANNELS, 19, channels=512)
        rows.append({"experiment": name, "head": variant.head.__name__,
                     "params": sum(p.numel() for p in head.parameters())})
    out = args.output_dir / "head_params.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out} ({len(rows)} heads)")


if __name__ == "__main__":
    main()
