"""Checkpoints named on the command line: read safely, checked against the model, and found for
``lit-seg fit --resume <run folder>``. Each failure is one :class:`ConfigError` line that says
what is wrong with the file and what to pass instead.
"""

import os
from pathlib import Path

from lit_seg.errors import ConfigError


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


def run_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's best checkpoint (by ``val/mIoU``, as its
    ``summary.json`` names it, else the newest ``best*.ckpt``), else its newest ``last*.ckpt``."""
    import json

    path = Path(path)
    if not path.is_dir():
        return path
    try:
        best = json.loads((path / "summary.json").read_text()).get("best_checkpoint")
    except (OSError, ValueError):
        best = None
    if best and Path(best).is_file():
        return Path(best)
    if best and (path / "checkpoints" / Path(best).name).is_file():  # the run folder was moved
        return path / "checkpoints" / Path(best).name
    for pattern in ("checkpoints/best*.ckpt", "checkpoints/last*.ckpt"):
        candidates = sorted(path.glob(pattern), key=lambda p: p.stat().st_mtime)
        if candidates:
            return candidates[-1]
    raise ConfigError(f"run folder {path} holds no checkpoint (no checkpoints/best*.ckpt or last*.ckpt); pass a "
                      f"run folder that trained at least one epoch, or a .ckpt file")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` (tensors memory-mapped, not read), or a ConfigError saying why not."""
    import torch

    path = Path(path)
    if not path.is_file():
        hint = (" (a folder: to continue a run use lit-seg fit --resume <run folder>)" if path.is_dir() else "")
        raise ConfigError(f"checkpoint {path} not found{hint}; pass an existing .ckpt file, e.g. "
                          f"runs/<experiment>/<run>/checkpoints/last.ckpt")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a bad file
        text = " ".join(str(err).split())
        if "Unsupported global" in text:
            found = text.split("Unsupported global:", 1)[1].split(" was not")[0].strip()
            raise ConfigError(f"checkpoint {path} holds Python objects that a safe load refuses ({found}): it was not "
                              f"written by lit-seg; pass a checkpoint from a lit-seg run") from None
        reason = (text.split("WeightsUnpickler error:", 1)[-1].split(" Check the documentation")[0]
                  .split(". ")[0].strip()[:160] or type(err).__name__)
        raise ConfigError(f"checkpoint {path} cannot be read ({reason}): the file is truncated or corrupt, or not a "
                          f"PyTorch checkpoint; use another one (e.g. the best-*.ckpt beside it)") from None
    if (not isinstance(checkpoint, dict) or "state_dict" not in checkpoint
            or "pytorch-lightning_version" not in checkpoint):
        raise ConfigError(f"{path} is not a Lightning checkpoint (no state_dict and loop state): a plain weights file? "
                          f"For pretrained encoder weights use --model.encoder_weights {path}")
    return checkpoint


def check_checkpoint_fits(checkpoint: dict, model, path) -> None:
    """The checkpoint's weights fit the instantiated model: same classes, same parameter names and shapes."""
    hparams = checkpoint.get("hyper_parameters") or {}
    theirs_n = hparams.get("num_classes")
    if theirs_n is not None and theirs_n != model.num_classes:
        names = hparams.get("class_names") or []
        shown = f" ({', '.join(map(str, names[:6]))}{', ...' if len(names) > 6 else ''})" if names else ""
        raise ConfigError(
            f"checkpoint {path} predicts {theirs_n} classes{shown} but the data set has {model.num_classes} "
            f"({', '.join(model.class_names[:6])}{', ...' if model.num_classes > 6 else ''}): use a checkpoint "
            f"trained on this data set, or the data settings it was trained with (--config <its run>/config.yaml)")
    theirs, ours = checkpoint["state_dict"], model.state_dict()
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and tuple(theirs[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of this model's {len(ours)} weights missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} weight{'s' * (len(unexpected) > 1)} this model lacks "
                         f"(e.g. {unexpected[0]})")
        if reshaped:
            k = reshaped[0]
            parts.append(f"{len(reshaped)} of another shape (e.g. {k}: {tuple(theirs[k].shape)} there, "
                         f"{tuple(ours[k].shape)} here)")
        raise ConfigError(f"checkpoint {path} is from another model: {'; '.join(parts)}; pass the config of the run "
                          f"that wrote it (--config <run>/config.yaml)")


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
