"""Decode heads: one file per head, all on the :class:`DecodeHead` scaffold, and :data:`HEADS`,
the one list of head variants that the experiments, the sweep, the cost harness, the tests and
the analysis read.

A head is built as ``Head(encoder_channels, num_classes, **options)``; in YAML::

    model:
      head:
        class_path: lit_seg.models.heads.CCHead
        init_args: {recurrence: 2}
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lit_seg.models.heads.ann import ANNHead
from lit_seg.models.heads.aspp import ASPPHead
from lit_seg.models.heads.base import ContextHead, DecodeHead
from lit_seg.models.heads.ccnet import CCHead
from lit_seg.models.heads.danet import DAHead
from lit_seg.models.heads.dnl import DNLHead
from lit_seg.models.heads.ema import EMAHead
from lit_seg.models.heads.fcn import FCNHead
from lit_seg.models.heads.gc import GCHead
from lit_seg.models.heads.ham import HamHead
from lit_seg.models.heads.interventions import NonLocalConcatHead
from lit_seg.models.heads.isa import ISAHead
from lit_seg.models.heads.non_local import NonLocalHead
from lit_seg.models.heads.ocnet import OCHead
from lit_seg.models.heads.ocr import OCRHead
from lit_seg.models.heads.psp import PSPHead


@dataclass(frozen=True)
class HeadVariant:
    """A head class and the options that make one variant of it (the rest are the paper's defaults)."""

    head: type[DecodeHead]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def class_path(self) -> str:
        return f"{__name__}.{self.head.__name__}"

    def build(self, in_channels: Sequence[int], num_classes: int, **overrides: Any) -> DecodeHead:
        return self.head(in_channels, num_classes, **{**self.options, **overrides})


# Every variant has an experiment of the same name (experiments/<name>.yaml, and the same under
# experiments/cityscapes/); tests/test_experiments.py checks that they agree with this list.
HEADS: dict[str, HeadVariant] = {
    "fcn": HeadVariant(FCNHead, {}, "no context (baseline)"),
    "psp": HeadVariant(PSPHead, {}, "pyramid pooling, no attention"),
    "aspp": HeadVariant(ASPPHead, {}, "atrous spatial pyramid pooling, no attention"),
    "nonlocal": HeadVariant(NonLocalHead, {}, "non-local block, embedded Gaussian"),
    "nonlocal_dot": HeadVariant(NonLocalHead, {"mode": "dot_product"}, "non-local block, dot product"),
    "dnl": HeadVariant(DNLHead, {}, "disentangled non-local: whitened pairwise + unary"),
    "oc_base": HeadVariant(OCHead, {"mode": "base"}, "OCNet base-OC"),
    "oc_pyramid": HeadVariant(OCHead, {"mode": "pyramid"}, "OCNet Pyramid-OC"),
    "oc_asp": HeadVariant(OCHead, {"mode": "asp"}, "OCNet ASP-OC"),
    "danet": HeadVariant(DAHead, {"branches": "pam+cam"}, "DANet, position + channel attention"),
    "danet_pam": HeadVariant(DAHead, {"branches": "pam"}, "DANet, position attention only"),
    "danet_cam": HeadVariant(DAHead, {"branches": "cam"}, "DANet, channel attention only"),
    "ccnet_r1": HeadVariant(CCHead, {"recurrence": 1}, "criss-cross attention, R = 1"),
    "ccnet_r2": HeadVariant(CCHead, {"recurrence": 2}, "criss-cross attention, R = 2"),
    "ccnet_r3": HeadVariant(CCHead, {"recurrence": 3}, "criss-cross attention, R = 3"),
    "gc": HeadVariant(GCHead, {}, "global context block"),
    "ocr": HeadVariant(OCRHead, {}, "object-contextual representations (cascade: soft object regions first)"),
    "isa": HeadVariant(ISAHead, {}, "interlaced sparse self-attention: long range, then short range"),
    "ema": HeadVariant(EMAHead, {}, "expectation-maximization attention, 64 bases"),
    "ann": HeadVariant(ANNHead, {}, "asymmetric non-local: fusion of stages 3 and 4 (AFNB), pyramid (APNB)"),
    "ham": HeadVariant(HamHead, {}, "Hamburger: NMF matrix decomposition, one-step gradient"),
}

__all__ = [
    "HEADS",
    "ANNHead",
    "ASPPHead",
    "CCHead",
    "ContextHead",
    "DAHead",
    "DNLHead",
    "DecodeHead",
    "EMAHead",
    "FCNHead",
    "GCHead",
    "HamHead",
    "HeadVariant",
    "ISAHead",
    "NonLocalConcatHead",
    "NonLocalHead",
    "OCHead",
    "OCRHead",
    "PSPHead",
]
