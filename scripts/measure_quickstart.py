"""Measure the README's quick-start claim: wall time and val/mIoU of the demo runs, several seeds.

    scripts/run python scripts/measure_quickstart.py                  # ccnet_r2 and fcn, seeds 0 1 2
    scripts/run python scripts/measure_quickstart.py --experiments ccnet_r2 --seeds 0

Each run is exactly the README's command (`lightning fit --config experiments/<name>.yaml`,
plus `--seed_everything <seed>`), in a fresh process, timed from start to exit. Writes
results/quickstart.csv (with each run's precision, commit and CPU from its record) and prints a
markdown table (mean ± std over seeds). Run it with nothing else on the machine.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_seg.api import read_run  # noqa: E402
from lit_seg.api.environment import cpu_summary  # noqa: E402


def run(experiment: str, seed: int) -> dict:
    command = [sys.executable, "-m", "lit_seg", "fit", "--config", f"experiments/{experiment}.yaml",
               "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    folder = ROOT / next(line.split("run folder ", 1)[1] for line in done.stderr.splitlines()
                         if line.startswith("lit-seg: run folder "))
    summary = json.loads((folder / "summary.json").read_text())
    record = read_run(folder)
    return {
        "experiment": experiment,
        "seed": seed,
        "wall_s": round(wall, 1),
        "val_mIoU_best": round(summary["val/mIoU_best"], 4),
        "val_mIoU_final": round(summary["metrics"]["val/mIoU"], 4),
        "steps": summary["global_step"],
        "precision": record.precision,
        "commit": (record.code or {}).get("commit", "")[:7],
        "cpu": cpu_summary(),
        "run_folder": str(folder.relative_to(ROOT)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["ccnet_r2", "fcn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output_dir", type=Path, default=ROOT / "results", help="folder of quickstart.csv")
    args = parser.parse_args()

    rows = []
    for experiment in args.experiments:
        for seed in args.seeds:
            rows.append(run(experiment, seed))
            print(json.dumps(rows[-1]), flush=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with (args.output_dir / "quickstart.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    print(f"\n| experiment | val/mIoU (best, mean ± std over {len(args.seeds)} seeds) | wall time per run (s) |")
    print("|---|---|---|")
    for experiment in args.experiments:
        mine = [r for r in rows if r["experiment"] == experiment]
        miou = [r["val_mIoU_best"] for r in mine]
        wall = [r["wall_s"] for r in mine]
        std = statistics.stdev(miou) if len(miou) > 1 else 0.0
        print(f"| {experiment} | {statistics.mean(miou):.3f} ± {std:.3f} "
              f"| {statistics.mean(wall):.0f} (max {max(wall):.0f}) |")


if __name__ == "__main__":
    main()
