"""A run's record: ``<run folder>/record.json``, what a result needs to know about the run that made it.

Written when the run starts (status ``running``) and again when it ends: ``finished``, ``failed``
(with the error's one line), or ``interrupted`` (Ctrl-C, SIGTERM: ``lit-seg fit --resume`` goes on,
and the resumed part is added to ``parts``). It holds:

- the run's identity: subcommand, experiment, task, seed, the overrides given, the ablation's group;
- ``config_hash``: sha256 of the resolved configuration (``config.yaml``, the run-independent config);
- ``model_code``: the lit-seg modules that built the model (the modules of its classes and, through
  their imports, of everything they use) and a hash of their code with docstrings and comments
  left out; a result is *stale* when that hash differs from the same modules' hash today
  (:func:`is_stale`), so a fix to a head invalidates that head's rows and nothing else;
- ``code``: the git commit of the checkout and whether its code differed from it (``dirty``);
- ``libraries``, ``device`` (CPU model and instruction set, or GPU), ``precision``, host and job ids;
- ``metrics``: every number of a results row (:func:`result_metrics`, from ``summary.json``);
- per part (start, resume): start, end, wall time, host, job.

An ablation's CSV is built from its runs' records (:mod:`lit_seg.study.ablate`), so any number of
jobs on a shared file system can write results without sharing a file.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib
import inspect
import json
import math
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

import lit_seg
from lit_seg.api import environment

RECORD_NAME = "record.json"
# The layer whose code builds a model; a change anywhere else (training loop, tools) leaves rows fresh.
MODEL_PACKAGE = "lit_seg.models"
# Paths whose uncommitted changes make a run's code differ from its commit.
CODE_PATHS = ("lit_seg", "experiments", "pyproject.toml", "constraints.txt")
JOB_VARIABLES = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
                 "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_node": "SLURMD_NODENAME",
                 "slurm_restart_count": "SLURM_RESTART_COUNT"}


@dataclass
class RunRecord:
    """What ``record.json`` holds (see the module docstring); ``metrics`` as in a results row."""

    run_folder: str
    status: str
    subcommand: str | None = None
    experiment: str | None = None
    task: str = ""
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    group: str | None = None
    # Names the caller gave the run (an ablation's: its name, experiment, task and overrides).
    identity: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    model_code: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        """Wall time of all parts (a resumed run's interrupted parts included)."""
        return round(sum(part.get("wall_s") or 0.0 for part in self.parts), 1)

    @property
    def job(self) -> dict[str, Any]:
        """The scheduler job that ran the last part (empty outside SLURM)."""
        return self.parts[-1].get("job", {}) if self.parts else {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_record(folder: str | Path) -> RunRecord | None:
    """The record in ``folder``, or None (no record, or one cut off by a crash while it was written)."""
    try:
        return RunRecord.from_dict(json.loads((Path(folder) / RECORD_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_record(record: RunRecord) -> Path:
    """Writes ``record.json`` whole (a temporary file renamed into place: a reader never sees half)."""
    path = Path(record.run_folder) / RECORD_NAME
    tmp = path.with_name(f".{RECORD_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2, default=str))
    os.replace(tmp, path)
    return path


def start_part(record: RunRecord) -> None:
    """A new part (the run's start, or a resume) begins now, in this process, on this host and job."""
    record.parts.append({"started": _now(), "ended": None, "wall_s": None, "status": "running",
                         "host": environment.host(), "pid": os.getpid(), "job": job_ids(), "_t0": time.monotonic()})
    record.status, record.error = "running", None


def end_part(record: RunRecord, status: str, error: str | None = None) -> None:
    part = record.parts[-1]
    t0 = part.pop("_t0", None)
    part.update(ended=_now(), status=status, wall_s=round(time.monotonic() - t0, 1) if t0 is not None else None,
                error=error)
    record.status, record.error = status, error


def job_ids() -> dict[str, str]:
    """The SLURM job (and array task) this process runs in, and its node."""
    return {key: os.environ[var] for key, var in JOB_VARIABLES.items() if os.environ.get(var)}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- configuration and code --------------------------------------------------------------------


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of a resolved configuration, independent of key order and YAML layout."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_code_modules(model: nn.Module) -> list[str]:
    """The lit-seg modules whose code builds ``model``: those defining its classes (and the encoder's
    builder), and every module of :data:`MODEL_PACKAGE` they import from, transitively."""
    seeds = {type(m).__module__ for m in model.modules()} | {f"{MODEL_PACKAGE}.encoder"}
    todo = sorted(name for name in seeds if name.startswith(MODEL_PACKAGE + "."))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_model_dependencies(name) - seen)
    return sorted(seen)


def _model_dependencies(name: str) -> set[str]:
    """Modules of :data:`MODEL_PACKAGE` that module ``name`` imports names from (where those names are
    defined, not the package that re-exports them)."""
    module = importlib.import_module(name)
    deps: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Import):
            deps.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith(MODEL_PACKAGE):
                continue
            source = importlib.import_module(node.module)
            for alias in node.names:
                target = getattr(source, alias.name, None)
                if inspect.ismodule(target):
                    deps.add(target.__name__)
                elif inspect.isclass(target) or inspect.isfunction(target):
                    deps.add(target.__module__)
                else:  # a constant or a type alias: the module that holds it
                    deps.add(node.module)
    return {d for d in deps if d.startswith(MODEL_PACKAGE + ".") or d == MODEL_PACKAGE}


def code_hash(modules: Iterable[str], source=None) -> str:
    """sha256 (16 hex digits) of the modules' code: each parsed, its docstrings dropped (comments
    never reach the syntax tree), written back out; a module that no longer exists counts as absent."""
    read = source or _module_source
    digest = hashlib.sha256()
    for name in sorted(modules):
        text = read(name)
        digest.update(f"{name}\n{normalized_code(text) if text is not None else '<absent>'}\n".encode())
    return digest.hexdigest()[:16]


def normalized_code(text: str) -> str:
    """Python source without its docstrings and comments, in one canonical layout."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _module_source(name: str) -> str | None:
    try:
        return inspect.getsource(importlib.import_module(name))
    except (ImportError, OSError, TypeError):
        return None


def model_code(model: nn.Module) -> dict[str, Any]:
    modules = model_code_modules(model)
    return {"hash": code_hash(modules), "modules": modules}


def is_stale(model_code_entry: Mapping[str, Any] | None) -> bool:
    """Whether the code of a record's model modules differs from the same modules' code today."""
    if not model_code_entry or not model_code_entry.get("hash"):
        return False  # a record without a hash (made before records had one): unknown, not stale
    return code_hash(model_code_entry.get("modules") or []) != model_code_entry["hash"]


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The checkout's git commit and whether :data:`CODE_PATHS` differ from it; the package version
    where lit-seg is not a git checkout (installed from a wheel)."""
    root = Path(lit_seg.__file__).resolve().parent.parent
    version = {"lit_seg": lit_seg.__version__, "commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        version["commit"] = commit.strip()
        status = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
        version["dirty"] = bool(status and status.strip()) if status is not None else None
    return version


# --- the numbers of a results row --------------------------------------------------------------


def result_metrics(folder: str | Path) -> dict[str, Any]:
    """A results row's metrics from the run folder's ``summary.json`` and ``metrics.csv``: best, final
    and first validation mIoU, pixel accuracy, mAcc, aAcc, mDice, per-class IoU, query dependence,
    parameters, the head's FLOPs, steps and the W&B run id. Empty without a summary."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    metrics = summary.get("metrics", {})
    row = {
        "val_mIoU_best": summary.get("val/mIoU_best"),
        "val_mIoU_final": metrics.get("val/mIoU"),
        "val_pixel_acc_final": metrics.get("val/pixel_acc"),
        "val_mAcc_final": metrics.get("val/mAcc"),
        "val_aAcc_final": metrics.get("val/aAcc"),
        "val_mDice_final": metrics.get("val/mDice"),
        "val_mIoU_first": _first_validation_miou(folder / "metrics.csv"),
        "params": summary.get("params"),
        "steps": summary.get("global_step"),
        "wandb_run_id": summary.get("wandb_run_id") or "",
    }
    row.update({k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/IoU/")})
    row = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
    # Significant digits, not decimals: near-identical maps (GCNet's finding) give values far below 1e-5.
    dependence = summary.get("query_dependence")
    row["query_dependence"] = float(f"{dependence:.4g}") if isinstance(dependence, (int, float)) else None
    return row


def _first_validation_miou(metrics_csv: Path) -> float | None:
    """``val/mIoU`` at the run's first validation: how soon a head puts context to use."""
    try:
        with metrics_csv.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("val/mIoU"):
                    return round(float(row["val/mIoU"]), 5)
    except OSError:
        pass
    return None
