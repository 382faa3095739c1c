"""The `lightning` / `lit-seg` / `python -m lit_seg` command: LightningCLI with run folders.

Every run gets its own folder ``runs/<experiment>/<version>/`` holding the full resolved
``config.yaml``, ``checkpoints/`` (``last.ckpt`` and the best by ``val/mIoU``), ``metrics.csv``,
``summary.json`` and, inside ``wandb/``, the W&B run whose id is the folder's suffix.
"""

import copy
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lit_seg.errors import ConfigError
from lit_seg.module import SegmentationModule

RUNS_DIR = "runs"


def expand_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[str]:
    """``--config`` values for ``path``: its ``_base_`` files first (recursively), then its own keys.

    ``_base_`` (a path or a list of paths, relative to the including file) lets an experiment
    YAML state only what differs from a shared base. The including file's own keys are passed
    as a YAML string with an ``experiment`` key (the file's stem) added unless it sets one.
    """
    path = Path(path)
    if path in _seen:
        raise ConfigError(f"config {path} includes itself through _base_")
    try:
        text = path.read_text()
        content = yaml.safe_load(text) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".replace("\n", " ")) from err
    if not isinstance(content, dict) or "_base_" not in content:
        return [str(path)]
    bases = content.pop("_base_")
    expanded: list[str] = []
    for base in [bases] if isinstance(bases, str) else bases:
        expanded += expand_bases(path.parent / base, _seen + (path,))
    content.setdefault("experiment", path.stem)
    return expanded + [yaml.safe_dump(content, sort_keys=False)]


def expand_argv(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "--config") and i + 1 < len(args):
            out += [x for cfg in expand_bases(args[i + 1]) for x in (arg, cfg)]
            i += 2
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
            parser_kwargs={"exit_on_error": False},
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--experiment", type=str | None, default=None,
                            help="Name of the experiment (default: the --config file's name); names the run folder.")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Name the run and point every logger at one fresh run folder.

        The CSV logger (listed first) owns ``runs/<experiment>/<version>/``: Lightning puts the
        checkpoints and ``config.yaml`` under the first logger's folder. The W&B run lives in the
        same folder and takes the version's random suffix as its id.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else []
        csv = next((lg for lg in loggers if lg.class_path.endswith("CSVLogger")), None)
        if csv is None:
            return
        self.save_config_kwargs["run_independent_config"] = copy.deepcopy(config)
        experiment = config.get("experiment") or "default"
        run_id = _new_run_id()
        if csv.init_args.name in (None, "", "lightning_logs"):
            csv.init_args.name = experiment
        csv.init_args.version = csv.init_args.version or f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
        run_dir = Path(csv.init_args.save_dir) / csv.init_args.name / csv.init_args.version
        for logger in loggers:
            if logger.class_path.endswith("WandbLogger"):
                args = logger.init_args
                args.save_dir = str(run_dir)
                args.name = args.name or f"{experiment}-seed{config.get('seed_everything')}"
                args.id = args.id or run_id
                args.job_type = args.job_type or self.subcommand
                if not args.tags:
                    head = config.model.head.class_path.rsplit(".", 1)[-1]
                    args.tags = [experiment, head]
                run_dir.mkdir(parents=True, exist_ok=True)
        print(f"lit-seg: run folder {run_dir}", file=sys.stderr, flush=True)


def _new_run_id() -> str:
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _check_wandb_mode() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    if os.environ["WANDB_MODE"] not in ("online", "run"):
        return
    has_netrc = (Path.home() / ".netrc").is_file() and "api.wandb.ai" in (Path.home() / ".netrc").read_text()
    if not os.environ.get("WANDB_API_KEY") and not has_netrc:
        raise ConfigError(
            "WANDB_MODE=online needs a W&B API key: set WANDB_API_KEY (or run `wandb login`), "
            "or log offline with WANDB_MODE=offline and upload later with `wandb sync`"
        )


def _parse_error_message(err: Exception) -> str:
    text = " ".join(str(err).split())
    if '"model.head"' in text:
        from lit_seg.models import heads

        choices = ", ".join(name for name in heads.__all__ if name != "DecodeHead")
        return (f"unknown or invalid head: choose one of {choices} (lit_seg.models.heads) or give the dotted "
                f"path of a DecodeHead subclass. Parser said: {text}")
    return f"{text} (see --help for the accepted options)"


def main(args: Sequence[str] | None = None) -> None:
    # The W&B run is created inside the run folder before the CSV logger writes there; the
    # folder name is unique per run, so this warning about an existing folder is moot.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    try:
        _check_wandb_mode()
        argv = expand_argv(sys.argv[1:] if args is None else args)
        # Through sys.argv, not args=: LightningCLI warns when it is given both.
        sys.argv = [sys.argv[0], *argv]
        LitSegCLI()
    except ConfigError as err:
        print(f"lit-seg: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except ArgumentError as err:
        print(f"lit-seg: error: {_parse_error_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None
