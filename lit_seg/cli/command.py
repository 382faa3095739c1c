"""The `lightning` / `lit-seg` / `python -m lit_seg` command: LightningCLI's subcommands run through
the programmatic core (:func:`lit_seg.api.run`), lit-seg's own tools (:data:`TOOLS`), and every
failure said in one line.
"""

import importlib
import os
import re
import sys
from collections.abc import Sequence

from jsonargparse import ArgumentError
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_seg import api
from lit_seg.api.parser import SUBCOMMANDS
from lit_seg.api.wandb_env import check_wandb_mode
from lit_seg.cli.console import quiet
from lit_seg.errors import ConfigError, RunError, RunInterrupted, one_line
from lit_seg.models.heads import HEADS

# lit-seg's own subcommands: the module whose ``main(argv)`` runs each, and what it does.
TOOLS = {
    "ablate": ("lit_seg.study.ablate", "run experiments x tasks x seeds (locally or on SLURM), one results row each"),
    "report": ("lit_seg.study.report", "an ablation's results CSV as a table and a plot"),
    "check-data": ("lit_seg.study.check_data", "read every file of a data set once, before training"),
    "maps": ("lit_seg.study.maps", "attention maps of a trained model on an image"),
    "receptive-field": ("lit_seg.study.receptive_field", "which input pixels a prediction can depend on"),
    "export": ("lit_seg.inference.export", "a trained model as ONNX or TorchScript"),
    "bench": ("lit_seg.study.bench", "cost of the operators and heads: time, memory, FLOPs"),
    "bench-step": ("lit_seg.study.training_step", "Lightning's per-step overhead against a bare loop"),
    "sweep": ("lit_seg.study.sweep", "the W&B sweep file, from the head list"),
    "dashboard": ("lit_seg.study.dashboard", "an ablation's W&B workspace (online)"),
}


def help_epilog() -> str:
    """``lit-seg --help``'s closing list: lit-seg's own subcommands, a line each."""
    width = max(map(len, TOOLS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in TOOLS.items()]
    return "lit-seg's own subcommands (each takes --help):\n" + "\n".join(lines)


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    quiet()
    if argv[:1] and argv[0] in TOOLS:
        raise SystemExit(_run_tool(argv[0], argv[1:]))
    if argv[:1] and not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
        _fail(f"unknown subcommand {argv[0]!r}: choose one of {', '.join([*SUBCOMMANDS, *TOOLS])} (lit-seg --help)", 2)
    try:
        check_wandb_mode()
        api.run(argv, epilog=help_epilog())
    except RunInterrupted as err:  # Ctrl-C or SIGTERM; SaveOnInterrupt said where the checkpoint is
        if err.signal is None:
            print("lit-seg: stopped by SIGTERM before training started, or without lit_seg.train.fault_tolerance."
                  "SaveOnInterrupt in trainer.callbacks: nothing saved beyond the last checkpoint", file=sys.stderr)
        raise SystemExit(128 + int(err.signal or 15)) from None
    except (ConfigError, MisconfigurationException) as err:  # a bad input; MisconfigurationException: Lightning's
        _fail(one_line(err), 2)
    except ArgumentError as err:
        _fail(_parse_error_message(err), 2)
    except RunError as err:  # a full disk, a diverged loss: said in one line (what was kept, how to go on)
        _fail(one_line(err), 1)
    except ValueError as err:
        message = _lightning_setting_error(err)
        if message is None:
            raise
        _fail(message, 2)


def _run_tool(name: str, argv: list[str]) -> int:
    try:
        code = importlib.import_module(TOOLS[name][0]).main(argv)
        sys.stdout.flush()  # a reader that stopped early (`| head`) shows here, not at exit
    except BrokenPipeError:
        # What the reader wanted it got; the rest goes nowhere, without a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ConfigError as err:
        _fail(one_line(err), 2)
    except ArgumentError as err:  # a tool's configuration arguments (those lit-seg fit takes)
        _fail(_parse_error_message(err), 2)
    return code if isinstance(code, int) else 0


def _fail(message: str, code: int) -> None:
    print(f"lit-seg: error: {message}", file=sys.stderr)
    raise SystemExit(code) from None


def _parse_error_message(err: Exception) -> str:
    text = " ".join(str(err).split())
    if '"model.head"' in text and "Option 'num_classes' is not accepted" in text:
        return ("model.head.init_args.num_classes: the class count comes from the data set (data.num_classes, "
                "passed to the head when it is built) and must not be given to the head; remove "
                "--model.head.init_args.num_classes (to train on other classes, change the data set)")
    if '"model.head"' in text:
        choices = ", ".join(sorted({variant.head.__name__ for variant in HEADS.values()}))
        return (f"unknown or invalid head: choose one of {choices} (lit_seg.models.heads) or give the dotted "
                f"path of a DecodeHead subclass. Parser said: {text}")
    return f"{text} (see --help for the accepted options)"


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
