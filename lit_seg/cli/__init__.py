"""The command line: ``lit-seg`` / ``lightning`` (:func:`main`), its run folders, composed
experiment files, checkpoint reading, console and W&B settings.

Names are imported on first use, so that ``lit_seg.cli.checkpoints`` (read by ``lit_seg.load``)
does not pull in LightningCLI.
"""

import importlib

_EXPORTS = {
    "main": "lit_seg.cli.command", "LitSegCLI": "lit_seg.cli.command", "TOOLS": "lit_seg.cli.command",
    "expand_argv": "lit_seg.cli.config", "expand_bases": "lit_seg.cli.config", "merged_config": "lit_seg.cli.config",
    "RunFolder": "lit_seg.cli.run_folder", "RUNS_DIR": "lit_seg.cli.run_folder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lit_seg.cli' has no attribute {name!r}")
