"""lit-seg from Python: the one core that the command line, the ablation runner, the tools and the
tests call.

    from lit_seg import api

    record = api.fit("experiments/ccnet_r2.yaml", overrides={"trainer.max_epochs": 1}, seed=1)
    record.metrics["val_mIoU_final"], record.run_folder      # also in <run folder>/record.json
    api.validate(record.run_folder)                          # its best checkpoint, its config
    segmenter = api.load(record.run_folder)                  # a function of an image
    parts = api.compose("experiments/ccnet_r2.yaml")         # module, data module, trainer; nothing run

Configurations are composed exactly as ``lit-seg fit --config ...`` composes them (experiment files
with their ``_base_`` pieces, later files and overrides winning), by the same parser
(:class:`~lit_seg.api.parser.LitSegCLI`), so a run started here and one started on the command
line with the same arguments are the same run, to the last bit. Every run gets a run folder with
its ``config.yaml``, checkpoints, ``summary.json`` and ``record.json`` (:mod:`lit_seg.api.records`).
"""

from __future__ import annotations

import inspect
import json
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_seg.api.config import expand_argv
from lit_seg.api.console import quiet
from lit_seg.api.environment import process_rank
from lit_seg.api.parser import SUBCOMMANDS, ConfigOnlyCLI, LitSegCLI
from lit_seg.api.records import RunRecord, read_record
from lit_seg.api.run_folder import RunFolder
from lit_seg.api.wandb_env import start_wandb_service_early
from lit_seg.errors import ConfigError, RunError, RunInterrupted, one_line
from lit_seg.inference import Segmenter, load
from lit_seg.train.checkpoints import load_module
from lit_seg.train.module import SegmentationModule

__all__ = ["Composition", "RunRecord", "Segmenter", "compose", "fit", "load", "load_module", "predict", "read_record",
           "read_run", "resolve", "resume", "run", "test", "validate"]

Overrides = Sequence[str] | Mapping[str, Any]


@dataclass
class Composition:
    """What a configuration builds: the module, the data module, the trainer, and the resolved
    configuration (a plain dict, as ``--print_config`` shows it)."""

    module: SegmentationModule
    datamodule: pl.LightningDataModule
    trainer: pl.Trainer
    config: dict


def run(argv: Sequence[str], run_dir: str | Path | None = None, epilog: str = "",
        identity: Mapping[str, str] | None = None) -> RunRecord | None:
    """Runs one Lightning subcommand from command-line style arguments, as ``lit-seg`` does:
    ``run(["fit", "--config", "experiments/ccnet_r2.yaml", "--trainer.max_epochs=1"])``.

    ``run_dir`` names the new run's folder (default ``runs/<experiment>/<time>-<id>``). Returns the
    run's record (None where no run folder was made: ``--print_config``, ``--help``). Raises what
    the run raised (:class:`~lit_seg.errors.ConfigError` for a bad input, in one line) after
    recording it: an interrupted run's record says ``interrupted``, a failed one ``failed`` with the
    error; a folder made for a run that failed before its first step is removed again, unless
    ``run_dir`` named it.
    """
    argv = [str(a) for a in argv]
    quiet()
    if argv[:1] and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        raise ConfigError(f"unknown subcommand {argv[0]!r}: choose one of {', '.join(SUBCOMMANDS)}")
    if argv[:1] != ["fit"] and any(a == "--resume" or a.startswith("--resume=") for a in argv):
        raise ConfigError(f"--resume continues a training run (lit-seg fit --resume <run>); to {argv[0]} a run use "
                          f"--ckpt_path <run>")
    expanded = expand_argv(argv)
    start_wandb_service_early(expanded)
    folder = RunFolder(run_dir, overrides=_overrides_of(argv), identity=identity)
    try:
        LitSegCLI(args=expanded, run_folder=folder, epilog=epilog)
    except SIGTERMException:
        _finish_wandb()
        signum = folder.stopped_by
        name = signal.Signals(signum).name if signum else "SIGTERM"
        folder.end_record("interrupted", f"stopped by {name}")
        folder.remove_if_unused()
        raise RunInterrupted(f"stopped by {name}", signum) from None
    except KeyboardInterrupt:
        _finish_wandb()
        folder.end_record("interrupted", "stopped at once by Ctrl-C")
        raise
    except SystemExit:  # Lightning ends a run stopped by Ctrl-C with sys.exit(1), submitit a requeued job
        if folder.record is not None:  # (--help exits 0 before there is a record)
            signum = folder.stopped_by
            folder.end_record("interrupted", f"stopped by {signal.Signals(signum).name}" if signum else
                              "stopped by Ctrl-C")
        raise
    except BaseException as err:
        folder.end_record("failed", _error_line(err))
        folder.remove_if_unused()
        raise
    record = folder.record
    url = _finish_wandb()
    folder.end_record("finished")
    if record is not None and record.subcommand == "fit" and process_rank() == 0:
        print(summary_line(record.run_folder, url), flush=True)
    return record


def summary_line(run_folder: str | Path, wandb_url: str | None = None) -> str:
    """A fit's last line: ``lit-seg: best val/mIoU 0.9076 (epoch 2) | run runs/x/y | view: <command>``."""
    try:
        summary = json.loads((Path(run_folder) / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    best, epoch = summary.get("val/mIoU_best"), summary.get("val/mIoU_best_epoch")
    score = (f"best val/mIoU {best:.4f}" + (f" (epoch {epoch})" if epoch is not None else "")
             if best is not None else "no validation")
    return f"lit-seg: {score} | run {run_folder} | view: {wandb_url or f'wandb leet {run_folder}/wandb'}"


def _finish_wandb() -> str | None:
    """Ends this process's W&B run, if one is open (its closing lines, an offline run's ``wandb sync``
    command, come before the summary line; the next run in this process gets a run of its own).
    Returns the online run's page."""
    if "wandb" not in sys.modules:
        return None
    import wandb

    run = wandb.run
    if run is None:
        return None
    url = None if getattr(run, "offline", True) else getattr(run, "url", None)
    try:
        wandb.finish()
    except Exception as err:  # noqa: BLE001 - training is done and saved; say it, do not fail the run
        print(f"lit-seg: note: W&B could not finish the run ({err}); its files are in the run folder",
              file=sys.stderr)
    return url


def fit(*configs: str | Path, overrides: Overrides = (), seed: int | None = None, group: str | None = None,
        run_dir: str | Path | None = None, identity: Mapping[str, str] | None = None) -> RunRecord:
    """Trains the composed configuration: ``configs`` are experiment files (and overlays such as
    ``experiments/tasks/binding.yaml``), ``overrides`` ``{"trainer.max_epochs": 2}`` or
    ``["--trainer.max_epochs=2"]``, ``seed`` the ``seed_everything``. Returns the run's record."""
    return run(["fit", *_config_args(configs), *_seed_args(seed, group), *_override_args(overrides)],
               run_dir=run_dir, identity=identity)


def resume(run_folder: str | Path, overrides: Overrides = ()) -> RunRecord:
    """Continues an interrupted run in its folder from its last checkpoint (``lit-seg fit --resume``)."""
    return run(["fit", "--resume", str(run_folder), *_override_args(overrides)])


def validate(model: str | Path, *configs: str | Path, overrides: Overrides = ()) -> RunRecord:
    """Evaluates a trained model (a run folder: its best checkpoint and its config; or a ``.ckpt``
    with ``configs``) on the validation split. The metrics are in the record."""
    return _evaluate("validate", model, configs, overrides)


def test(model: str | Path, *configs: str | Path, overrides: Overrides = ()) -> RunRecord:
    """As :func:`validate`, on the test split."""
    return _evaluate("test", model, configs, overrides)


def predict(model: str | Path, *configs: str | Path, overrides: Overrides = ()) -> RunRecord:
    """Writes the predictions of a trained model (``--data.init_args.predict_dir`` among the
    overrides for a folder of images) into the new run folder's ``predictions/``."""
    return _evaluate("predict", model, configs, overrides)


def compose(*configs: str | Path, overrides: Overrides = ()) -> Composition:
    """The module, data module and trainer a configuration builds, without running anything and
    without a run folder: no loggers, checkpoints or callbacks (a tool's view of an experiment)."""
    quiet()
    cli = LitSegCLI(args=_tool_args(configs, overrides), run=False)
    config = json.loads(json.dumps(cli.config.as_dict(), default=str))
    return Composition(cli.model, cli.datamodule, cli.trainer, config)


def resolve(*configs: str | Path, overrides: Overrides = ()) -> dict:
    """The configuration :func:`compose` would build, resolved (``_base_`` files merged, overrides
    applied, defaults filled in) as a plain dict, without building anything: no weights fetched, no
    data set opened."""
    cli = ConfigOnlyCLI(args=_tool_args(configs, overrides), run=False)
    return json.loads(json.dumps(cli.config.as_dict(), default=str))


def _tool_args(configs: Sequence[str | Path], overrides: Overrides) -> list[str]:
    args = [_without_run_arguments(arg) for arg in expand_argv([*_config_args(configs), *_override_args(overrides)])]
    return [*args, "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false",
            "--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false"]


def _without_run_arguments(arg: str) -> str:
    """A config file as :func:`compose` can read it: a run's saved ``config.yaml`` also holds the
    arguments of the Trainer method its subcommand ran (``ckpt_path``...), which building without
    running does not take; such a file is passed on as its YAML without them."""
    path = Path(arg)
    if "\n" in arg or path.suffix not in (".yaml", ".yml") or not path.is_file():
        return arg
    content = yaml.safe_load(path.read_text())
    method_args = {name for subcommand, skipped in LightningCLI.subcommands().items()
                   for name in inspect.signature(getattr(pl.Trainer, subcommand)).parameters
                   if name not in skipped and name != "self"}
    if not isinstance(content, dict) or not method_args & set(content):
        return arg
    return yaml.safe_dump({k: v for k, v in content.items() if k not in method_args}, sort_keys=False)


def _evaluate(subcommand: str, model: str | Path, configs: Sequence[str | Path], overrides: Overrides) -> RunRecord:
    return run([subcommand, *_config_args(configs), "--ckpt_path", str(model), *_override_args(overrides)])


def _config_args(configs: Sequence[str | Path]) -> list[str]:
    return [arg for config in configs for arg in ("--config", str(config))]


def _seed_args(seed: int | None, group: str | None) -> list[str]:
    return [*(["--seed_everything", str(seed)] if seed is not None else []),
            *(["--group", group] if group is not None else [])]


def _override_args(overrides: Overrides) -> list[str]:
    """``{"trainer.max_epochs": 2}`` -> ``["--trainer.max_epochs=2"]`` (values as JSON, which YAML reads);
    a list of ``--key=value`` strings is taken as it is."""
    if isinstance(overrides, Mapping):
        return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]
    return [str(o) for o in overrides]


def _overrides_of(argv: Sequence[str]) -> list[str]:
    """The arguments beyond the subcommand and the ``--config`` files: what a record calls overrides."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if i == 0 and arg in SUBCOMMANDS:
            continue
        if arg in ("-c", "--config"):
            skip = True
            continue
        if not arg.startswith("--config="):
            out.append(arg)
    return out


def _error_line(err: BaseException) -> str:
    """What a record says of the error that ended its run."""
    text = one_line(err)
    return text if isinstance(err, (ConfigError, RunError)) else f"{type(err).__name__}: {text}".rstrip(": ")


def read_run(folder: str | Path) -> RunRecord:
    """The record of the run in ``folder`` (a ConfigError if it has none)."""
    record = read_record(folder)
    if record is None:
        raise ConfigError(f"{folder} holds no run record (record.json): pass a run folder, runs/<experiment>/<run>")
    return record

