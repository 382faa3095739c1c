"""The `lightning` / `lit-seg` / `python -m lit_seg` command: LightningCLI with run folders
(:class:`~lit_seg.cli.run_folder.RunFolder`), composed configs (:mod:`lit_seg.cli.config`),
one-line errors, and lit-seg's own research commands (:data:`TOOLS`).
"""

import copy
import os
import re
import sys
import warnings
from collections.abc import Sequence

import lightning.pytorch as pl
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lit_seg.cli.checkpoints import check_checkpoint_fits, read_checkpoint, resume_checkpoint
from lit_seg.cli.config import expand_argv
from lit_seg.cli.run_folder import RunFolder
from lit_seg.cli.wandb_env import check_wandb_mode, skip_unstaged_launch_inputs, start_wandb_service_early
from lit_seg.errors import ConfigError, RunError
from lit_seg.train.callbacks import RunSummary
from lit_seg.train.module import SegmentationModule


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
    """LightningCLI for :class:`SegmentationModule` and any data module, writing into ``run_folder``."""

    def __init__(self, args: Sequence[str] | None = None, run_folder: RunFolder | None = None, **kwargs) -> None:
        self.run_folder = run_folder if run_folder is not None else RunFolder()
        given = sys.argv[1:] if args is None else args  # LightningCLI also takes a dict or Namespace
        self._chosen_subcommand = given[0] if isinstance(given, (list, tuple)) and given else None
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

    def subcommands(self) -> dict[str, set[str]]:
        """Lightning's subcommands, narrowed to the one the command line starts with: only its parser
        is built (each holds the Trainer's, model's and data classes' arguments: the other three
        cost 0.08 s of start-up, README "Cost of each operator"). ``lit-seg --help`` and anything not
        starting with a subcommand get them all."""
        every = LightningCLI.subcommands()
        chosen = getattr(self, "_chosen_subcommand", None)
        return {chosen: every[chosen]} if chosen in every else every

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
            from lit_seg.inference.predict import SegmentationWriter

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
        self.run_folder.trainer = getattr(self, "trainer", None)  # read when the run fails: did it take a step?
        from lit_seg.cli.console import drop_wandb_anonymous

        drop_wandb_anonymous(self.trainer)
        for callback in getattr(self.trainer, "callbacks", []):
            if isinstance(callback, RunSummary):
                callback.defer_console_line = True  # main() prints it after W&B's own last lines
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
        """The run's folder (:meth:`RunFolder.assign`) and the config saved into it."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else []
        if not self.subcommand and not any(lg.class_path.endswith("CSVLogger") for lg in loggers):
            return
        self.save_config_kwargs["run_independent_config"] = independent = copy.deepcopy(config)
        independent.resume = None  # the saved config starts a run; `--resume <folder>` continues this one
        if config.get("resume"):
            independent.ckpt_path = None
            self.save_config_kwargs["overwrite"] = True  # the same run, with any overrides given now
        self.run_folder.assign(config, self.subcommand, self._checkpoint)


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
    "export": "lit_seg.inference.export",                   # a trained model as ONNX or TorchScript
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
    from lit_seg.cli.console import quiet

    quiet()
    run = RunFolder()
    try:
        if argv[:1] and argv[0] in TOOLS:  # commands of lit-seg's own, not LightningCLI's
            import importlib

            try:
                code = importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
                sys.stdout.flush()  # a reader that stopped early (`| head`) shows here, not at exit
            except BrokenPipeError:
                # What the reader wanted it got; the rest goes nowhere, without a traceback.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise SystemExit(1) from None
            raise SystemExit(code if isinstance(code, int) else 0)
        check_wandb_mode()
        argv = expand_argv(argv)
        start_wandb_service_early(argv)
        skip_unstaged_launch_inputs()
        if argv[:1] == ["check-data"]:  # every file of the data set read once, before training
            from lit_seg.data.check import main as check_data

            raise SystemExit(check_data(argv[1:]))
        # Through sys.argv, not args=: LightningCLI warns when it is given both.
        sys.argv = [sys.argv[0], *argv]
        _end_console(LitSegCLI(run_folder=run))
    except ConfigError as err:
        run.remove_if_unused()
        print(f"lit-seg: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except ArgumentError as err:
        run.remove_if_unused()
        print(f"lit-seg: error: {_parse_error_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except MisconfigurationException as err:  # Lightning's word for a bad Trainer setting
        run.remove_if_unused()
        print(f"lit-seg: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunError as err:  # a full disk, a diverged loss: said in one line (what was kept, how to go on)
        run.remove_if_unused()  # only if it failed before its first step
        print(f"lit-seg: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None
    except ValueError as err:
        run.remove_if_unused()
        message = _lightning_setting_error(err)
        if message is None:
            raise
        print(f"lit-seg: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException:  # Ctrl-C or SIGTERM; SaveOnInterrupt said where the checkpoint is
        run.remove_if_unused()
        if run.stopped_by is None:
            print("lit-seg: stopped by SIGTERM before training started, or without lit_seg.train.fault_tolerance."
                  "SaveOnInterrupt in trainer.callbacks: nothing saved beyond the last checkpoint", file=sys.stderr)
        raise SystemExit(128 + int(run.stopped_by or 15)) from None
    except Exception:  # an unexpected error: its traceback is shown, the empty run folder is not left
        run.remove_if_unused()
        raise


def _end_console(cli: LitSegCLI) -> None:
    """The console's last line is the run's summary (best val/mIoU, run folder, how to view it): the
    W&B run is finished first, so that its closing lines (an offline run's `wandb sync` command)
    come before it rather than at exit, after it."""
    lines = [callback.console_line for callback in getattr(getattr(cli, "trainer", None), "callbacks", [])
             if isinstance(callback, RunSummary) and callback.console_line]
    if not lines:
        return
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            try:
                wandb.finish()
            except Exception as err:  # noqa: BLE001 - training is done and saved; say it, do not fail the run
                print(f"lit-seg: note: W&B could not finish the run ({err}); its files are in the run folder",
                      file=sys.stderr)
    print(lines[-1], flush=True)


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
