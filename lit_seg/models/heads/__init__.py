"""Decode heads: one file per head, all on the :class:`DecodeHead` scaffold.

A head is built as ``Head(encoder_channels, num_classes, **options)``; in YAML::

    model:
      head:
        class_path: lit_seg.models.heads.CCHead
        init_args: {recurrence: 2}
"""

from lit_seg.models.heads.aspp import ASPPHead
from lit_seg.models.heads.base import DecodeHead
from lit_seg.models.heads.ccnet import CCHead
from lit_seg.models.heads.danet import DAHead
from lit_seg.models.heads.fcn import FCNHead
from lit_seg.models.heads.gc import GCHead
from lit_seg.models.heads.non_local import NonLocalHead
from lit_seg.models.heads.ocnet import OCHead
from lit_seg.models.heads.psp import PSPHead

__all__ = [
    "ASPPHead",
    "CCHead",
    "DAHead",
    "DecodeHead",
    "FCNHead",
    "GCHead",
    "NonLocalHead",
    "OCHead",
    "PSPHead",
]
