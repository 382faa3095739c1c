import time

import pytest
import torch
from safetensors.torch import save_file

from lit_seg.errors import ConfigError
from lit_seg.models import build_encoder


@pytest.mark.parametrize("name,stride", [("resnet18", 8), ("resnet18", 16), ("mobilenet_v2", 8), ("tu-resnet10t", 8)])
def test_deepest_features_have_the_requested_stride(name, stride):
    encoder = build_encoder(name, output_stride=stride)
    features = encoder(torch.zeros(1, 3, 64, 96))
    assert features[-1].shape[-2:] == (64 // stride, 96 // stride)
    assert [f.shape[1] for f in features] == list(encoder.out_channels)


def test_encoder_without_dilation_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot run at output stride 8.*choose a dilatable encoder"):
        build_encoder("vgg11", output_stride=8)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown encoder 'resnet19'"):
        build_encoder("resnet19")


def test_hub_weights_offline_fail_fast_and_say_how_to_use_a_file():
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"--model.encoder_weights /path/to/resnet18.safetensors"):
        build_encoder("resnet18", weights="imagenet")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_smp_encoder_loads_weights_from_a_local_file(tmp_path, suffix):
    source = build_encoder("resnet18", depth=3)
    state = source.state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, path)
    loaded = build_encoder("resnet18", weights=str(path), depth=3)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_timm_encoder_loads_weights_from_a_local_file(tmp_path):
    import timm

    model = timm.create_model("resnet10t")
    path = tmp_path / "resnet10t.safetensors"
    save_file(model.state_dict(), str(path))
    encoder = build_encoder("tu-resnet10t", weights=str(path))
    conv = next(v for k, v in encoder.state_dict().items() if k.endswith("conv1.0.weight"))
    assert torch.equal(conv, model.state_dict()["conv1.0.weight"])


def test_weights_file_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ConfigError, match="does not fit encoder 'resnet18'"):
        build_encoder("resnet18", weights=str(path))
    with pytest.raises(ConfigError, match="not found"):
        build_encoder("resnet18", weights=str(tmp_path / "missing.pth"))


def test_stages_cut_by_depth_hold_no_weights_and_full_weights_still_load(tmp_path):
    full = build_encoder("resnet18", depth=5)
    cut = build_encoder("resnet18", depth=3)
    assert not hasattr(cut, "layer3") and not hasattr(cut, "layer4")
    used = sum(p.numel() for name, p in full.named_parameters() if not name.startswith(("layer3", "layer4")))
    assert sum(p.numel() for p in cut.parameters()) == used
    # A whole ResNet-18's weights (as saved from the full encoder) load into the cut one.
    save_file(full.state_dict(), tmp_path / "resnet18.safetensors")
    loaded = build_encoder("resnet18", weights=str(tmp_path / "resnet18.safetensors"), depth=3)
    torch.testing.assert_close(loaded.layer2[0].conv1.weight, full.layer2[0].conv1.weight)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.eval()(x)[-1], full.eval()(x)[3])
