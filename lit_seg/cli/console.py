"""The console of ``lit-seg``: :func:`lit_seg.api.console.quiet` (every run through the api applies it).

Configs saved before the model summary moved to :mod:`lit_seg.api.callbacks` name
``lit_seg.cli.console.ModelSummary`` (``experiments/_base_/runtime.yaml`` did): it still builds.
"""

from lit_seg.api.callbacks import ModelSummary
from lit_seg.api.console import quiet

__all__ = ["ModelSummary", "quiet"]
