"""smp encoders at output stride 8 or 16, with weights from a local file or none."""

import os
import socket
from pathlib import Path

import torch
from segmentation_models_pytorch.encoders import get_encoder
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
from torch import nn

from lit_seg.errors import ConfigError

_HUB_HOST = ("huggingface.co", 443)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return False
    try:
        socket.create_connection(_HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def build_encoder(
    name: str,
    weights: str | None = None,
    output_stride: int = 8,
    depth: int = 5,
    in_channels: int = 3,
) -> nn.Module:
    """An smp encoder whose deepest feature map has stride ``output_stride``.

    ``weights``: None (random init), a path to a local weights file (``.safetensors`` or a
    torch state dict; for ``tu-`` encoders a timm checkpoint), or a named smp weight set such as
    ``imagenet``, which is downloaded from the Hugging Face hub and so needs a network.
    """
    if output_stride not in (8, 16):
        raise ConfigError(f"output_stride must be 8 or 16, got {output_stride}")
    if not 1 <= depth <= 5:  # smp's encoders have 5 stages; checked here so smp's ValueError never shows
        raise ConfigError(f"encoder_depth must be 1 to 5 (the encoder's stages used: 5 all, 3 up to ResNet's layer2), "
                          f"got {depth} (model.encoder_depth)")
    local = Path(weights).expanduser() if weights and (os.sep in weights or Path(weights).suffix) else None
    if local is not None and not local.is_file():
        raise ConfigError(f"encoder weights file not found: {local}; pass an existing file or encoder_weights: null")
    if weights and local is None and not _hub_reachable():
        raise ConfigError(
            f"encoder_weights={weights!r} must be downloaded from the Hugging Face hub, which is not reachable "
            f"from here. Download the weights where there is a network (e.g. `encoder.state_dict()` of "
            f"smp.encoders.get_encoder({name!r}, weights={weights!r}) saved with safetensors) and pass the file: "
            f"--model.encoder_weights /path/to/{name}.safetensors, or train from scratch with encoder_weights: null"
        )

    kwargs: dict = {}
    hub_weights = None if local is not None else weights
    if local is not None and name.startswith("tu-"):
        hub_weights, kwargs = True, {"pretrained_cfg_overlay": {"file": str(local)}}
    try:
        encoder = get_encoder(name, in_channels=in_channels, depth=depth, weights=hub_weights,
                              output_stride=output_stride, **kwargs)
    except KeyError as err:
        raise ConfigError(f"unknown encoder {name!r}: use an smp encoder name (e.g. resnet50) or a timm one as "
                          "'tu-<name>'") from err
    except (ValueError, NotImplementedError, AssertionError) as err:
        if "dilat" in str(err).lower() or "output_stride" in str(err).lower():
            raise ConfigError(
                f"encoder {name!r} cannot run at output stride {output_stride} ({err}); choose a dilatable "
                "encoder such as resnet50, resnext50_32x4d, efficientnet-b0, mobilenet_v2 or tu-resnet50d"
            ) from err
        raise
    _drop_unused_stages(encoder, depth)
    if local is not None and not name.startswith("tu-"):
        _load_into(encoder, _load_state_dict(local), local, name)

    _check_stride(encoder, name, output_stride, in_channels)
    return encoder


def _drop_unused_stages(encoder: nn.Module, depth: int) -> None:
    # smp's ResNet encoders keep every stage's weights when `depth` stops the forward early:
    # at depth 3 (layer2 the deepest) 10.5M of ResNet-18's 11.2M parameters would sit in every
    # checkpoint and optimiser step without ever being used.
    if isinstance(encoder, ResNetEncoder):
        for stage in range(depth, 5):  # layer<s> runs when depth >= s + 1
            if hasattr(encoder, f"layer{stage}"):
                delattr(encoder, f"layer{stage}")


def _load_into(encoder: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    # Keys the encoder lacks (the classifier, stages cut by `depth`) are dropped; keys it needs
    # must all be there.
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(
            f"weights file {path} does not fit encoder {name!r}: {len(missing)} of its {len(own)} keys are "
            f"missing (e.g. {missing[0]!r}); save the state dict of this encoder (or of the torchvision/timm model)"
        )
    try:
        nn.Module.load_state_dict(encoder, {k: state[k] for k in own}, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"weights file {path} does not fit encoder {name!r}: "
                          f"{str(err).splitlines()[-1].strip()}") from err


def _check_stride(encoder: nn.Module, name: str, output_stride: int, in_channels: int) -> None:
    # Some timm encoders accept output_stride and ignore it; measure instead of trusting.
    size = 64
    with torch.no_grad():
        was_training = encoder.training
        encoder.eval()
        features = encoder(torch.zeros(1, in_channels, size, size))
        encoder.train(was_training)
    stride = size // features[-1].shape[-1]
    expected = min(output_stride, 2 ** (len(features) - 1))
    if stride != expected:
        raise ConfigError(
            f"encoder {name!r} gives stride {stride} features, not output stride {output_stride}: it does not "
            "support dilation; choose a dilatable encoder such as resnet50 or tu-resnet50d"
        )
