"""GCNet as the paper uses it: global context blocks inside the ResNet encoder's residual blocks.

GCNet (Cao et al., ICCVW 2019, arXiv:1904.11492) adds a GC block (ratio 1/16) to every residual
block of stages c3-c5 (``layer2``..``layer4``), on the residual branch after the last conv + BN
and before the addition of the shortcut. The GC block's last conv starts at zero, so the wrapped
encoder computes exactly what the plain one does until training moves it (pretrained weights
keep their meaning).
"""

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from lit_seg.errors import ConfigError
from lit_seg.models.attention import GlobalContextBlock


class GlobalContextResidual(nn.Module):
    """A torchvision ``BasicBlock``/``Bottleneck`` with a GC block on its residual branch.

    ``relu(gc(branch(x)) + shortcut(x))``; the block's own layers are used unchanged (their
    parameters move under ``block.``).
    """

    def __init__(self, block: BasicBlock | Bottleneck, ratio: float = 1 / 16) -> None:
        super().__init__()
        if not isinstance(block, (BasicBlock, Bottleneck)):
            raise TypeError(f"expected a torchvision BasicBlock or Bottleneck, got {type(block).__name__}")
        self.block = block
        last_norm = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        self.gc = GlobalContextBlock(last_norm.num_features, ratio=ratio)

    def forward(self, x: Tensor) -> Tensor:
        b = self.block
        out = b.relu(b.bn1(b.conv1(x)))
        if isinstance(b, Bottleneck):
            out = b.relu(b.bn2(b.conv2(out)))
            out = b.bn3(b.conv3(out))
        else:
            out = b.bn2(b.conv2(out))
        out = self.gc(out)
        identity = x if b.downsample is None else b.downsample(x)
        return b.relu(out + identity)


def insert_global_context(encoder: nn.Module, stages: Sequence[int] = (2, 3, 4), ratio: float = 1 / 16) -> nn.Module:
    """Wraps every residual block of ``layer<s>`` for s in ``stages`` in :class:`GlobalContextResidual`.

    ``encoder``: an smp ResNet/ResNeXt encoder (torchvision blocks); modified in place and
    returned. ``stages``: 1..4 for ``layer1``..``layer4`` (GCNet: 2, 3, 4, i.e. c3-c5); each must
    be used by the encoder's depth (``encoder_depth`` 3 uses ``layer1`` and ``layer2`` only).
    """
    if not isinstance(encoder, ResNet):
        raise ConfigError(
            f"GC blocks in the encoder (encoder_gc_stages) need a ResNet encoder (smp's resnet*/resnext*), "
            f"got {type(encoder).__name__}; use such an encoder or leave encoder_gc_stages empty"
        )
    depth = getattr(encoder, "_depth", 5)
    used = list(range(1, depth))  # layer<s> runs when depth >= s + 1
    stages = list(stages)
    if len(set(stages)) != len(stages) or any(s not in used for s in stages):
        raise ConfigError(
            f"encoder_gc_stages {stages}: stages must be distinct ResNet layers the encoder uses, "
            f"{used} at encoder_depth {depth} (GCNet: 2, 3, 4 at depth 5)"
        )
    for stage in stages:
        layer: nn.Sequential = getattr(encoder, f"layer{stage}")
        for index, block in enumerate(layer):
            if isinstance(block, GlobalContextResidual):
                raise ConfigError(f"layer{stage} already has GC blocks; insert them once")
            if not isinstance(block, (BasicBlock, Bottleneck)):
                raise ConfigError(
                    f"GC blocks in the encoder need torchvision residual blocks, layer{stage}[{index}] is "
                    f"{type(block).__name__}; use an smp resnet*/resnext* encoder or leave encoder_gc_stages empty"
                )
            layer[index] = GlobalContextResidual(block, ratio)
    return encoder
