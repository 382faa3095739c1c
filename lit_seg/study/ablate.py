"""Run an ablation: experiments x tasks x seeds, one results row per run, on this machine or on a
SLURM cluster.

    lit-seg ablate experiments/ablations/ccnet_recurrence.yaml
    lit-seg ablate experiments/ablations/tasks.yaml --tasks reach binding --jobs 2
    lit-seg ablate experiments/ablations/tasks.yaml --launcher slurm --partition gpu --gpus-per-node 1
    lit-seg ablate experiments/ablations/tasks.yaml --status
    lit-seg ablate --name my_study --experiments 'ccnet_r*' fcn --seeds 0 1 2 \\
        -- --trainer.max_epochs=2 --model.optimizer.init_args.lr=0.05

An ablation file (``experiments/ablations/*.yaml``) names the experiments (file names or globs
under ``experiments/``), the seeds, command-line overrides applied to every run, optionally tasks
(overlays under ``experiments/tasks/``, by name, or paths of YAML files), and optionally how to
launch them (``launcher: local`` or ``slurm``, and ``slurm:`` settings, the same names as the
options below)::

    description: Does a second criss-cross step help, and at what cost?
    experiments: [fcn, ccnet_r1, ccnet_r2, ccnet_r3]
    seeds: [0, 1, 2]
    overrides: [--trainer.max_epochs=2]
    tasks: [reach, recurrence]    # optional: every experiment on every task

Every run has a slot, ``runs/ablations/<ablation>/<overrides>/<experiment>[-<task>]-seed<N>/``,
holding its run folder (``lit_seg.api.fit``'s, with ``record.json``), a log per attempt, and a lock
held while a process works on it, so that a run never trains twice at once, on one machine or
across cluster jobs. Calling the command again skips finished runs, resumes cut-off ones from
their last checkpoint and retries failed ones. The results, ``results/<ablation>.csv``, are built
from the runs' records (:mod:`lit_seg.api.records`) after the runs (and by ``--status``); the
head's cost (parameters, FLOPs, latency, peak memory at the training batch and image size) is
measured once per experiment and task (:mod:`lit_seg.study.harness`). A row whose model code has
changed since it was made is *stale*: ``--status`` and the report say so, ``--rerun-stale`` runs it
again.

Launchers (one code path for the run itself, :func:`execute`):

- ``local``: ``--jobs N`` runs side by side, each in its own process with cores/N threads (results
  then match other runs at that thread count, not bit for bit the 2-thread README command: see
  the README on determinism). Ctrl-C or SIGTERM stops them, each saving its checkpoint.
- ``slurm``: one job array through submitit (partition, GPUs per node, CPUs per task, memory, time
  limit, account, QoS, array parallelism), its job files in ``runs/ablations/<ablation>/slurm/``
  on the shared file system. A job that reaches its time limit or is preempted saves its
  checkpoint and is requeued by submitit, and goes on from it.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_processes
from pathlib import Path

import yaml

from lit_seg import api
from lit_seg.api import run_lock
from lit_seg.api.config import merged_config
from lit_seg.api.environment import process_rank
from lit_seg.api.records import RECORD_NAME, RunRecord, end_part, is_stale, read_record, start_part, write_record
from lit_seg.api.run_folder import RUNS_DIR, new_run_id, version
from lit_seg.errors import ConfigError, RunError, RunInterrupted, one_line
from lit_seg.study import columns as columns_
from lit_seg.train.fault_tolerance import SCHEDULER_SIGNALS

# Relative to the working directory, as the run folders (runs/): run from the repository root.
EXPERIMENTS = Path("experiments")
TASKS = "tasks"  # task overlays: <experiments-dir>/tasks/<name>.yaml
MIB = 2**20
LAUNCHERS = ("local", "slurm")
# Settings of the slurm launcher: command-line option (and ablation-file key) -> submitit's parameter.
SLURM_SETTINGS = {
    "partition": "slurm_partition", "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb", "timeout_min": "timeout_min", "account": "slurm_account", "qos": "slurm_qos",
    "array_parallelism": "slurm_array_parallelism", "nodes": "nodes", "signal_delay_s": "slurm_signal_delay_s",
}


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


# An ablation file's keys and their defaults: what `lit-seg ablate` runs without a file too.
ABLATION_DEFAULTS = {"name": None, "description": "", "experiments": [], "seeds": [0, 1, 2], "mixed_seeds": [],
                     "overrides": [], "tasks": [], "launcher": "local", "slurm": {}}


def load_ablation(path: Path) -> dict:
    """An ablation file: ``experiments`` (required), ``seeds`` (default [0, 1, 2]), ``mixed_seeds``
    (run too where the seeds disagree: :func:`mixed_cells`), ``overrides``, ``tasks``, ``launcher``
    (``local``), ``slurm`` (settings of :data:`SLURM_SETTINGS`); :data:`ABLATION_DEFAULTS`."""
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read ablation file {path}: {err}".replace("\n", " ")) from err
    unknown = set(spec) - set(ABLATION_DEFAULTS)
    if unknown or not spec.get("experiments"):
        optional = ", ".join(f"`{key}:`" for key in ABLATION_DEFAULTS if key != "experiments")
        raise ConfigError(f"ablation file {path}: needs `experiments:` (names or globs under experiments/) and may "
                          f"set {optional}; unknown keys: {sorted(unknown) or 'none'}")
    spec = {**ABLATION_DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}
    slurm = spec["slurm"]
    if not isinstance(slurm, dict) or set(slurm) - set(SLURM_SETTINGS):
        raise ConfigError(f"ablation file {path}: `slurm:` takes {', '.join(SLURM_SETTINGS)}; got "
                          f"{sorted(slurm) if isinstance(slurm, dict) else slurm!r}")
    if spec["launcher"] not in LAUNCHERS:
        raise ConfigError(f"ablation file {path}: launcher must be one of {', '.join(LAUNCHERS)}, got "
                          f"{spec['launcher']!r}")
    return {**spec, "name": spec["name"] or path.stem, "experiments": list(spec["experiments"]),
            "seeds": [int(s) for s in spec["seeds"]], "mixed_seeds": [int(s) for s in spec["mixed_seeds"]],
            "overrides": [str(o) for o in spec["overrides"]], "tasks": [str(t) for t in spec["tasks"]]}


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


def override_folder(ablation: str, overrides: str, root: Path | None = None) -> Path:
    """Where an ablation's runs go: ``runs/ablations/<ablation>/``, and below it one folder per set
    of overrides (``--trainer.precision=bf16-mixed`` -> ``trainer.precision=bf16-mixed/``): a call
    with other overrides must not take another set's runs (and results) as its own."""
    base = (root or Path(RUNS_DIR)) / "ablations" / ablation
    if not overrides:
        return base / "default"
    slug = re.sub(r"[^A-Za-z0-9=.,+_-]+", "_", overrides.replace("--", " ").strip())
    if len(slug) > 80:  # a long override list: readable start, identity from its hash
        slug = f"{slug[:60]}-{hashlib.sha1(overrides.encode()).hexdigest()[:12]}"
    return base / slug


@dataclass(frozen=True)
class Cell:
    """One run of the plan: an experiment on a task with a seed, under the ablation's overrides."""

    ablation: str
    experiment: Path
    task: Path | None
    seed: int
    overrides: tuple[str, ...] = ()
    runs_root: Path = Path(RUNS_DIR)

    @property
    def task_name(self) -> str:
        return self.task.stem if self.task is not None else ""

    @property
    def overrides_text(self) -> str:
        return " ".join(self.overrides)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return run_key(self.experiment.stem, self.task_name, self.seed, self.overrides_text)

    @property
    def slot(self) -> Path:
        """The run's folder of attempts, logs and lock."""
        task = f"-{self.task_name}" if self.task is not None else ""
        return override_folder(self.ablation, self.overrides_text, self.runs_root) / \
            f"{self.experiment.stem}{task}-seed{self.seed}"

    @property
    def label(self) -> str:
        """``ccnet_r2 on recurrence seed 1`` (``ccnet_r2 seed 1`` without a task)."""
        on = f" on {self.task_name}" if self.task is not None else ""
        return f"{self.experiment.stem}{on} seed {self.seed}"

    @property
    def configs(self) -> list[Path]:
        """The experiment, then the task overlay (the overrides still win over both)."""
        return [self.experiment, *([self.task] if self.task is not None else [])]


def run_key(experiment: str, task: str, seed: int | str, overrides: str) -> tuple[str, str, str, str]:
    """A run's identity in the results file; ``task`` is "" for a run without a task overlay."""
    return (experiment, task, str(seed), overrides)


def row_key(row: dict) -> tuple[str, str, str, str]:
    """:func:`run_key` of a results row; rows of CSVs from before the task column have no task."""
    return run_key(row["experiment"], row.get("task") or "", row["seed"], row["overrides"])


# --- one run: what a job (local process or SLURM job) does ---------------------------------------


@dataclass
class Attempt:
    """A run folder in a slot, with its record (None: the run died before writing one)."""

    folder: Path
    record: RunRecord | None

    @property
    def finished(self) -> bool:
        return self.record is not None and self.record.status == "finished"

    @property
    def resumable(self) -> bool:
        return not self.finished and any((self.folder / "checkpoints").glob("last*.ckpt"))


def attempts(slot: Path) -> list[Attempt]:
    """The slot's run folders, oldest first (their names start with their start time)."""
    if not slot.is_dir():
        return []
    folders = sorted(p for p in slot.iterdir() if p.is_dir() and
                     ((p / "config.yaml").is_file() or (p / RECORD_NAME).is_file()))
    return [Attempt(folder, read_record(folder)) for folder in folders]


def latest_finished(slot: Path) -> Attempt | None:
    done = [a for a in attempts(slot) if a.finished]
    return done[-1] if done else None


def execute(cell: Cell, rerun_stale: bool = False) -> dict:
    """Runs ``cell`` (or leaves it): the unit of work of every launcher, in the process that trains.

    Under the slot's lock: a finished run (not stale, or stale without ``rerun_stale``) is left as
    it is; a run cut off midway goes on from its last checkpoint in its own folder; otherwise a new
    run folder is started. Everything the process prints goes to a new log in the slot. Returns
    ``{"status", "run_folder", "error"}``; never raises for the run's own failures (the record says
    them), so that one failed run does not stop the others.
    """
    slot = cell.slot
    slot.mkdir(parents=True, exist_ok=True)
    if process_rank() == 0:
        try:
            run_lock.acquire(slot, what="run")
        except run_lock.RunFolderInUse as err:
            note = _decision_note(cell)
            if note is not None:  # this job's other processes wait for the decision: there is none to make
                _write_note(note, {"action": "held", "error": str(err)})
            return {"status": "held", "error": str(err), "run_folder": None}
    try:
        with _log_to(slot / f"attempt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"):
            return _execute(cell, rerun_stale)
    finally:
        run_lock.release(slot)


def _decide(cell: Cell, rerun_stale: bool) -> dict:
    """What this attempt does: ``{"action": "done" | "resume" | "new", "folder": ...}``. Rank zero
    decides (under the slot's lock) and writes it down for this job's other processes (DDP inside
    a SLURM job: one process per GPU, each running this function), which read it."""
    note = _decision_note(cell)
    if process_rank() and note is not None:
        deadline = time.monotonic() + 600
        while not note.is_file():
            if time.monotonic() > deadline:
                raise RunError(f"{cell.label}: rank {process_rank()} waited 10 min for rank 0's decision ({note})")
            time.sleep(1.0)
        return json.loads(note.read_text())
    tried = attempts(cell.slot)
    last = tried[-1] if tried else None
    done = latest_finished(cell.slot)
    if done is not None and not (rerun_stale and is_stale(done.record.model_code)):
        decision = {"action": "done", "folder": str(done.folder)}
    elif last is not None and last.resumable:
        decision = {"action": "resume", "folder": str(last.folder)}
    else:
        decision = {"action": "new", "folder": str(cell.slot / version(new_run_id()))}
    if note is not None:
        _write_note(note, decision)
    return decision


def _decision_note(cell: Cell) -> Path | None:
    """Where rank zero of this SLURM job (and this requeue of it) writes its decision; None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    return cell.slot / f".decision-{job}-{os.environ.get('SLURM_RESTART_COUNT', '0')}.json" if job else None


def _write_note(path: Path, decision: dict) -> None:
    """Written whole (renamed into place): a rank polling for it never reads half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(decision))
    os.replace(tmp, path)


def _execute(cell: Cell, rerun_stale: bool) -> dict:
    decision = _decide(cell, rerun_stale)
    if decision["action"] == "held":  # rank zero found the slot held by another process
        return {"status": "held", "error": decision.get("error"), "run_folder": None}
    if decision["action"] == "done":
        return {"status": "finished", "run_folder": decision["folder"], "error": None}
    identity = {"ablation": cell.ablation, "experiment": cell.experiment.stem, "task": cell.task_name,
                "overrides": cell.overrides_text, "experiment_file": str(cell.experiment),
                "task_file": str(cell.task) if cell.task is not None else None}
    try:
        if decision["action"] == "resume":
            print(f"lit-seg ablate: {cell.label}: resuming {decision['folder']} from its last checkpoint", flush=True)
            record = api.resume(decision["folder"], overrides=["--trainer.enable_progress_bar=false"])
        else:
            record = api.fit(*cell.configs, overrides=[*cell.overrides, "--trainer.enable_progress_bar=false"],
                             seed=cell.seed, group=cell.ablation, run_dir=decision["folder"], identity=identity)
        return {"status": record.status if record else "failed", "run_folder": record and record.run_folder,
                "error": None}
    except RunInterrupted as err:
        _hand_over(err.signal)
        return {"status": "interrupted", "run_folder": decision["folder"], "error": str(err)}
    except Exception as err:  # noqa: BLE001 - the run's own failure, in its record and log; the others go on
        error = one_line(err) if isinstance(err, (ConfigError, RunError)) else f"{type(err).__name__}: {one_line(err)}"
        if not isinstance(err, (ConfigError, RunError)):
            traceback.print_exc()
        _record_failure(Path(decision["folder"]), cell, identity, error)
        return {"status": "failed", "run_folder": decision["folder"], "error": error}


def _record_failure(folder: Path, cell: Cell, identity: dict, error: str) -> None:
    """A run that failed before it had a run folder (a bad argument, say) still gets its record, so
    that the results say why, and the next call retries it."""
    if read_record(folder) is not None or process_rank():
        return
    folder.mkdir(parents=True, exist_ok=True)
    record = RunRecord(run_folder=str(folder), status="failed", subcommand="fit", experiment=cell.experiment.stem,
                       task=cell.task_name, seed=cell.seed, overrides=list(cell.overrides), group=cell.ablation,
                       identity=identity, error=error)
    start_part(record)
    end_part(record, "failed", error)
    write_record(record)


def _hand_over(signum: int | None) -> None:
    """A run stopped by a scheduler's warning signal (:data:`SCHEDULER_SIGNALS`) has saved its
    checkpoint; the signal goes on to whatever handles it in this process: submitit's, in a SLURM
    job, which requeues the job (it then resumes from that checkpoint)."""
    if signum in SCHEDULER_SIGNALS and callable(signal.getsignal(signum)):
        signal.raise_signal(signum)


class _log_to:
    """Standard output and error of this process (file descriptors 1 and 2: the children's too) into
    ``path``, appended, for the block's duration."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        return self.path

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, saved in zip((1, 2), self._saved):
            os.dup2(saved, target)
            os.close(saved)


class RunJob:
    """The job a launcher starts for a cell: :func:`execute` in a fresh process. For SLURM it is a
    ``submitit.helpers.Checkpointable`` (:func:`slurm_job`), so that submitit requeues it on a
    timeout or preemption; the requeued job resumes the run from the checkpoint it saved."""

    def __call__(self, cell: Cell, rerun_stale: bool = False) -> dict:
        return execute(cell, rerun_stale)


def slurm_job() -> RunJob:
    import submitit

    class CheckpointableRunJob(RunJob, submitit.helpers.Checkpointable):
        pass

    return CheckpointableRunJob()


# --- results, from the records ------------------------------------------------------------------


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    classes = [c for row in rows for c in row if c.startswith(columns_.IOU_PREFIX)]
    columns = columns_.BEFORE_CLASSES + list(dict.fromkeys(classes)) + columns_.AFTER_CLASSES
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def cell_row(cell: Cell, attempt: Attempt, costs: dict) -> dict:
    """A results row: the cell, its head, the record's metrics and provenance, the head's cost."""
    record = attempt.record
    row = {"ablation": cell.ablation, "experiment": cell.experiment.stem, "task": cell.task_name,
           **describe_head(cell.experiment), "seed": cell.seed, "overrides": cell.overrides_text,
           "wandb_group": cell.ablation, "run_folder": _relative(attempt.folder),
           "log": _relative(_latest_log(cell.slot)), **costs}
    if record is None:
        row.update(status="failed", error="no record: the run's process died before writing one (killed?)")
        return row
    code = record.model_code or {}
    device = record.device or {}
    row.update(record.metrics)
    row.update(status=record.status, wall_s=record.wall_s, error=record.error or "",
               config_hash=record.config_hash or "", model_code_hash=code.get("hash", ""),
               model_code_modules=" ".join(code.get("modules", [])), commit=(record.code or {}).get("commit") or "",
               dirty=(record.code or {}).get("dirty"), precision=record.precision or "",
               device=" ".join(str(device.get(k)) for k in ("name", "capability") if device.get(k)),
               job_id=record.job.get("slurm_array_job_id", record.job.get("slurm_job_id", "")) + (
                   f"_{record.job['slurm_array_task_id']}" if record.job.get("slurm_array_task_id") else ""),
               host=record.parts[-1].get("host", "") if record.parts else "")
    return row


def build_rows(cells: Iterable[Cell], existing: list[dict], costs: dict[tuple[str, str, str], dict]) -> list[dict]:
    """The results file's rows: one per cell with a run folder (its newest finished attempt, else its
    newest attempt), in the plan's order, after the rows of ``existing`` that no run folder here
    replaces (results made elsewhere: another machine's, or committed ones)."""
    rows = {}
    for cell in cells:
        tried = attempts(cell.slot)
        if not tried:
            continue
        attempt = latest_finished(cell.slot) or tried[-1]
        rows[cell.key] = cell_row(cell, attempt, costs.get((cell.overrides_text, *cell.key[:2]), {}))
    kept = [row for row in existing if row_key(row) not in rows]
    return kept + list(rows.values())


def ablation_cells(name: str, runs_root: Path, experiments_dir: Path) -> list[Cell]:
    """Every cell with a slot under ``runs/ablations/<name>/``, from its runs' records (the plan of
    other calls included: other seeds, other overrides)."""
    cells = []
    for record_path in sorted((runs_root / "ablations" / name).glob(f"*/*/*/{RECORD_NAME}")):
        record = read_record(record_path.parent)
        identity = getattr(record, "identity", None) or {}
        if record is None or identity.get("ablation") != name:
            continue
        experiment = Path(identity.get("experiment_file") or experiments_dir / f"{identity['experiment']}.yaml")
        task = (Path(identity["task_file"]) if identity.get("task_file") else
                experiments_dir / TASKS / f"{identity['task']}.yaml" if identity.get("task") else None)
        overrides = tuple(identity.get("overrides", "").split()) if identity.get("overrides") else ()
        cell = Cell(name, experiment, task, int(record.seed), overrides, runs_root)
        if cell.slot == record_path.parent.parent and experiment.is_file() and cell not in cells:
            cells.append(cell)
    return cells


def _latest_log(slot: Path) -> Path | None:
    logs = sorted(slot.glob("attempt-*.log"))
    return logs[-1] if logs else None


def _relative(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_report(results: Path) -> None:
    """results/<ablation>.md and .png from the CSV (``lit-seg report``)."""
    from lit_seg.study import report

    try:
        md, png = report.report(results)
        print(f"ablation report: {md}, {png}", flush=True)
    except Exception as err:  # noqa: BLE001 (the CSV is what matters; the report can be redone)
        print(f"ablation report not written ({type(err).__name__}: {err}); "
              f"redo it with lit-seg report {results}", flush=True)


# --- cost ---------------------------------------------------------------------------------------


def measure_cost(experiment: Path, overrides: Sequence[str], runner, task: Path | None = None) -> dict:
    """The head's parameters, FLOPs, latency and peak memory at the experiment's training batch
    and the task's image size (one fresh process, lit_seg/study/harness.py), and the whole
    model's forward FLOPs per image."""
    result = runner({"kind": "experiment", "config": str(experiment),
                     "overrides": [*(["--config", str(task)] if task is not None else []), *overrides],
                     "repeats": 10, "min_time": 1.0, "warmup": 3})
    if "error" in result:
        print(f"  cost of {experiment.stem}{f' on {task.stem}' if task else ''}: not measured ({result['error']})",
              flush=True)
        return {}
    batch = _batch_size(experiment, overrides, task)
    return {
        "head_params": result["params"],
        "head_gflops": round(result["flops_fwd"] / 1e9 / batch, 4),
        "model_gflops": round(result["model_flops_fwd"] / 1e9, 4),
        "head_fwd_ms": round(result["fwd_ms"], 2),
        "head_fwdbwd_ms": round(result["fwdbwd_ms"], 2),
        "head_peak_mib": round(result["peak_fwdbwd"] / MIB, 2),
    }


def _batch_size(experiment: Path, overrides: Sequence[str], task: Path | None = None) -> int:
    for arg in overrides:
        match = re.match(r"--data(?:\.init_args)?\.batch_size[= ](\d+)", arg)
        if match:
            return int(match.group(1))
    data = merged_config(experiment, *([task] if task else [])).get("data", {})
    return int((data.get("init_args") or {}).get("batch_size", 16))


def cost_file(cell: Cell) -> Path:
    task = f"-{cell.task_name}" if cell.task is not None else ""
    return cell.slot.parent / "costs" / f"{cell.experiment.stem}{task}.json"


def read_costs(cells: Iterable[Cell]) -> dict[tuple[str, str, str], dict]:
    costs = {}
    for cell in cells:
        try:
            costs[(cell.overrides_text, *cell.key[:2])] = json.loads(cost_file(cell).read_text())
        except (OSError, ValueError):
            continue
    return costs


def measure_costs(cells: Sequence[Cell], again: bool = False) -> None:
    """The cost of each (experiment, task) of ``cells`` not yet measured (all with ``again``), one at a
    time, before any run competes for the cores (latencies would be inflated)."""
    from lit_seg.study.runner import Runner

    runner = None
    for cell in {cost_file(c): c for c in cells}.values():
        path = cost_file(cell)
        if path.is_file() and not again:
            continue
        runner = runner or Runner(fresh_process=True, timeout=600)
        cost = measure_cost(cell.experiment, list(cell.overrides), runner, cell.task)
        if cost:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cost, indent=2))
            on = f" on {cell.task_name}" if cell.task is not None else ""
            print(f"  cost of {cell.experiment.stem}{on}: head {cost['head_gflops']} GFLOPs/image, fwd+bwd "
                  f"{cost['head_fwdbwd_ms']} ms, peak {cost['head_peak_mib']} MiB", flush=True)


# --- status -------------------------------------------------------------------------------------


@dataclass
class CellState:
    cell: Cell
    state: str  # pending, running, finished, failed, interrupted, stale
    detail: str = ""
    attempt: Attempt | None = None
    extra: dict = field(default_factory=dict)


def cell_state(cell: Cell, queued: dict[Cell, str] | None = None) -> CellState:
    """Where a cell stands, from its slot: its lock's holder, its records, and (SLURM) the queue."""
    holder = run_lock.holder(cell.slot) if cell.slot.is_dir() else None
    tried = attempts(cell.slot)
    last = tried[-1] if tried else None
    done = latest_finished(cell.slot)
    job = (last.record.job if last is not None and last.record is not None else {})
    where = ", ".join(filter(None, [f"job {job.get('slurm_array_job_id', job.get('slurm_job_id'))}"
                                    + (f"_{job['slurm_array_task_id']}" if job.get('slurm_array_task_id') else "")
                                    if job else "", f"node {job['slurm_node']}" if job.get("slurm_node") else ""]))
    if holder is not None:
        return CellState(cell, "running", ", ".join(filter(None, [where, holder])), last)
    if done is not None:
        if is_stale(done.record.model_code):
            return CellState(cell, "stale", f"model code changed since ({done.folder})", done)
        return CellState(cell, "finished", str(done.folder), done)
    if queued and cell in queued:
        return CellState(cell, "pending", f"queued as job {queued[cell]}")
    if last is None:
        return CellState(cell, "pending", "not started")
    status = last.record.status if last.record is not None else "interrupted"
    log = _latest_log(cell.slot)
    if status == "running":  # a record that says running, with nobody holding the slot: the process died
        status = "interrupted"
    error = (last.record.error if last.record is not None else None) or "the process died without a record"
    return CellState(cell, "failed" if status == "failed" else "interrupted",
                     f"{error} (log: {_relative(log)})", last)


def print_status(cells: Sequence[Cell], queued: dict[Cell, str] | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cell in cells:
        state = cell_state(cell, queued)
        counts[state.state] = counts.get(state.state, 0) + 1
        print(f"  {state.state:<11} {cell.label}: {state.detail}", flush=True)
    print("  " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
    return counts


# --- launchers ----------------------------------------------------------------------------------


def _spawn_target(cell: Cell, rerun_stale: bool) -> None:
    # A spawned process inherits "spawn" as its default start method; the run's data-loader workers
    # would then each import torch afresh. Back to the platform's default (fork on Linux), as a run
    # started from a shell has.
    multiprocessing.set_start_method(None, force=True)
    result = execute(cell, rerun_stale)
    raise SystemExit(0 if result["status"] in ("finished", "held") else 1)


def run_local(cells: Sequence[Cell], jobs: int, rerun_stale: bool, fail_fast: bool) -> int:
    """The cells, ``jobs`` at a time, each in a fresh process (multiprocessing's spawn: nothing of
    this process's state carried over); a cell another process holds is waited for, never started
    beside it. Ctrl-C or SIGTERM: every run saves its checkpoint and stops. Returns the failures."""
    context = multiprocessing.get_context("spawn")
    queue, running, waiting, failures = list(cells), {}, [], 0
    start, walls = time.monotonic(), []
    done = 0

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM (a cluster's, or `kill`) stops the ablation like Ctrl-C; SIGINT is set explicitly
    # because a shell starts background jobs with it ignored.
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while queue or running or waiting:
            while queue and len(running) < jobs and not (failures and fail_fast):
                cell = queue.pop(0)
                holder = run_lock.holder(cell.slot) if cell.slot.is_dir() else None
                if holder is not None:
                    print(f"[{cell.label}] held by {holder}: waiting for it, not running it beside", flush=True)
                    waiting.append(cell)
                    continue
                state = cell_state(cell)
                if state.state == "finished" or (state.state == "stale" and not rerun_stale):
                    done += 1
                    continue
                left = f", about {_duration(sum(walls) / len(walls) / jobs * (len(queue) + len(running)))} left" \
                    if walls else ""
                print(f"[{done + len(running) + 1}/{len(cells)}] {cell.label}: running{left}", flush=True)
                process = context.Process(target=_spawn_target, args=(cell, rerun_stale), name=cell.label)
                process.start()
                running[process.sentinel] = (process, cell, time.monotonic())
            if running:
                ready = wait_for_processes(list(running), timeout=1.0)
            else:
                ready = []
                time.sleep(1.0)
            for sentinel in ready:
                process, cell, t0 = running.pop(sentinel)
                process.join()
                done += 1
                walls.append(time.monotonic() - t0)
                state = cell_state(cell)
                if state.state == "finished":
                    metrics = state.attempt.record.metrics
                    print(f"[done {done}/{len(cells)}] {cell.label}: val/mIoU {_num(metrics.get('val_mIoU_final'))} "
                          f"(best {_num(metrics.get('val_mIoU_best'))}) in {walls[-1]:.0f} s -> "
                          f"{_relative(state.attempt.folder)}", flush=True)
                elif process.exitcode == 0 and state.state == "running":  # it was held: wait for its holder
                    done -= 1
                    waiting.append(cell)
                else:
                    failures += 1
                    print(f"[done {done}/{len(cells)}] {cell.label}: FAILED (exit {process.exitcode}): "
                          f"{state.detail}", flush=True)
            for cell in list(waiting):
                if run_lock.holder(cell.slot) is None:
                    waiting.remove(cell)
                    queue.insert(0, cell)
            if not running and not queue and waiting:
                time.sleep(2.0)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the runs' saving short
        for process, _, _ in running.values():  # each saves its last checkpoint on SIGTERM; the next call resumes
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process, _, _ in running.values():
            process.join()
        print(f"ablation: interrupted; {done} of {len(cells)} runs done. The same command resumes it.", flush=True)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"ablation: {done} runs in {_duration(time.monotonic() - start)}, {failures} failed", flush=True)
    return failures


def slurm_executor(folder: Path, settings: dict):
    """submitit's SLURM executor for an ablation's job array (its files in ``folder``)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = {SLURM_SETTINGS[k]: v for k, v in settings.items() if v is not None and k in SLURM_SETTINGS}
    params.setdefault("timeout_min", 24 * 60)
    gpus = params.get("gpus_per_node") or 0
    # DDP inside a job: one task per GPU, as Lightning's SLURM environment expects.
    params.setdefault("tasks_per_node", max(1, gpus))
    executor.update_parameters(name="lit-seg-ablate", slurm_additional_parameters={"requeue": True},
                               slurm_setup=["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
                                            "export WANDB_MODE=${WANDB_MODE:-offline}"], **params)
    return executor


def submit_slurm(cells: Sequence[Cell], settings: dict, folder: Path, rerun_stale: bool) -> dict[Cell, str]:
    """One job array for the cells; returns each cell's job id (``<array>_<index>``)."""
    executor = slurm_executor(folder, settings)
    jobs = executor.map_array(slurm_job(), list(cells), [rerun_stale] * len(cells))
    ids = {cell: job.job_id for cell, job in zip(cells, jobs)}
    queued = folder / "queued.json"
    previous = json.loads(queued.read_text()) if queued.is_file() else {}
    previous.update({str(cell.slot): job_id for cell, job_id in ids.items()})
    queued.write_text(json.dumps(previous, indent=2))
    return ids


def slurm_queue(folder: Path, cells: Sequence[Cell]) -> dict[Cell, str]:
    """The cells whose job is still in SLURM's queue (``squeue``: pending or running)."""
    queued_path = folder / "queued.json"
    if not queued_path.is_file():
        return {}
    ids = json.loads(queued_path.read_text())
    try:
        listed = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    live = set(listed.stdout.split())
    arrays = {job.split("_")[0] for job in live}
    queued = {}
    for cell in cells:
        job = ids.get(str(cell.slot))
        if job and (job in live or job.split("_")[0] in arrays and f"{job.split('_')[0]}_[" in listed.stdout):
            queued[cell] = job
    return queued


def wait_slurm(cells: Sequence[Cell], folder: Path, poll_s: float = 5.0) -> None:
    """Until no cell's job is in SLURM's queue (a requeued job comes back to it, and is waited for)."""
    while slurm_queue(folder, cells):
        time.sleep(poll_s)


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
    parser.add_argument("--mixed-seeds", dest="mixed_seeds", nargs="+", type=int,
                        help="seeds to run as well where the first seeds disagree (some learn a task, some do not)")
    parser.add_argument("--tasks", nargs="+", metavar="NAME",
                        help="tasks instead of the file's: overlays under <experiments-dir>/tasks/ or YAML paths")
    parser.add_argument("--name", help="ablation name: results/<name>.csv and W&B group (default: the file's name)")
    parser.add_argument("--output_dir", type=Path, default=Path("results"), help="folder of <name>.csv (and .md, .png)")
    parser.add_argument("--experiments-dir", type=Path, default=EXPERIMENTS,
                        help="where experiment names and globs are looked up (default: ./experiments)")
    parser.add_argument("--launcher", choices=LAUNCHERS, help="where the runs train (default: the file's, else local)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="local: runs side by side, each with cores/jobs threads (default 1: one run at a time)")
    slurm = parser.add_argument_group("slurm launcher (also `slurm:` in the ablation file)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus-per-node", dest="gpus_per_node", type=int)
    slurm.add_argument("--cpus-per-task", dest="cpus_per_task", type=int)
    slurm.add_argument("--mem-gb", dest="mem_gb", type=float)
    slurm.add_argument("--timeout-min", dest="timeout_min", type=int, help="each job's time limit (default 1 day)")
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument("--array-parallelism", dest="array_parallelism", type=int, help="jobs of the array at once")
    slurm.add_argument("--nodes", type=int)
    slurm.add_argument("--signal-delay-s", dest="signal_delay_s", type=int,
                       help="how long before the time limit a job is warned to save and requeue (submitit: 90)")
    slurm.add_argument("--no-wait", action="store_true", help="submit and return (watch with --status)")
    parser.add_argument("--status", action="store_true",
                        help="per run: pending, running (job, node), finished, failed (error, log), stale; "
                             "the results file is rewritten from the records")
    parser.add_argument("--rerun-stale", action="store_true",
                        help="run again the finished runs whose model code changed since (stale)")
    parser.add_argument("--no-cost", action="store_true", help="skip the head cost measurement")
    parser.add_argument("--remeasure-cost", action="store_true",
                        help="measure the heads' cost again (e.g. on a quiet machine) and update the rows")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--fail-fast", action="store_true", help="local: stop at the first failed run")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` goes to every run (split here: argparse would give the first of them to
    # the optional positional).
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.overrides = overrides
    if args.ablation is None and not args.experiments:
        parser.error("give an ablation file or --experiments")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_ablation(args.ablation) if args.ablation else copy.deepcopy(ABLATION_DEFAULTS)
        name = args.name or spec["name"]
        if not name:
            raise ConfigError("name the ablation: --name <name> (results/<name>.csv, W&B group)")
        experiments = experiment_files(args.experiments or spec["experiments"], args.experiments_dir)
        task_names = args.tasks or spec["tasks"]
        tasks = task_files(task_names, args.experiments_dir / TASKS) if task_names else [None]
    except ConfigError as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        return 2
    launcher = args.launcher or spec["launcher"]
    slurm_settings = {**spec["slurm"], **{k: getattr(args, k) for k in SLURM_SETTINGS if getattr(args, k) is not None}}
    overrides = tuple([*spec["overrides"], *args.overrides])
    runs_root = Path(RUNS_DIR)
    cells = [Cell(name, e, t, s, overrides, runs_root) for e, t, s in plan_runs(experiments, tasks, args.seeds
                                                                                     or spec["seeds"])]
    results = args.output_dir / f"{name}.csv"
    existing = read_rows(results)
    finished_rows = {row_key(r) for r in existing if r.get("status") == "finished"
                     and not (args.rerun_stale and _row_is_stale(r))}
    slurm_folder = runs_root / "ablations" / name / "slurm"
    states = {cell: cell_state(cell) for cell in cells}
    finished = [c for c in cells if states[c].state == "finished"
                or (states[c].state == "stale" and not args.rerun_stale)
                or (c.key in finished_rows and not c.slot.is_dir())]
    todo = [c for c in cells if c not in finished]
    task_text = f" x {len(tasks)} tasks ({', '.join(t.stem for t in tasks)})" if tasks != [None] else ""
    print(f"ablation {name}: {len(experiments)} experiments{task_text} x {len(set(c.seed for c in cells))} seeds = "
          f"{len(cells)} runs, {len(finished)} already finished ({results}); overrides: "
          f"{' '.join(overrides) or 'none'}; launcher: {launcher}", flush=True)
    mixed_seeds = args.mixed_seeds or spec["mixed_seeds"]
    if args.dry_run:
        for cell in todo:
            print(f"  would run {cell.label}")
        if mixed_seeds:
            print(f"  then seeds {' '.join(map(str, mixed_seeds))} of every experiment and task whose seeds disagree")
        return 0
    if args.status:
        queued = slurm_queue(slurm_folder, cells)
        print_status(cells, queued)
        _write_results(results, cells, existing, name, runs_root, args.experiments_dir)
        return 0
    if not args.no_cost and launcher == "local":
        measure_costs(cells if args.remeasure_cost else todo, again=args.remeasure_cost)
    try:
        failures = _launch(todo, launcher, args, slurm_settings, slurm_folder, name)
        if failures is None:  # submitted without waiting
            return 0
        if mixed_seeds:
            _write_results(results, cells, existing, name, runs_root, args.experiments_dir)
            more = mixed_seed_cells(results, cells, mixed_seeds)
            if more:
                print(f"ablation {name}: the seeds disagree in {len({c.key[:2] for c in more})} cells: seeds "
                      f"{' '.join(map(str, mixed_seeds))} for them ({len(more)} runs)", flush=True)
                cells = [*cells, *more]
                failures += _launch([c for c in more if cell_state(c).state != "finished"], launcher, args,
                                    slurm_settings, slurm_folder, name) or 0
    except KeyboardInterrupt:
        if launcher == "slurm":
            print(f"ablation {name}: stopped waiting; the jobs go on (watch them with --status)", flush=True)
        _write_results(results, cells, existing, name, runs_root, args.experiments_dir)
        return 130
    _write_results(results, cells, existing, name, runs_root, args.experiments_dir)
    return 1 if failures else 0


def _launch(todo: Sequence[Cell], launcher: str, args: argparse.Namespace, slurm_settings: dict, slurm_folder: Path,
            name: str) -> int | None:
    """Runs ``todo`` with the launcher; the failures, or None when submitted without waiting."""
    if launcher == "local":
        threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
        if threads:  # several runs side by side share the cores instead of oversubscribing them
            os.environ["OMP_NUM_THREADS"] = str(threads)
        return run_local(todo, args.jobs, args.rerun_stale, args.fail_fast)
    if not todo:
        return 0
    ids = submit_slurm(todo, slurm_settings, slurm_folder, args.rerun_stale)
    arrays = sorted({job.split("_")[0] for job in ids.values()})
    print(f"ablation {name}: submitted {len(ids)} runs as SLURM job array {', '.join(arrays)} "
          f"(job files in {slurm_folder})", flush=True)
    if args.no_wait:
        print("  watch it with the same command and --status", flush=True)
        return None
    wait_slurm(todo, slurm_folder)
    counts = print_status(todo)
    return counts.get("failed", 0) + counts.get("interrupted", 0)


def mixed_seed_cells(results: Path, cells: Sequence[Cell], seeds: Sequence[int]) -> list[Cell]:
    """``seeds`` of every (experiment, task) of ``cells`` whose runs in ``results`` disagree: some seeds
    learn the task, some do not (:func:`lit_seg.study.analysis.mixed_cells`)."""
    from lit_seg.study import analysis

    if not cells:
        return []
    runs = analysis.load_csv(results, overrides=cells[0].overrides_text)  # this call's runs, no other set's
    if runs.empty or not analysis.has_tasks(runs):
        return []
    mixed = set(analysis.mixed_cells(analysis.capacity_profile(runs)))
    first = {}
    for cell in cells:
        first.setdefault((cell.experiment.stem, cell.task_name), cell)
    return [Cell(c.ablation, c.experiment, c.task, seed, c.overrides, c.runs_root)
            for key, c in first.items() if key in mixed for seed in seeds]


def _row_is_stale(row: dict) -> bool:
    if not row.get("model_code_hash"):
        return False
    return is_stale({"hash": row["model_code_hash"], "modules": (row.get("model_code_modules") or "").split()})


def _write_results(results: Path, cells: Sequence[Cell], existing: list[dict], name: str, runs_root: Path,
                   experiments_dir: Path) -> None:
    """results/<name>.csv from the records of every run of the ablation (this call's plan and earlier
    ones), and its report."""
    every = list(dict.fromkeys([*cells, *ablation_cells(name, runs_root, experiments_dir)]))
    rows = build_rows(every, existing, read_costs(every))
    if not rows:
        return
    write_rows(results, rows)
    write_report(results)


if __name__ == "__main__":
    raise SystemExit(main())
