"""The configuration parser and builder of every run: :class:`LitSegCLI`, LightningCLI for
:class:`~lightning.pytorch.LightningModule` :class:`~lit_seg.train.module.SegmentationModule` and any
data module, writing into a :class:`~lit_seg.api.run_folder.RunFolder`.

Only LightningCLI's public hooks are used. Callers pass the arguments explicitly (``args=``): the
command (:mod:`lit_seg.cli`) and the programmatic core (:mod:`lit_seg.api`) alike.
"""

from __future__ import annotations

import copy
import inspect
import os
from argparse import RawDescriptionHelpFormatter
from collections.abc import Sequence

import lightning.pytorch as pl
import yaml
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from lit_seg.api.run_folder import RunFolder
from lit_seg.errors import ConfigError
from lit_seg.inference.predict import SegmentationWriter
from lit_seg.train.checkpoints import check_checkpoint_fits, read_checkpoint
from lit_seg.train.fault_tolerance import run_folder
from lit_seg.train.module import SegmentationModule
from lit_seg.train.precision import AUTO, resolve_precision
from lit_seg.train.trainer import Trainer

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the epilog's lines kept as they are written (a table of commands)."""


class LogConfigCallback(SaveConfigCallback):
    """Writes ``config.yaml`` into the run folder and sends the same config to every logger.

    The config saved is the resolved one *before* the run was given its folder and W&B id, so
    ``--config <run>/config.yaml`` reproduces the run in a new folder instead of colliding with it.
    It goes into the run folder (:func:`~lit_seg.train.fault_tolerance.run_folder`), not Lightning's
    ``trainer.log_dir``, which for a logger other than Lightning's CSV and TensorBoard ones is the
    logger's ``save_dir``, shared by every run.
    """

    def __init__(self, *args, run_independent_config=None, **kwargs) -> None:
        super().__init__(*args, save_to_log_dir=False, **kwargs)
        if run_independent_config is not None:
            self.config = run_independent_config

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        folder = run_folder(trainer)
        os.makedirs(folder, exist_ok=True)
        self.parser.save(self.config, os.path.join(folder, self.config_filename), skip_none=False,
                         overwrite=self.overwrite, multifile=self.multifile)
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
    """LightningCLI for :class:`SegmentationModule` and any data module, writing into ``run_folder``.

    ``args`` starts with a subcommand (``fit``, ``validate``, ``test``, ``predict``) when ``run`` is
    True (Lightning's default); with ``run=False`` the classes are built and not run (the run folder
    is made only if a CSV logger is configured). ``run_folder`` names the folder (a new one under
    ``runs/<experiment>/`` by default). ``epilog``: text after ``--help``'s list of options.
    """

    def __init__(self, args: Sequence[str] | None = None, run_folder: RunFolder | None = None, epilog: str = "",
                 **kwargs) -> None:
        self.run_folder = run_folder if run_folder is not None else RunFolder()
        self.given_args = [str(a) for a in args] if isinstance(args, (list, tuple)) else []
        first = self.given_args[0] if self.given_args else None
        self._chosen_subcommand = first if kwargs.get("run", True) and first in SUBCOMMANDS else None
        self._checkpoint, self._checkpoint_path = _checkpoint_given(self.given_args)
        if self._checkpoint is not None:  # before Lightning lays the checkpoint's hyperparameters over the config
            _check_hyperparameters(self._checkpoint, self._checkpoint_path)
        self.independent_config: Namespace | None = None
        super().__init__(
            SegmentationModule,
            pl.LightningDataModule,
            trainer_class=Trainer,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_callback=LogConfigCallback,
            # Parse errors are raised (not printed with the whole usage) so the caller can say them in one line.
            parser_kwargs={"exit_on_error": False, "epilog": epilog, "prog": "lit-seg",
                           "formatter_class": HelpFormatter},
            args=args,
            **kwargs,
        )

    def subcommands(self) -> dict[str, set[str]]:
        """Lightning's subcommands, narrowed to the one the arguments start with: only its parser is
        built (each holds the Trainer's, model's and data classes' arguments). ``lit-seg --help`` and
        anything not starting with a subcommand get them all."""
        every = LightningCLI.subcommands()
        chosen = getattr(self, "_chosen_subcommand", None)
        return {chosen: every[chosen]} if chosen in every else every

    def parse_arguments(self, parser, args) -> None:
        # The arguments are always given explicitly (args=), never read from sys.argv: Lightning's
        # warning about giving both is moot here, and a process's own sys.argv (a test runner's, a
        # job's) must not count.
        self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)

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
        if self._chosen_subcommand == "predict":  # --writer.format / --writer.overlays / --writer.output_dir
            parser.add_lightning_class_args(SegmentationWriter, "writer")

    def before_instantiate_classes(self) -> None:
        """``precision: auto`` resolved (so that config.yaml, the record and a resume hold the
        precision this machine chose), the run's folder (:meth:`RunFolder.assign`) and the config
        saved into it."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.get("precision") == AUTO:
            config.trainer.precision, reason = resolve_precision(config.trainer.get("accelerator"))
            rank_zero_info(f"lit-seg: precision auto: {config.trainer.precision}, since {reason}")
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else []
        if not self.subcommand and not any(lg.class_path.endswith("CSVLogger") for lg in loggers):
            return
        self.independent_config = independent = copy.deepcopy(config)
        self.save_config_kwargs["run_independent_config"] = independent
        independent.resume = None  # the saved config starts a run; `--resume <folder>` continues this one
        if config.get("resume"):
            independent.ckpt_path = None
            self.save_config_kwargs["overwrite"] = True  # the same run, with any overrides given now
        self.run_folder.assign(config, self.subcommand, self._checkpoint, self.given_args)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:
            # jsonargparse reports a class whose __init__ raised as "does not validate against any of the
            # Union subtypes" with every candidate's error; a ConfigError among them is the message to show.
            user_error = config_error_in(err)
            if user_error is None:
                raise
            raise user_error from None

    def after_instantiate_classes(self) -> None:
        self.run_folder.trainer = getattr(self, "trainer", None)  # read when the run fails: did it take a step?
        if self.independent_config is not None:
            # The config as config.yaml will hold it (fast_dev_run writes none: then the parsed values).
            saver = next((cb for cb in self.trainer.callbacks if isinstance(cb, LogConfigCallback)), None)
            resolved = (yaml.safe_load(saver.parser.dump(self.independent_config, skip_none=False, format="yaml"))
                        if saver is not None else self.independent_config.as_dict())
            self.run_folder.begin_record(self.subcommand, resolved, self.model, self.trainer)
        if self._checkpoint is not None:
            check_checkpoint_fits(self._checkpoint, self.model, self._checkpoint_path)
            self._checkpoint = None
        factory = getattr(self.model, "optimizer_factory", None)
        if callable(factory) and self.subcommand == "fit":
            try:  # torch's optimisers check their arguments: say so now, not after the run has started
                factory(self.model.parameters())
            except ValueError as err:
                raise ConfigError(f"optimizer: {err} (model.optimizer.init_args)") from None

    def before_predict(self) -> None:
        # Predictions are written to files as they come (the writer), not kept in memory.
        if self.config_init.predict.get("return_predictions") is None:
            self.config_init.predict.return_predictions = False


class ConfigOnlyCLI(LitSegCLI):
    """:class:`LitSegCLI` that parses and resolves the configuration and builds nothing: no model,
    data module or trainer (``run=False``; a tool that needs only the configuration)."""

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass


def _checkpoint_given(args: Sequence[str]) -> tuple[dict | None, str | None]:
    """The checkpoint ``--ckpt_path`` names (the last one given), read and checked to be a Lightning
    checkpoint before Lightning reads its hyperparameters (a one-line ConfigError otherwise)."""
    path = None
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--ckpt_path="):
            path = arg.split("=", 1)[1]
    if not path or path in ("last", "best", "hpc", "null", "None"):
        return None, None
    return read_checkpoint(path), path


def _check_hyperparameters(checkpoint: dict, path: str) -> None:
    """Lightning lays a checkpoint's hyperparameters over the model's config: they must be
    SegmentationModule's."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    own = "lit_seg.train.module.SegmentationModule"
    accepted = set(inspect.signature(SegmentationModule).parameters)
    foreign_class = hparams.get("_class_path") not in (None, own, "lit_seg.module.SegmentationModule")
    unknown = sorted(set(hparams) - accepted - {"_class_path"})
    if foreign_class or unknown:
        what = hparams.get("_class_path") if foreign_class else f"options {', '.join(unknown[:5])}"
        raise ConfigError(f"checkpoint {path} is not one of lit-seg's SegmentationModule (it was written by {what}); "
                          f"pass a checkpoint written by lit-seg")


def config_error_in(err: BaseException) -> ConfigError | None:
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
