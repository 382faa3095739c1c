"""Run an ablation: experiments x seeds (x tasks), one after another, one results row per run.

    lit-seg ablate experiments/ablations/ccnet_recurrence.yaml
    lit-seg ablate experiments/ablations/all_heads.yaml --seeds 0
    lit-seg ablate experiments/ablations/tasks.yaml --tasks reach binding
    lit-seg ablate --name my_study --experiments 'ccnet_r*' fcn --seeds 0 1 2 \\
        -- --trainer.max_epochs=2 --model.optimizer.init_args.lr=0.05

An ablation file (``experiments/ablations/*.yaml``) names the experiments (file names or globs
under ``experiments/``), the seeds, command-line overrides applied to every run, and optionally
tasks (overlays under ``experiments/tasks/``, by name, or paths of YAML files)::

    description: Does a second criss-cross step help, and at what cost?
    experiments: [fcn, ccnet_r1, ccnet_r2, ccnet_r3]
    seeds: [0, 1, 2]
    overrides: [--trainer.max_epochs=2]
    tasks: [reach, recurrence]    # optional: every experiment on every task

Each run is ``python -m lit_seg fit --config <experiment> [--config <task>] --seed_everything
<seed> --group <ablation> <overrides>`` in its own process, its output in
``runs/ablations/<ablation>/`` (in a subfolder per set of overrides, :func:`log_folder`). After
each run one row goes into ``results/<ablation>.csv``
(rewritten atomically): experiment, task (the overlay's name; empty without tasks), head and its
options, seed, best and final ``val/mIoU``, pixel accuracy, per-class IoU, the attention's
query dependence (``summary.json``'s, :mod:`lit_seg.inference.query_dependence`), parameters,
the head's FLOPs, latency and peak memory (measured once per experiment and task by the cost
harness, lit_seg/study/harness.py, at the training batch and image size), steps, wall time, W&B
run id and run folder. Runs with a finished row are skipped, so an interrupted ablation resumes where it stopped:
a run cut off midway (Ctrl-C, SIGTERM, kill) goes on from its last checkpoint in its own folder
(``lit-seg fit --resume``); failed runs get a ``failed`` row and are retried next time.
``--jobs N`` runs N at a time with cores/N threads each (results then match other runs at that
thread count, not bit for bit the 2-thread README command: see the README on determinism).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from lit_seg.cli import merged_config, run_lock
from lit_seg.cli.run_folder import RUNS_DIR
from lit_seg.errors import ConfigError, RunError
from lit_seg.study import columns as columns_

# Relative to the working directory, as the run folders (runs/): run from the repository root.
EXPERIMENTS = Path("experiments")
TASKS = "tasks"  # task overlays: <experiments-dir>/tasks/<name>.yaml
MIB = 2**20

EXIT_MARK = "# ablate: exit code "
PID_MARK = "# ablate: pid "


# --- the plan ------------------------------------------------------------------------------------


def experiment_files(patterns: Sequence[str], root: Path = EXPERIMENTS) -> list[Path]:
    """Experiment YAMLs for names, globs (``ccnet_*``) or paths; ``base.yaml`` files never match a glob."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            matches = [path]
        else:
            name = pattern if pattern.endswith((".yaml", ".yml")) else pattern + ".yaml"
            is_glob = any(c in pattern for c in "*?[")
            matches = sorted(p for p in root.glob(name) if not (is_glob and p.name == "base.yaml"))
        if not matches:
            raise ConfigError(f"no experiment matches {pattern!r} under {root} "
                              f"(have: {', '.join(sorted(p.stem for p in root.glob('*.yaml') if p.stem != 'base'))})")
        found += [m for m in matches if m not in found]
    return found


def task_files(names: Sequence[str], root: Path = EXPERIMENTS / TASKS) -> list[Path]:
    """Task overlays for names (``reach``: ``<root>/reach.yaml``) or paths of YAML files."""
    found: list[Path] = []
    for name in names:
        path = Path(name)
        if not (path.suffix in (".yaml", ".yml") and path.is_file()):
            path = root / (name if name.endswith((".yaml", ".yml")) else name + ".yaml")
        if not path.is_file():
            raise ConfigError(f"unknown task {name!r}: no {path} (have: "
                              f"{', '.join(sorted(p.stem for p in root.glob('*.yaml'))) or 'none'}); "
                              f"give one of those or a YAML file's path")
        found += [path] if path not in found else []
    return found


def plan_runs(experiments: Sequence[Path], tasks: Sequence[Path | None], seeds: Sequence[int]
              ) -> list[tuple[Path, Path | None, int]]:
    """(experiment, task, seed) of every run. Seed-major, then task: a partly done ablation
    already has every experiment on every task for its first seed. ``tasks`` [None]: no overlay."""
    return [(e, t, s) for s in seeds for t in tasks for e in experiments]


def load_ablation(path: Path) -> dict:
    """An ablation file: ``experiments`` (required), ``seeds`` (default [0, 1, 2]), ``overrides``, ``tasks``."""
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read ablation file {path}: {err}".replace("\n", " ")) from err
    unknown = set(spec) - {"description", "experiments", "seeds", "overrides", "name", "tasks"}
    if unknown or not spec.get("experiments"):
        raise ConfigError(f"ablation file {path}: needs `experiments:` (names or globs under experiments/) and may "
                          f"set `seeds:`, `overrides:`, `tasks:`, `description:`; unknown keys: "
                          f"{sorted(unknown) or 'none'}")
    return {"name": spec.get("name", path.stem), "description": spec.get("description", ""),
            "experiments": list(spec["experiments"]), "seeds": [int(s) for s in spec.get("seeds", [0, 1, 2])],
            "overrides": [str(o) for o in spec.get("overrides", [])],
            "tasks": [str(t) for t in spec.get("tasks") or []]}


def describe_head(experiment: Path) -> dict:
    """Head class, its options as stated by the experiment (``channels=64 recurrence=2``), and the
    model options the experiment's own file adds (e.g. ``encoder_gc_stages``)."""
    config = merged_config(experiment)
    model = config.get("model", {})
    head = model.get("head", {})
    head_class = str(head.get("class_path", "lit_seg.models.heads.FCNHead")).rsplit(".", 1)[-1]
    options = dict(head.get("init_args") or {})
    own = yaml.safe_load(experiment.read_text()) or {}
    for key, value in (own.get("model") or {}).items():
        if key != "head":
            options[key] = value
    text = " ".join(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, (list, dict)) else v}"
                    for k, v in options.items())
    recurrence = options.get("recurrence", 1 if head_class == "CCHead" else "")
    return {"head": head_class, "head_options": text, "recurrence": recurrence}


# --- results file --------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    classes = [c for row in rows for c in row if c.startswith("IoU/")]
    columns = columns_.BEFORE_CLASSES + list(dict.fromkeys(classes)) + columns_.AFTER_CLASSES
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def run_key(experiment: str, task: str, seed: int | str, overrides: str) -> tuple[str, str, str, str]:
    """A run's identity in the results file; ``task`` is "" for a run without a task overlay."""
    return (experiment, task, str(seed), overrides)


def row_key(row: dict) -> tuple[str, str, str, str]:
    """:func:`run_key` of a results row; rows of CSVs from before the task column have no task."""
    return run_key(row["experiment"], row.get("task") or "", row["seed"], row["overrides"])


def task_name(task: Path | None) -> str:
    return task.stem if task is not None else ""


def task_args(task: Path | None) -> list[str]:
    """The task overlay's arguments: right after the experiment's --config, so the overrides still win."""
    return ["--config", str(task)] if task is not None else []


def _label(experiment: Path, task: Path | None, seed: int | None = None) -> str:
    """``ccnet_r2 on recurrence seed 1`` (``ccnet_r2 seed 1`` without a task) for the messages."""
    on = f" on {task.stem}" if task is not None else ""
    return f"{experiment.stem}{on}" + (f" seed {seed}" if seed is not None else "")


def log_folder(ablation: str, overrides: str, root: Path | None = None) -> Path:
    """Where an ablation's run logs go: ``runs/ablations/<ablation>/``, and below it one folder per
    set of overrides (``--trainer.precision=bf16-mixed`` -> ``trainer.precision=bf16-mixed/``).
    A log leads the next call to its run folder (a lost row recovered, a cut-off run resumed), so a
    call with other overrides must not find it: it would take the other runs' results as its own."""
    base = (root or Path(RUNS_DIR)) / "ablations" / ablation
    if not overrides:
        return base
    slug = re.sub(r"[^A-Za-z0-9=.,+_-]+", "_", overrides.replace("--", " ").strip())
    if len(slug) > 80:  # a long override list: readable start, identity from its hash
        slug = f"{slug[:60]}-{hashlib.sha1(overrides.encode()).hexdigest()[:12]}"
    return base / slug


def log_name(experiment: Path, task: Path | None, seed: int) -> str:
    """``<experiment>[-<task>]-seed<N>.log`` in ``runs/ablations/<ablation>/`` (without a task, the older name)."""
    return f"{experiment.stem}{f'-{task.stem}' if task is not None else ''}-seed{seed}.log"


# --- measuring -----------------------------------------------------------------------------------


def measure_cost(experiment: Path, overrides: Sequence[str], runner, task: Path | None = None) -> dict:
    """The head's parameters, FLOPs, latency and peak memory at the experiment's training batch
    and the task's image size (one fresh process, lit_seg/study/harness.py), and the whole
    model's forward FLOPs per image."""
    result = runner({"kind": "experiment", "config": str(experiment), "overrides": [*task_args(task), *overrides],
                     "repeats": 10, "min_time": 1.0, "warmup": 3})
    if "error" in result:
        print(f"  cost of {_label(experiment, task)}: not measured ({result['error']})", flush=True)
        return {}
    batch_flops = result["flops_fwd"]
    return {
        "head_params": result["params"],
        "head_gflops": "",  # per image: filled in below from the batch's FLOPs
        "model_gflops": round(result["model_flops_fwd"] / 1e9, 4),
        "head_fwd_ms": round(result["fwd_ms"], 2),
        "head_fwdbwd_ms": round(result["fwdbwd_ms"], 2),
        "head_peak_mib": round(result["peak_fwdbwd"] / MIB, 2),
        "_batch_gflops": batch_flops / 1e9,
    }


def _batch_size(experiment: Path, overrides: Sequence[str], task: Path | None = None) -> int:
    for arg in overrides:
        match = re.match(r"--data(?:\.init_args)?\.batch_size[= ](\d+)", arg)
        if match:
            return int(match.group(1))
    data = merged_config(experiment, *([task] if task else [])).get("data", {})
    return int((data.get("init_args") or {}).get("batch_size", 16))


def collect(run_folder: Path) -> dict:
    """The row's results from a finished run folder's ``summary.json``."""
    summary = json.loads((run_folder / "summary.json").read_text())
    metrics = summary.get("metrics", {})
    row = {
        "val_mIoU_best": summary.get("val/mIoU_best"),
        "val_mIoU_final": metrics.get("val/mIoU"),
        "val_pixel_acc_final": metrics.get("val/pixel_acc"),
        "val_mAcc_final": metrics.get("val/mAcc"),
        "val_aAcc_final": metrics.get("val/aAcc"),
        "val_mDice_final": metrics.get("val/mDice"),
        "params": summary.get("params"),
        "steps": summary.get("global_step"),
        "wandb_run_id": summary.get("wandb_run_id") or "",
    }
    row["val_mIoU_first"] = _first_validation_miou(run_folder / "metrics.csv")
    row.update({k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/IoU/")})
    row = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
    # Significant digits, not decimals: near-identical maps (GCNet's finding) give values far below 1e-5.
    dependence = summary.get("query_dependence")
    row["query_dependence"] = float(f"{dependence:.4g}") if isinstance(dependence, (int, float)) else None
    return row


def _first_validation_miou(metrics_csv: Path) -> float | None:
    """``val/mIoU`` at the run's first validation: how soon a head puts context to use."""
    if not metrics_csv.is_file():
        return None
    with metrics_csv.open(newline="") as f:
        for record in csv.DictReader(f):
            if record.get("val/mIoU"):
                return float(record["val/mIoU"])
    return None


def fit_command(experiment: Path, task: Path | None, seed: int, ablation: str, overrides: Sequence[str],
                resume: Path | None = None) -> list[str]:
    """The ``lit_seg fit`` command line of one run."""
    # An interrupted run goes on from its last checkpoint, in its own folder (lit-seg fit --resume);
    # its config.yaml holds the experiment, the task and the seed.
    start = ["--resume", str(resume)] if resume else ["--config", str(experiment), *task_args(task),
                                                      "--seed_everything", str(seed)]
    return [sys.executable, "-m", "lit_seg", "fit", *start, "--group", ablation,
            "--trainer.enable_progress_bar=false", *overrides]


class Run:
    """One ``lit_seg fit`` in its own process, output to ``log``."""

    def __init__(self, experiment: Path, seed: int, ablation: str, overrides: Sequence[str], log: Path,
                 threads: int | None = None, resume: Path | None = None, task: Path | None = None) -> None:
        self.experiment, self.task, self.seed, self.log, self.resumed = experiment, task, seed, log, resume
        command = fit_command(experiment, task, seed, ablation, overrides, resume)
        env = dict(os.environ)
        env.setdefault("WANDB_MODE", "offline")
        if threads:  # several runs side by side share the cores instead of oversubscribing them
            env["OMP_NUM_THREADS"] = str(threads)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = log.open("a" if resume else "w")
        self._out.write("$ " + " ".join(command) + "\n")
        self._out.flush()
        self.start = time.monotonic()
        self.process = subprocess.Popen(command, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent(os.getpid()))
        self._out.write(f"{PID_MARK}{self.process.pid}\n")  # found by the next call if this runner is killed
        self._out.flush()

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None and not self._out.closed:
            self.wall = time.monotonic() - self.start
            self._out.write(f"\n{EXIT_MARK}{code}\n")  # read by previous_attempt()
            self._out.close()
        return code

    def folder(self) -> Path | None:
        """The run folder the CLI printed (``lit-seg: run folder <dir>``)."""
        return _last_run_in(self.log)[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.poll()


def _die_with_parent(parent: int):
    """For ``preexec_fn``: the child gets SIGTERM when this runner dies, even by SIGKILL (Linux's
    ``PR_SET_PDEATHSIG``); SIGTERM, so that it saves its last checkpoint (SaveOnInterrupt) and the
    next call of the ablation resumes it. Elsewhere a no-op: the run folder's lock still keeps a
    second writer out, and the next call stops an orphan it finds (:func:`stop_orphan`)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def _fit_process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live ``lit_seg fit`` (not another process that got the PID since)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"lit_seg" in cmdline and b"fit" in cmdline


def stop_orphan(log: Path, timeout: float = 300.0) -> None:
    """An earlier attempt of this run still running (its runner was killed; without PDEATHSIG, or
    while it saves its checkpoint): stopped with SIGTERM and waited for, before its log and run
    folder are touched again. With this ablation's lock held, no live runner owns it."""
    if not log.is_file():
        return
    pids = [line.removeprefix(PID_MARK).strip() for line in log.read_text(errors="replace").splitlines()
            if line.startswith(PID_MARK)]
    if not pids or not pids[-1].isdigit() or not _fit_process_alive(int(pids[-1])):
        return
    pid = int(pids[-1])
    print(f"  process {pid}, an earlier attempt of this run whose runner was stopped, is still running: stopping it "
          f"(it saves its checkpoint) before resuming", flush=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _fit_process_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
            break
        time.sleep(0.2)


def _last_run_in(log: Path) -> tuple[Path | None, int | None]:
    """The last run folder the CLI printed into ``log`` and the exit code the runner noted after it."""
    folder, code = None, None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("lit-seg: run folder "):
            folder, code = Path(line.removeprefix("lit-seg: run folder ").strip()), None
        elif line.startswith(EXIT_MARK):
            code = int(line.removeprefix(EXIT_MARK))
    return folder, code


def previous_attempt(log: Path) -> tuple[Path | None, int | None]:
    """The run folder of the last attempt named in ``log`` (None if it has no config.yaml) and its
    exit code (None: the runner itself was stopped before the run ended)."""
    if not log.is_file():
        return None, None
    folder, code = _last_run_in(log)
    if folder is None or not (folder / "config.yaml").is_file():
        return None, code
    return folder, code


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


def write_report(results: Path) -> None:
    """results/<ablation>.md and .png from the CSV (``lit-seg report``)."""
    from lit_seg.study import report

    try:
        md, png = report.report(results)
        print(f"ablation report: {md}, {png}", flush=True)
    except Exception as err:  # noqa: BLE001 (the CSV is what matters; the report can be redone)
        print(f"ablation report not written ({type(err).__name__}: {err}); "
              f"redo it with lit-seg report {results}", flush=True)


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


# --- the command ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lit-seg ablate", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [ABLATION.yaml] [options] [-- FIT_ARGS...]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("ablation", nargs="?", type=Path, help="an ablation file (experiments/ablations/*.yaml)")
    parser.add_argument("--experiments", nargs="+", metavar="NAME_OR_GLOB",
                        help="experiments instead of (or replacing) the file's")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds instead of the file's (default 0 1 2)")
    parser.add_argument("--tasks", nargs="+", metavar="NAME",
                        help="tasks instead of the file's: overlays under <experiments-dir>/tasks/ or YAML paths")
    parser.add_argument("--name", help="ablation name: results/<name>.csv and W&B group (default: the file's name)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder of <name>.csv")
    parser.add_argument("--experiments-dir", type=Path, default=EXPERIMENTS,
                        help="where experiment names and globs are looked up (default: ./experiments)")
    parser.add_argument("--no-cost", action="store_true", help="skip the head cost measurement")
    parser.add_argument("--remeasure-cost", action="store_true",
                        help="measure the heads' cost again (e.g. on a quiet machine) and update the finished rows")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs side by side, each with cores/jobs threads (default 1: one run at a time)")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` goes to every `lit_seg fit` (split here: argparse would give the
    # first of them to the optional positional).
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.overrides = overrides
    if args.ablation is None and not args.experiments:
        parser.error("give an ablation file or --experiments")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_ablation(args.ablation) if args.ablation else {"name": None, "experiments": [], "seeds": [0, 1, 2],
                                                                   "overrides": [], "description": "", "tasks": []}
        name = args.name or spec["name"]
        if not name:
            raise ConfigError("name the ablation: --name <name> (results/<name>.csv, W&B group)")
        experiments = experiment_files(args.experiments or spec["experiments"], args.experiments_dir)
        task_names = args.tasks or spec["tasks"]
        tasks = task_files(task_names, args.experiments_dir / TASKS) if task_names else [None]
    except ConfigError as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        return 2
    seeds = args.seeds or spec["seeds"]
    overrides = [*spec["overrides"], *args.overrides]
    override_text = " ".join(overrides)
    results = args.results / f"{name}.csv"
    rows = read_rows(results)
    finished = {row_key(r) for r in rows if r.get("status") == "finished"}
    plan = plan_runs(experiments, tasks, seeds)
    todo = [(e, t, s) for e, t, s in plan if run_key(e.stem, task_name(t), s, override_text) not in finished]
    task_text = f" x {len(tasks)} tasks ({', '.join(t.stem for t in tasks)})" if tasks != [None] else ""
    print(f"ablation {name}: {len(experiments)} experiments{task_text} x {len(seeds)} seeds = {len(plan)} runs, "
          f"{len(plan) - len(todo)} already finished ({results}); overrides: {override_text or 'none'}", flush=True)
    if args.dry_run:
        for e, t, s in todo:
            print(f"  would run {_label(e, t, s)}")
        return 0
    # Per experiment and task: a task sets the image size, so the head's cost.
    costs: dict[tuple[str, str], dict] = {}
    for r in rows:  # cost already measured by an earlier (interrupted) call
        if r.get("status") == "finished" and r.get("overrides") == override_text and r.get("head_fwdbwd_ms"):
            costs.setdefault(row_key(r)[:2], {k: r[k] for k in columns_.COST_COLUMNS if k in r})
    if args.remeasure_cost:
        costs = {}
    # Costs first, while no run competes for the cores (latencies would be inflated).
    if not args.no_cost:
        from lit_seg.study.runner import Runner

        runner = Runner(fresh_process=True, timeout=600)
        for experiment, task in dict.fromkeys((e, t) for e, t, _ in (plan if args.remeasure_cost else todo)):
            if (experiment.stem, task_name(task)) in costs:
                continue
            cost = measure_cost(experiment, overrides, runner, task)
            batch_gflops = cost.pop("_batch_gflops", None)
            if batch_gflops is not None:
                cost["head_gflops"] = round(batch_gflops / _batch_size(experiment, overrides, task), 4)
                print(f"  cost of {_label(experiment, task)}: head {cost['head_gflops']} GFLOPs/image, fwd+bwd "
                      f"{cost['head_fwdbwd_ms']} ms, peak {cost['head_peak_mib']} MiB", flush=True)
            costs[experiment.stem, task_name(task)] = cost
    if args.remeasure_cost:
        for r in rows:
            if r.get("overrides") == override_text and row_key(r)[:2] in costs:
                r.update(costs[row_key(r)[:2]])
        write_rows(results, rows)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    lock = Path(RUNS_DIR) / "ablations" / name
    logs = log_folder(name, override_text)
    logs.mkdir(parents=True, exist_ok=True)
    try:  # one runner per ablation (whatever its overrides: they share the results file)
        run_lock.acquire(lock, what="ablation folder")
    except RunError as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        return 2
    start, walls, failures, running, queue, done = time.monotonic(), [], 0, [], list(todo), 0

    def left() -> str:
        if not walls:
            return ""
        per_run = sum(walls) / len(walls) / args.jobs
        return f", about {_duration(per_run * (len(queue) + len(running)))} left"

    def record(rows: list[dict], experiment: Path, task: Path | None, seed: int, folder: Path | None, log: Path,
               code: int, wall: float | None) -> list[dict]:
        """The run's row (finished or failed) in place of any earlier one; the CSV rewritten."""
        row = {"ablation": name, "experiment": experiment.stem, "task": task_name(task), **describe_head(experiment),
               "seed": seed, "overrides": override_text, "wall_s": "" if wall is None else round(wall, 1),
               "wandb_group": name, "log": _relative(log), "run_folder": _relative(folder) if folder else "",
               **costs.get((experiment.stem, task_name(task)), {})}
        took = "" if wall is None else f" in {wall:.0f} s"
        if code == 0 and folder is not None and (folder / "summary.json").is_file():
            row.update(collect(folder), status="finished")
            print(f"[done {done}/{len(todo)}] {_label(experiment, task, seed)}: val/mIoU "
                  f"{_num(row['val_mIoU_final'])} (best {_num(row['val_mIoU_best'])}){took} -> {row['run_folder']}",
                  flush=True)
        else:
            row["status"] = "failed"
            print(f"[done {done}/{len(todo)}] {_label(experiment, task, seed)}: FAILED (exit {code}): "
                  f"{_last_error(log)} (log: {log})", flush=True)
        key = run_key(experiment.stem, task_name(task), seed, override_text)
        rows = [r for r in rows if row_key(r) != key] + [row]
        write_rows(results, rows)
        return rows

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM (a cluster's, or `kill`) stops the ablation like Ctrl-C; SIGINT is set explicitly
    # because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        while queue or running:
            while queue and len(running) < args.jobs and not (failures and args.fail_fast):
                experiment, task, seed = queue.pop(0)
                log = logs / log_name(experiment, task, seed)
                stop_orphan(log)
                folder, code = previous_attempt(log)
                if folder is not None and code == 0 and (folder / "summary.json").is_file():
                    # It finished, but its row was lost (the runner stopped before writing it).
                    done += 1
                    rows = record(rows, experiment, task, seed, folder, log, 0, None)
                    continue
                # No finished row, yet a checkpoint: the attempt was cut off (Ctrl-C, SIGTERM, kill).
                resume = folder if folder is not None and any((folder / "checkpoints").glob("last*.ckpt")) else None
                print(f"[{done + len(running) + 1}/{len(todo)}] {_label(experiment, task, seed)}: running{left()}",
                      flush=True)
                if resume is not None:
                    print(f"  resuming {resume} from its last checkpoint", flush=True)
                running.append(Run(experiment, seed, name, overrides, log, threads, resume, task))
            if not running:
                break
            time.sleep(0.5)
            for run in [r for r in running if r.poll() is not None]:
                running.remove(run)
                done += 1
                walls.append(run.wall)
                rows = record(rows, run.experiment, run.task, run.seed, run.folder(), run.log, run.poll(), run.wall)
                failures += rows[-1]["status"] != "finished"
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the runs' saving short
        for run in running:  # each saves its last checkpoint on SIGTERM; the next call resumes it
            run.stop()
        print(f"ablation {name}: interrupted; {done} of {len(todo)} runs done. The same command resumes it.",
              flush=True)
        if done:
            write_report(results)
        return 130
    total = time.monotonic() - start
    print(f"ablation {name}: {done} runs in {_duration(total)}, {failures} failed; results in {results}",
          flush=True)
    if results.is_file():
        write_report(results)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
