"""The run folder: one object names it, creates it, locks it, points every logger at it, and
removes it again when the command fails before the run took a step.

Every run gets ``runs/<experiment>/<YYYYmmdd-HHMMSS>-<id>/`` holding the full resolved
``config.yaml``, ``checkpoints/`` (``last.ckpt`` and the best by ``val/mIoU``), ``metrics.csv``,
``summary.json`` and, inside ``wandb/``, the W&B run whose id is the folder's suffix. Only rank
zero creates and locks it; the processes DDP starts find its name in :data:`VERSION_ENV`.
"""

import os
import secrets
import shutil
import string
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl

from lit_seg.api import run_lock
from lit_seg.api.environment import device_description, library_versions, process_rank
from lit_seg.api.records import (
    RunRecord,
    code_version,
    config_hash,
    end_part,
    model_code,
    read_record,
    result_metrics,
    start_part,
    write_record,
)
from lit_seg.api.wandb_env import sweep_agent_run_id, wandb_online
from lit_seg.errors import ConfigError
from lit_seg.train.checkpoints import run_checkpoint
from lit_seg.train.fault_tolerance import SaveOnInterrupt

RUNS_DIR = "runs"
# The run folder's name, for the other processes of a DDP run that Lightning starts from this one.
VERSION_ENV = "LIT_SEG_RUN_VERSION"


class RunFolder:
    """The folder of the one run a ``lit-seg`` command starts (or continues, with ``--resume``).

    :meth:`assign` names it and rewrites the parsed config so that the CSV logger, the W&B
    logger and the checkpoints all write there; :meth:`remove_if_unused` takes it away again
    after a failed start. ``trainer`` is set once built: whether it took a step, and which
    signal stopped it, are read from it.
    """

    def __init__(self, path: str | Path | None = None, overrides: Sequence[str] = (),
                 identity: dict | None = None) -> None:
        # The folder to create, when the caller chooses it (an ablation's run); None: named here.
        self.requested = Path(path) if path is not None else None
        self.path: Path | None = None
        self.created = False  # by this process (a resumed run's folder is never removed)
        self.trainer: pl.Trainer | None = None
        # For the record: the arguments given beyond the config files, and names the caller sets
        # (an ablation's experiment and task names), else read from the config.
        self.overrides = [str(o) for o in overrides]
        self.identity = dict(identity or {})
        self.record: RunRecord | None = None

    # --- naming --------------------------------------------------------------------------

    def assign(self, config, subcommand: str | None, checkpoint: dict | None, argv: Sequence[str] = ()) -> None:
        """Name the run and point every logger at one fresh (or, resumed, the same) folder.

        The CSV logger (listed first) owns the folder: Lightning puts the checkpoints and
        ``config.yaml`` under the first logger's folder. Without one, the folder becomes the
        trainer's root. The W&B run lives in the same folder and takes its random suffix as id.
        """
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else []
        csv = next((lg for lg in loggers if lg.class_path.endswith("CSVLogger")), None)
        resumed = config.get("resume")
        experiment = config.get("experiment") or "default"
        # Under `wandb agent` the run id is the agent's (wandb ignores any other): the folder takes it.
        agent_run_id = sweep_agent_run_id()
        run_id = agent_run_id or new_run_id()
        rank = process_rank()
        requested = self.requested if not resumed else None
        if requested is not None:
            if not rank and (requested / "config.yaml").exists():
                raise ConfigError(f"run folder {requested} already holds a run; continue it with "
                                  f"lit-seg fit --resume {requested}, or choose a new folder")
            run_id = requested.name.rsplit("-", 1)[-1]
            if csv is not None:
                csv.init_args.save_dir = str(requested.parent.parent)
                csv.init_args.name, csv.init_args.version = requested.parent.name, requested.name
        if csv is None:
            # No CSV logger (`--trainer.logger false`, or W&B alone): the run still gets its folder, as the
            # trainer's root (config.yaml and checkpoints/ go there), never the current folder.
            fresh = not resumed
            path = _folder_without_csv(config, experiment, run_id, rank, requested)
            run_id = path.name.rsplit("-", 1)[-1]
        else:
            fresh = not csv.init_args.version and not resumed
            if resumed:
                run_id = resume_into(csv, Path(resumed), checkpoint)
            if csv.init_args.name in (None, "", "lightning_logs"):
                csv.init_args.name = experiment
            if rank and not resumed and os.environ.get(VERSION_ENV):  # a DDP process Lightning started
                csv.init_args.version = os.environ[VERSION_ENV]
                run_id = csv.init_args.version.rsplit("-", 1)[-1]
            csv.init_args.version = csv.init_args.version or version(run_id)
            path = Path(csv.init_args.save_dir) / csv.init_args.name / csv.init_args.version
        self.path = path
        if not rank:
            self._create(fresh, config.get("ckpt_path"))
            os.environ[VERSION_ENV] = path.name  # inherited by the processes DDP starts
        for logger in loggers:
            if logger.class_path.endswith("WandbLogger"):
                self._wire_wandb(logger.init_args, config, subcommand, experiment, run_id, agent_run_id, resumed,
                                 argv)
        if not rank:
            print(f"lit-seg: run folder {path}", file=sys.stderr, flush=True)

    def _wire_wandb(self, args, config, subcommand, experiment, run_id, agent_run_id, resumed, argv) -> None:
        args.save_dir = str(self.path)
        args.name = args.name or f"{experiment}-seed{config.get('seed_everything')}"
        args.id = None if agent_run_id else args.id or run_id
        args.job_type = args.job_type or subcommand
        if resumed:
            args.resume = "allow"  # the same W&B run goes on
        if config.get("group"):
            args.group = config.group
        # Online, checkpoints become W&B artifacts (last and best, once, at the end of a successful
        # fit) unless the command line or a config file states log_model. Offline they stay off:
        # they would copy every checkpoint into the offline run.
        if args.log_model is False and wandb_online(args) and not _states("log_model", argv):
            args.log_model = True
        if not args.tags:
            args.tags = [experiment, config.model.head.class_path.rsplit(".", 1)[-1]]
        self.path.mkdir(parents=True, exist_ok=True)

    # --- creation and removal -------------------------------------------------------------

    def _create(self, fresh: bool, ckpt_path) -> None:
        """Creates and locks the folder, or says in one line why it cannot be written."""
        if fresh and str(ckpt_path) == "last":
            raise ConfigError("--ckpt_path last looks in this run's own folder, and every run gets a new one: pass the "
                              "checkpoint's path (runs/<experiment>/<run>/checkpoints/last.ckpt), or to continue an "
                              "earlier run: lit-seg fit --resume runs/<experiment>/<run>")
        existed = self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"cannot write the run folder {self.path}: {err.strerror or err}; run lit-seg from a "
                              f"folder you can write to (run folders go under ./{Path(*self.path.parts[:1])}) or give "
                              f"the CSV logger another save_dir") from None
        self.created = not existed
        run_lock.acquire(self.path)  # one writer per run folder: a second `--resume` of it stops here

    def remove_if_unused(self) -> None:
        """After a failed start: the folder this process created, unless the run took a step or wrote a
        checkpoint (what is left then is a run, to resume or read), or its caller chose it (an
        ablation's run keeps its failed record); config, W&B files and the lock go."""
        folder, created = self.path, self.created
        self.created = False
        if not created or folder is None or not folder.is_dir() or self.requested is not None:
            return
        if (self.trainer is not None and self.trainer.global_step > 0) or any(folder.glob("checkpoints/*.ckpt")):
            return
        try:
            import wandb

            if wandb.run is not None:  # its files are in the folder: close them first
                wandb.finish(exit_code=1, quiet=True)
        except Exception:  # noqa: BLE001 - removing debris must not hide the error being reported
            pass
        run_lock.release(folder)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            for parent in folder.parents:  # runs/<experiment>/ and runs/, when they are empty too
                if parent == Path(".") or parent == Path(parent.anchor) or any(parent.iterdir()):
                    break
                parent.rmdir()
        except OSError:
            pass

    # --- the record (lit_seg.api.records) --------------------------------------------------------

    def begin_record(self, subcommand: str | None, config: dict, module, trainer: pl.Trainer) -> None:
        """``record.json``, status ``running``: a new record, or the resumed run's with a new part."""
        if self.path is None or process_rank():
            return
        record = read_record(self.path) if config.get("resume") or not self.created else None
        init = (config.get("data") or {}).get("init_args") or {}
        if record is None:
            record = RunRecord(run_folder=str(self.path), status="running", subcommand=subcommand,
                               experiment=self.identity.get("experiment", config.get("experiment")),
                               task=self.identity.get("task", init.get("task") or ""),
                               seed=config.get("seed_everything"), overrides=self.overrides, group=config.get("group"),
                               identity=self.identity)
        record.config_hash = config_hash(config)
        record.model_code = model_code(module.model)
        record.code = code_version()
        record.libraries = library_versions()
        record.device = device_description(trainer.strategy.root_device.type)
        record.precision = str(trainer.precision)
        start_part(record)
        self.record = record
        write_record(record)

    def end_record(self, status: str, error: str | None = None) -> None:
        """The record's last part ends with ``status`` (``finished``, ``failed``, ``interrupted``)."""
        record, self.record = self.record, None
        if record is None or self.path is None or not self.path.is_dir():
            return
        end_part(record, status, error)
        record.metrics = result_metrics(self.path) or record.metrics
        write_record(record)

    @property
    def stopped_by(self) -> int | None:
        """The signal that stopped the fit (SIGINT, SIGTERM), as its SaveOnInterrupt saw it; None: none did."""
        callbacks = self.trainer.callbacks if self.trainer is not None else []
        return next((cb.stopped_by for cb in callbacks if isinstance(cb, SaveOnInterrupt) and cb.stopped_by), None)


def new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def version(run_id: str) -> str:
    """A run folder's name: its start time, then its id (sorts by time, unique by id)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"


def _folder_without_csv(config, experiment: str, run_id: str, rank: int, requested: Path | None) -> Path:
    """The run folder when no CSV logger names it: ``<default_root_dir or runs>/<experiment>/<version>``."""
    resumed = config.get("resume")
    if resumed:
        path = Path(resumed)
    elif requested is not None:
        path = requested
    else:
        name = (os.environ.get(VERSION_ENV) if rank else None) or version(run_id)
        path = Path(config.trainer.get("default_root_dir") or RUNS_DIR) / experiment / name
    config.trainer.default_root_dir = str(path)
    for callback in config.trainer.get("callbacks") or []:
        # Lightning would put them under the first logger's folder (W&B's: <run>/<project>/<id>/),
        # where `--resume <run>` does not look.
        is_checkpoint = str(getattr(callback, "class_path", "")).endswith(("ModelCheckpoint", "LastCheckpoint"))
        if is_checkpoint and not callback.init_args.get("dirpath"):
            callback.init_args.dirpath = str(path / "checkpoints")
    if config.trainer.logger is False or config.trainer.logger == []:
        # It only sends the learning rate to loggers, and Lightning refuses it without one.
        callbacks = config.trainer.get("callbacks") or []
        config.trainer.callbacks = [cb for cb in callbacks
                                    if not str(getattr(cb, "class_path", "")).endswith("LearningRateMonitor")]
    return path


def _states(key: str, argv: Sequence[str]) -> bool:
    """Whether the command line names ``key``: in an argument, an inline YAML config, or a config
    file, except a run's saved full config (Lightning's header; it states every default)."""
    for arg in argv:
        text = arg
        if "\n" not in arg and len(arg) < 4096 and Path(arg).is_file():
            try:
                text = Path(arg).read_text()
            except (OSError, UnicodeDecodeError):
                continue
            if text.startswith("# lightning.pytorch=="):
                continue
        if key in text:
            return True
    return False


# --- continuing a run, and run folders named on the command line -------------------------------


def resume_config(folder: str | Path) -> Path:
    """The run's saved ``config.yaml``, the first config of ``lit-seg fit --resume <folder>``."""
    config = Path(folder) / "config.yaml"
    if not config.is_file():
        what = "does not exist" if not Path(folder).exists() else "has no config.yaml"
        raise ConfigError(f"--resume {folder}: {what}; pass a run folder, runs/<experiment>/<run> (every run writes "
                          f"its config.yaml there when it starts)")
    return config


def resume_checkpoint(folder: str | Path) -> Path:
    """The newest ``last*.ckpt`` of the run (``last.ckpt`` unless a copy was versioned ``last-v1``)."""
    candidates = sorted(Path(folder).glob("checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"--resume {folder}: no checkpoint to resume from ({Path(folder) / 'checkpoints'} holds no "
                          f"last.ckpt: the run stopped before writing one); start it again with "
                          f"--config {Path(folder) / 'config.yaml'}")
    return candidates[-1]



def resume_into(csv, folder: Path, checkpoint: dict | None) -> str:
    """Points the CSV logger at the resumed run's folder; returns the run's id (the folder's suffix).

    The folder is spelled as in the checkpoint when that is the same folder (ModelCheckpoint
    keeps its state, e.g. which file is ``last.ckpt``, only for an identical path string)."""
    saved = next((state.get("dirpath") for key, state in ((checkpoint or {}).get("callbacks") or {}).items()
                  if str(key).startswith("ModelCheckpoint") and isinstance(state, dict)), None)
    if saved and (folder / "checkpoints").is_dir() and Path(saved).is_dir() \
            and os.path.samefile(saved, folder / "checkpoints"):
        folder = Path(saved).parent
    csv.init_args.save_dir = str(folder.parent.parent)
    csv.init_args.name, csv.init_args.version = folder.parent.name, folder.name
    if csv.class_path == "lightning.pytorch.loggers.CSVLogger":  # a run from before ResumableCSVLogger
        csv.class_path = "lit_seg.train.fault_tolerance.ResumableCSVLogger"
    return folder.name.rsplit("-", 1)[-1]


def expand_run_folder_ckpt(argv: list[str]) -> list[str]:
    """``--ckpt_path <run folder>`` (validate, test, predict): the run's ``config.yaml`` right after
    the subcommand (every other argument overrides it) and its best checkpoint as the path."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            value, span = args[i + 1], (i, i + 2)
        elif arg.startswith("--ckpt_path="):
            value, span = arg.split("=", 1)[1], (i, i + 1)
        else:
            continue
        folder = Path(value)
        if not folder.is_dir():
            return args
        config = folder / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"--ckpt_path {folder} is a folder without config.yaml; pass a run folder "
                              f"(runs/<experiment>/<run>) or a .ckpt file")
        args[span[0]:span[1]] = ["--ckpt_path", str(run_checkpoint(folder))]
        first = 1 if args and not args[0].startswith("-") else 0  # after the subcommand
        return args[:first] + ["--config", str(config)] + args[first:]
    return args
