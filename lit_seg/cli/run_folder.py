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

from lit_seg.cli import run_lock
from lit_seg.cli.checkpoints import resume_into
from lit_seg.cli.wandb_env import sweep_agent_run_id, wandb_online
from lit_seg.errors import ConfigError

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

    def __init__(self) -> None:
        self.path: Path | None = None
        self.created = False  # by this process (a resumed run's folder is never removed)
        self.trainer: pl.Trainer | None = None

    # --- naming --------------------------------------------------------------------------

    def assign(self, config, subcommand: str | None, checkpoint: dict | None) -> None:
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
        if csv is None:
            # No CSV logger (`--trainer.logger false`, or W&B alone): the run still gets its folder, as the
            # trainer's root (config.yaml and checkpoints/ go there), never the current folder.
            fresh = not resumed
            path = _folder_without_csv(config, experiment, run_id, rank)
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
                self._wire_wandb(logger.init_args, config, subcommand, experiment, run_id, agent_run_id, resumed)
        if not rank:
            print(f"lit-seg: run folder {path}", file=sys.stderr, flush=True)

    def _wire_wandb(self, args, config, subcommand, experiment, run_id, agent_run_id, resumed) -> None:
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
        if args.log_model is False and wandb_online(args) and not _states("log_model", sys.argv[1:]):
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
        checkpoint (what is left then is a run, to resume or read); config, W&B files and the lock go."""
        folder, created = self.path, self.created
        self.created = False
        if not created or folder is None or not folder.is_dir():
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

    @property
    def stopped_by(self) -> int | None:
        """The signal that stopped the fit (SIGINT, SIGTERM), as its SaveOnInterrupt saw it; None: none did."""
        from lit_seg.train.fault_tolerance import SaveOnInterrupt

        callbacks = self.trainer.callbacks if self.trainer is not None else []
        return next((cb.stopped_by for cb in callbacks if isinstance(cb, SaveOnInterrupt) and cb.stopped_by), None)


def new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def version(run_id: str) -> str:
    """A run folder's name: its start time, then its id (sorts by time, unique by id)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"


def process_rank() -> int:
    """This process's global rank, from the launcher's environment (as Lightning reads it); 0 alone."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _folder_without_csv(config, experiment: str, run_id: str, rank: int) -> Path:
    """The run folder when no CSV logger names it: ``<default_root_dir or runs>/<experiment>/<version>``."""
    resumed = config.get("resume")
    if resumed:
        path = Path(resumed)
    else:
        name = (os.environ.get(VERSION_ENV) if rank else None) or version(run_id)
        path = Path(config.trainer.get("default_root_dir") or RUNS_DIR) / experiment / name
    config.trainer.default_root_dir = str(path)
    for callback in config.trainer.get("callbacks") or []:
        # Lightning would put them under the first logger's folder (W&B's: <run>/<project>/<id>/),
        # where `--resume <run>` does not look.
        is_checkpoint = str(getattr(callback, "class_path", "")).endswith("ModelCheckpoint")
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
