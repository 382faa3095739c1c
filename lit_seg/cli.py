"""The `lightning` / `lit-seg` / `python -m lit_seg` command: LightningCLI with run folders.

Every run gets its own folder ``runs/<experiment>/<version>/`` holding the full resolved
``config.yaml``, ``checkpoints/`` (``last.ckpt`` and the best by ``val/mIoU``), ``metrics.csv``,
``summary.json`` and, inside ``wandb/``, the W&B run whose id is the folder's suffix.
"""

import copy
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lit_seg import fault_tolerance, run_lock
from lit_seg.checkpoints import (
    check_checkpoint_fits,
    expand_run_folder_ckpt,
    read_checkpoint,
    resume_checkpoint,
    resume_config,
    resume_into,
)
from lit_seg.errors import ConfigError, RunError
from lit_seg.module import SegmentationModule
from lit_seg.wandb_env import check_wandb_mode, skip_unstaged_launch_inputs, sweep_agent_run_id, wandb_online

RUNS_DIR = "runs"
# `lit-seg <command>` beside fit/validate/test/predict: the module whose main(argv) runs it.


def expand_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[str]:
    """``--config`` values for ``path``: its ``_base_`` files first (recursively), then its own keys.

    ``_base_`` (a path or a list of paths, relative to the including file) lets an experiment
    YAML state only what differs from a shared base. The including file's own keys are passed
    as a YAML string with an ``experiment`` key (the file's stem) added unless it sets one.
    """
    if "\n" in str(path):
        # Inline YAML, as this function writes it: Lightning's DDP launcher starts each process
        # with the parent's (already expanded) command line.
        return [str(path)]
    path = Path(path)
    try:
        # Resolved, so that a cycle written through `../` or a symlink is seen as one.
        resolved = path.resolve()
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"cannot read config file {path}: {getattr(err, 'strerror', None) or err}") from err
    if resolved in _seen:
        raise ConfigError(f"config {path} includes itself through _base_ (a cycle: "
                          f"{' -> '.join(p.name for p in (*_seen, resolved))}); remove one of those _base_ entries")
    try:
        text = path.read_text()
        content = yaml.safe_load(text)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".replace("\n", " ")) from err
    content = {} if content is None else content
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} holds a YAML {type(content).__name__}, not a mapping of settings: "
                          f"write `key: value` lines (model:, data:, trainer: ...), as experiments/base.yaml does")
    if "_base_" not in content:
        return [str(path)]
    bases = content.pop("_base_")
    if isinstance(bases, str):
        bases = [bases]
    if not bases or not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"config file {path}: _base_ must name a file or a list of files (relative to {path.parent}),"
                          f" e.g. `_base_: base.yaml`; got {bases!r}; give the file or remove the _base_ line")
    expanded: list[str] = []
    for base in bases:
        expanded += expand_bases(path.parent / base, _seen + (resolved,))
    content.setdefault("experiment", path.stem)
    return expanded + [yaml.safe_dump(content, sort_keys=False)]


def merged_config(*paths: str | Path) -> dict:
    """What an experiment file states, its ``_base_`` files merged in (later files win); with
    several files, each laid over the ones before, as repeated ``--config`` options are.

    The rules are the CLI's: nested keys merge, lists are replaced, and ``init_args`` are merged
    key by key, since jsonargparse keeps a base's init_args that a new ``class_path`` accepts
    (the base's head ``channels`` carries over to every head). Defaults the file does not state
    are not included: ``--print_config`` shows the complete configuration.
    """
    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merged: dict = {}
    for part in [part for path in paths for part in expand_bases(path)]:
        # expand_bases gives file paths and, for files with a `_base_`, their own keys as YAML text.
        content = yaml.safe_load(part if "\n" in part else Path(part).read_text()) or {}
        if isinstance(content, dict):
            merge(merged, content)
    return merged


def expand_argv(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = expand_run_folder_ckpt(list(argv))
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "--config") and i + 1 < len(args):
            out += [x for cfg in expand_bases(args[i + 1]) for x in (arg, cfg)]
            i += 2
            continue
        if arg == "--resume" and i + 1 < len(args) or arg.startswith("--resume="):
            # A run folder: its saved config first (later arguments override it), then the folder itself.
            folder = args[i + 1] if arg == "--resume" else arg.split("=", 1)[1]
            out += ["--config", str(resume_config(folder)), "--resume", folder]
            i += 2 if arg == "--resume" else 1
            continue
        if arg.startswith("--config="):
            out += [x for cfg in expand_bases(arg.split("=", 1)[1]) for x in ("--config", cfg)]
        else:
            out.append(arg)
        i += 1
    return out


class LogConfigCallback(SaveConfigCallback):
    """Writes ``config.yaml`` into the run folder and sends the same config to every logger.

    The config saved is the resolved one *before* the run was given its folder and W&B id, so
    ``--config <run>/config.yaml`` reproduces the run in a new folder instead of colliding with it.
    """

    def __init__(self, *args, run_independent_config=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if run_independent_config is not None:
            self.config = run_independent_config

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        flat = _flatten(yaml.safe_load(config))
        for logger in trainer.loggers:
            logger.log_hyperparams(flat)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class LitSegCLI(LightningCLI):
    def __init__(self, args: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(
            SegmentationModule,
            pl.LightningDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_callback=LogConfigCallback,
            # Parse errors are raised (not printed with the whole usage) so main() can say them in one line.
            parser_kwargs={"exit_on_error": False, "epilog": _own_commands()},
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--experiment", type=str | None, default=None,
                            help="Name of the experiment (default: the --config file's name); names the run folder.")
        parser.add_argument("--group", type=str | None, default=None,
                            help="W&B group of the run, e.g. the ablation's name (default: the W&B logger's group).")
        parser.add_argument("--resume", type=str | None, default=None,
                            help="Continue the run in this folder (runs/<experiment>/<run>) from its last checkpoint: "
                                 "its config.yaml, same folder, metrics.csv and W&B run; later arguments override.")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # --writer.format / --writer.overlays / --writer.output_dir
            from lit_seg.predict import SegmentationWriter

            parser.add_lightning_class_args(SegmentationWriter, "writer")
            parser.set_defaults(return_predictions=False)  # written to files as they come, not kept
        return parser

    def _parse_ckpt_path(self) -> None:
        """``--resume``: the run's newest last checkpoint. Any checkpoint given is then checked to be a
        readable lit-seg checkpoint before Lightning merges its hyperparameters into the config."""
        self._checkpoint = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if config.get("resume"):
            if subcommand != "fit":
                raise ConfigError(f"--resume continues a training run (lit-seg fit --resume <run>); to {subcommand} a "
                                  f"run use --config <run>/config.yaml --ckpt_path <run>/checkpoints/last.ckpt")
            config.ckpt_path = config.get("ckpt_path") or str(resume_checkpoint(config.resume))
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and str(ckpt_path) not in ("last", "best", "hpc"):
            self._checkpoint = read_checkpoint(ckpt_path)
            theirs = ((self._checkpoint.get("hyper_parameters") or {}).get("head") or {})
            ours = config.get("model", {}).get("head")
            if isinstance(theirs, dict) and ours is not None and theirs.get("class_path") != ours.get("class_path"):
                # Lightning's CLI takes the model's settings from the checkpoint: say so when that changes the head.
                print(f"lit-seg: note: {ckpt_path} holds a {str(theirs.get('class_path')).rsplit('.', 1)[-1]} model; "
                      f"its settings replace the config's {str(ours.get('class_path')).rsplit('.', 1)[-1]}",
                      file=sys.stderr)
        try:
            super()._parse_ckpt_path()
        except (ArgumentError, SystemExit) as err:
            raise ConfigError(f"checkpoint {ckpt_path} is not one of lit-seg's SegmentationModule (its "
                              f"hyperparameters do not fit: {' '.join(str(err).split())[:300]}); pass a checkpoint "
                              f"written by lit-seg") from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:
            # jsonargparse reports a class whose __init__ raised as "does not validate against any of the
            # Union subtypes" with every candidate's error; a ConfigError among them is the message to show.
            user_error = _config_error_in(err)
            if user_error is None:
                raise
            raise user_error from None

    def after_instantiate_classes(self) -> None:
        global _trainer
        _trainer = getattr(self, "trainer", None)  # read when the run fails: did it take a step?
        from lit_seg.console import drop_wandb_anonymous

        drop_wandb_anonymous(self.trainer)
        if self._checkpoint is not None:
            check_checkpoint_fits(self._checkpoint, self.model, self._get(self.config, "ckpt_path"))
            self._checkpoint = None
        factory = getattr(self.model, "optimizer_factory", None)
        if callable(factory) and self.subcommand == "fit":
            try:  # torch's optimisers check their arguments: say so now, not after the run has started
                factory(self.model.parameters())
            except ValueError as err:
                raise ConfigError(f"optimizer: {err} (model.optimizer.init_args)") from None

    def before_instantiate_classes(self) -> None:
        """Name the run and point every logger at one fresh run folder.

        The CSV logger (listed first) owns ``runs/<experiment>/<version>/``: Lightning puts the
        checkpoints and ``config.yaml`` under the first logger's folder. The W&B run lives in the
        same folder and takes the version's random suffix as its id.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else []
        csv = next((lg for lg in loggers if lg.class_path.endswith("CSVLogger")), None)
        if csv is None and not self.subcommand:
            return
        self.save_config_kwargs["run_independent_config"] = independent = copy.deepcopy(config)
        independent.resume = None  # the saved config starts a run; `--resume <folder>` continues this one
        resumed = config.get("resume")
        if resumed:
            independent.ckpt_path = None
            self.save_config_kwargs["overwrite"] = True  # the same run, with any overrides given now
        experiment = config.get("experiment") or "default"
        # Under `wandb agent` the run id is the agent's (wandb ignores any other): the folder takes it.
        agent_run_id = sweep_agent_run_id()
        run_id = agent_run_id or _new_run_id()
        rank = _process_rank()
        if csv is None:
            # No CSV logger (`--trainer.logger false`, or W&B alone): the run still gets its folder, as the
            # trainer's root (config.yaml and checkpoints/ go there), never the current folder.
            fresh = not resumed
            run_dir, run_id = _run_folder_without_csv(config, experiment, run_id, rank)
        else:
            fresh = not csv.init_args.version and not resumed
            if resumed:
                run_id = resume_into(csv, Path(resumed), self._checkpoint)
            if csv.init_args.name in (None, "", "lightning_logs"):
                csv.init_args.name = experiment
            if rank and not resumed and os.environ.get(_RUN_VERSION_ENV):  # a DDP process Lightning started
                csv.init_args.version = os.environ[_RUN_VERSION_ENV]
                run_id = csv.init_args.version.rsplit("-", 1)[-1]
            csv.init_args.version = csv.init_args.version or f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
            run_dir = Path(csv.init_args.save_dir) / csv.init_args.name / csv.init_args.version
        if not rank:
            _prepare_run_folder(run_dir, fresh, config.get("ckpt_path"))
            os.environ[_RUN_VERSION_ENV] = run_dir.name  # inherited by the processes DDP starts
        for logger in loggers:
            if logger.class_path.endswith("WandbLogger"):
                args = logger.init_args
                args.save_dir = str(run_dir)
                args.name = args.name or f"{experiment}-seed{config.get('seed_everything')}"
                args.id = None if agent_run_id else args.id or run_id
                args.job_type = args.job_type or self.subcommand
                if resumed:
                    args.resume = "allow"  # the same W&B run goes on
                if config.get("group"):
                    args.group = config.group
                # Online, checkpoints become W&B artifacts (last and best, once, at the end of a
                # successful fit) unless the command line or a config file states log_model.
                # Offline they stay off: they would copy every checkpoint into the offline run.
                if args.log_model is False and wandb_online(args) and not _states("log_model", sys.argv[1:]):
                    args.log_model = True
                if not args.tags:
                    head = config.model.head.class_path.rsplit(".", 1)[-1]
                    args.tags = [experiment, head]
                run_dir.mkdir(parents=True, exist_ok=True)
        if not rank:
            print(f"lit-seg: run folder {run_dir}", file=sys.stderr, flush=True)


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


def _run_folder_without_csv(config, experiment: str, run_id: str, rank: int) -> tuple[Path, str]:
    """The run folder when no CSV logger names it: ``<default_root_dir or runs>/<experiment>/<version>``."""
    resumed = config.get("resume")
    if resumed:
        run_dir = Path(resumed)
    else:
        version = (os.environ.get(_RUN_VERSION_ENV) if rank else None) or f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
        run_dir = Path(config.trainer.get("default_root_dir") or RUNS_DIR) / experiment / version
    config.trainer.default_root_dir = str(run_dir)
    for callback in config.trainer.get("callbacks") or []:
        # Lightning would put them under the first logger's folder (W&B's: <run>/<project>/<id>/),
        # where `--resume <run>` does not look.
        is_checkpoint = str(getattr(callback, "class_path", "")).endswith("ModelCheckpoint")
        if is_checkpoint and not callback.init_args.get("dirpath"):
            callback.init_args.dirpath = str(run_dir / "checkpoints")
    if config.trainer.logger is False or config.trainer.logger == []:
        # It only sends the learning rate to loggers, and Lightning refuses it without one.
        callbacks = config.trainer.get("callbacks") or []
        config.trainer.callbacks = [cb for cb in callbacks
                                    if not str(getattr(cb, "class_path", "")).endswith("LearningRateMonitor")]
    return run_dir, run_dir.name.rsplit("-", 1)[-1]


def _new_run_id() -> str:
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


# --- The run folder --------------------------------------------------------------------------

# The run folder this process created (removed again if the command fails before its first step).
_created_run_folder: Path | None = None
# The fit's Trainer, once built (its global_step says whether the run took a step before failing).
_trainer: pl.Trainer | None = None
# The run folder's name, for the other processes of a DDP run that Lightning starts from this one.
_RUN_VERSION_ENV = "LIT_SEG_RUN_VERSION"


def _process_rank() -> int:
    """This process's global rank, from the launcher's environment (as Lightning reads it); 0 alone."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _config_error_in(err: BaseException) -> ConfigError | None:
    """The ConfigError that caused ``err`` (through ``raise ... from`` or during handling), if any."""
    seen: set[int] = set()
    stack = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConfigError):
            return current
        stack += [current.__cause__, current.__context__]
    return None


def _prepare_run_folder(run_dir: Path, fresh: bool, ckpt_path) -> None:
    """Creates the run folder, or says in one line why it cannot be written."""
    global _created_run_folder
    if fresh and str(ckpt_path) == "last":
        raise ConfigError("--ckpt_path last looks in this run's own folder, and every run gets a new one: pass the "
                          "checkpoint's path (runs/<experiment>/<run>/checkpoints/last.ckpt), or to continue an "
                          "earlier run: lit-seg fit --resume runs/<experiment>/<run>")
    existed = run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write the run folder {run_dir}: {err.strerror or err}; run lit-seg from a folder "
                          f"you can write to (run folders go under ./{Path(*run_dir.parts[:1])}) or give the CSV "
                          f"logger another save_dir") from None
    if not existed:
        _created_run_folder = run_dir
    run_lock.acquire(run_dir)  # one writer per run folder: a second `--resume` of it stops here


def _remove_unused_run_folder() -> None:
    """After a failed start: the run folder this process created, unless the run took a step or wrote a
    checkpoint (what is left then is a run, to resume or read); config, W&B files and the lock go with it."""
    global _created_run_folder
    folder, _created_run_folder = _created_run_folder, None
    if folder is None or not folder.is_dir():
        return
    if (_trainer is not None and _trainer.global_step > 0) or any(folder.glob("checkpoints/*.ckpt")):
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


def _parse_error_message(err: Exception) -> str:
    text = " ".join(str(err).split())
    if '"model.head"' in text and "Option 'num_classes' is not accepted" in text:
        return ("model.head.init_args.num_classes: the class count comes from the data set (data.num_classes, "
                "passed to the head when it is built) and must not be given to the head; remove "
                "--model.head.init_args.num_classes (to train on other classes, change the data set)")
    if '"model.head"' in text:
        from lit_seg.models import heads

        choices = ", ".join(sorted({variant.head.__name__ for variant in heads.HEADS.values()}))
        return (f"unknown or invalid head: choose one of {choices} (lit_seg.models.heads) or give the dotted "
                f"path of a DecodeHead subclass. Parser said: {text}")
    return f"{text} (see --help for the accepted options)"


# Research tools behind subcommands of the same command: the module whose ``main(argv)`` runs each.
TOOLS = {
    "bench": "lit_seg.study.bench",               # cost harness: operators vs the seeds, heads, sweeps
    "bench-step": "lit_seg.study.training_step",  # Lightning's per-step overhead against a bare loop
    "ablate": "lit_seg.study.ablate",             # experiments x seeds, one results row per run
    "report": "lit_seg.study.report",             # an ablation's CSV as a table and a plot
    "maps": "lit_seg.study.maps",                 # attention maps of a trained head on an image
    "receptive-field": "lit_seg.study.receptive_field",  # which input pixels a prediction can depend on
    "sweep": "lit_seg.study.sweep",               # the W&B sweep file, from the head list
    "export": "lit_seg.export",                   # a trained model as ONNX or TorchScript
    "dashboard": "lit_seg.study.dashboard",       # an ablation's W&B workspace (wandb-workspaces), online
}


def _own_commands() -> str:
    """The ``--help`` epilog: the subcommands that are lit-seg's, not LightningCLI's."""
    return f"lit-seg's own commands: {', '.join([*TOOLS, 'check-data'])} (each takes --help)."


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    # The W&B run is created inside the run folder before the CSV logger writes there; the
    # folder name is unique per run, so this warning about an existing folder is moot.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    from lit_seg.console import quiet

    quiet()
    global _created_run_folder, _trainer
    _created_run_folder, _trainer, fault_tolerance.stopped_by = None, None, None
    try:
        if argv[:1] and argv[0] in TOOLS:  # commands of lit-seg's own, not LightningCLI's
            import importlib

            code = importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
            raise SystemExit(code if isinstance(code, int) else 0)
        check_wandb_mode()
        skip_unstaged_launch_inputs()
        argv = expand_argv(argv)
        if argv[:1] == ["check-data"]:  # every file of the data set read once, before training
            from lit_seg.data.check import main as check_data

            raise SystemExit(check_data(argv[1:]))
        # Through sys.argv, not args=: LightningCLI warns when it is given both.
        sys.argv = [sys.argv[0], *argv]
        LitSegCLI()
    except ConfigError as err:
        _remove_unused_run_folder()
        print(f"lit-seg: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except ArgumentError as err:
        _remove_unused_run_folder()
        print(f"lit-seg: error: {_parse_error_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except MisconfigurationException as err:  # Lightning's word for a bad Trainer setting
        _remove_unused_run_folder()
        print(f"lit-seg: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunError as err:  # a full disk, a diverged loss: said in one line (what was kept, how to go on)
        _remove_unused_run_folder()  # only if it failed before its first step
        print(f"lit-seg: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None
    except ValueError as err:
        _remove_unused_run_folder()
        message = _lightning_setting_error(err)
        if message is None:
            raise
        print(f"lit-seg: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException:  # Ctrl-C or SIGTERM; SaveOnInterrupt said where the checkpoint is
        _remove_unused_run_folder()
        if fault_tolerance.stopped_by is None:
            print("lit-seg: stopped by SIGTERM before training started, or without lit_seg.fault_tolerance."
                  "SaveOnInterrupt in trainer.callbacks: nothing saved beyond the last checkpoint", file=sys.stderr)
        raise SystemExit(128 + int(fault_tolerance.stopped_by or 15)) from None
    except Exception:  # an unexpected error: its traceback is shown, the empty run folder is not left
        _remove_unused_run_folder()
        raise


def _lightning_setting_error(err: ValueError) -> str | None:
    """A Trainer setting Lightning refuses only once the data are loaded, as one line (else None)."""
    text = " ".join(str(err).split())
    match = re.search(r"`val_check_interval` \((\d+)\) must be less than or equal to the number of the training "
                      r"batches \((\d+)\)", text)
    if match:
        given, batches = match.groups()
        return (f"trainer.val_check_interval {given} is more batches than an epoch has ({batches} training batches): "
                f"give at most {batches}, a fraction of the epoch such as 0.5, or count across epochs with "
                f"--trainer.check_val_every_n_epoch null")
    return None


def _one_line(err: Exception) -> str:
    """The message; for an error re-raised from a DataLoader worker (which carries the worker's
    traceback in its text), the original message only."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.startswith(("lit_seg.errors.", "ConfigError", "RunError")) else last
    return " ".join(text.split())
