"""What a launcher of `lit-seg ablate` adds to each run: from the command's start to the run's first
training step, and from its last step to its row in the results file, for the local launcher and
(with a SLURM cluster: scripts/slurm_cluster.sh) the SLURM launcher.

    scripts/run python scripts/measure_launcher_overhead.py [--launchers local slurm] [--repeats 2]

Each measurement is a fresh ablation (in a scratch folder) of one tiny run of `experiments/fcn.yaml`
(one epoch of 3 steps at 64x64): the command's start and the results file's write are timed here,
the run's first and last training steps come from its `summary.json` (`first_step_at`,
`last_step_at`, written by the run itself). Run it with nothing else on the machine. Writes
`results/benchmark/launcher_overhead.{csv,md}`.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
        "--data.init_args.train_size=48", "--data.init_args.val_size=8", "--data.init_args.task=global",
        "--data.init_args.image_size=[64, 64]", "--data.init_args.num_workers=0"]
LAUNCH = {"local": ["--launcher", "local"],
          "slurm": ["--launcher", "slurm", "--cpus-per-task", "1", "--mem-gb", "4", "--timeout-min", "10"]}


def once(launcher: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "lit_seg", "ablate", "--experiments-dir", str(ROOT / "experiments"),
                   "--name", "overhead", "--experiments", "fcn", "--seeds", "0", "--no-cost", "--output_dir",
                   folder, *LAUNCH[launcher], "--", *TINY]
        env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
        start = time.time()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"{launcher}: ablate failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        written = os.path.getmtime(Path(folder) / "overhead.csv")
        (summary,) = Path(folder).glob("runs/ablations/overhead/*/*/*/summary.json")
        times = json.loads(summary.read_text())
        return {"launcher": launcher, "to_first_step_s": round(times["first_step_at"] - start, 2),
                "training_s": round(times["last_step_at"] - times["first_step_at"], 2),
                "last_step_to_row_s": round(written - times["last_step_at"], 2),
                "command_s": round(time.time() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launchers", nargs="+", choices=list(LAUNCH), default=list(LAUNCH))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "results" / "benchmark")
    args = parser.parse_args()
    rows = [once(launcher) for launcher in args.launchers for _ in range(args.repeats)]
    for row in rows:
        print(row, flush=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with (args.output_dir / "launcher_overhead.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sys.path.insert(0, str(ROOT))
    from lit_seg.api.environment import cpu_summary

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    lines = ["# What a launcher adds to each run\n",
             f"`scripts/run python scripts/measure_launcher_overhead.py` ({time.strftime('%Y-%m-%d %H:%M')}, commit "
             f"{commit.stdout.strip()}, {cpu_summary()}, nothing else running): one tiny run "
             f"of `experiments/fcn.yaml` per ablation (3 steps at 64x64); medians of {args.repeats}.\n",
             "| launcher | command start to first step (s) | first to last step (s) | last step to results row (s) |",
             "|---|---|---|---|"]
    for launcher in args.launchers:
        mine = [r for r in rows if r["launcher"] == launcher]
        lines.append(f"| {launcher} | " + " | ".join(
            f"{statistics.median(r[key] for r in mine):.1f}" for key in ("to_first_step_s", "training_s",
                                                                          "last_step_to_row_s")) + " |")
    (args.output_dir / "launcher_overhead.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output_dir / 'launcher_overhead.csv'} and .md")


if __name__ == "__main__":
    main()
