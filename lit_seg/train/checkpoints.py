"""Trained models on disk: a run folder's checkpoint found, read safely, checked against a model,
and loaded (:func:`load_module`, the one loader every tool uses). Each failure is one
:class:`ConfigError` line that says what is wrong with the file and what to pass instead.
"""

import json
from pathlib import Path

import torch
import yaml

from lit_seg.errors import ConfigError
from lit_seg.train.module import EVAL_ARGS, SegmentationModule


def run_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's best checkpoint (by ``val/mIoU``, as its
    ``summary.json`` names it, else the newest ``best*.ckpt``), else its newest ``last*.ckpt``."""
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


def load_module(path: str | Path, device: str = "cpu", **eval_settings):
    """A run folder (its best checkpoint and the evaluation recipe of its ``config.yaml``) or a
    ``.ckpt`` file -> the trained :class:`~lit_seg.train.module.SegmentationModule`, in eval mode.

    ``eval_settings`` override the evaluation recipe (``eval_mode``, ``eval_crop``, ``eval_stride``,
    ``eval_scales``, ``eval_flip``), which a checkpoint does not hold: the run folder's
    ``config.yaml`` gives it, else the module's defaults."""
    unknown = set(eval_settings) - set(EVAL_ARGS)
    if unknown:
        raise ConfigError(f"unknown evaluation settings {sorted(unknown)}; valid: {', '.join(EVAL_ARGS)}")
    folder = Path(path)
    ckpt = run_checkpoint(folder)
    read_checkpoint(ckpt)  # a one-line ConfigError for a missing or foreign file
    recipe = {}
    if folder.is_dir() and (folder / "config.yaml").is_file():
        model = (yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("model") or {}
        recipe = {k: model[k] for k in EVAL_ARGS if model.get(k) is not None}
    recipe.update(eval_settings)
    try:
        module = SegmentationModule.load_from_checkpoint(ckpt, map_location=device, **recipe)
    except ConfigError:
        raise
    except Exception as err:  # a checkpoint of an older layout, or hyperparameters that no longer build
        raise ConfigError(f"cannot rebuild the model from {ckpt} ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]}); use a checkpoint written by this version of "
                          f"lit-seg") from None
    return module.to(device).eval()
