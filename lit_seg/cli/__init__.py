"""The command line: ``lit-seg`` / ``lightning`` (:func:`main`), a thin layer over :mod:`lit_seg.api`
(LightningCLI's subcommands) and lit-seg's own tools (:data:`TOOLS`)."""

from lit_seg.cli.command import TOOLS, help_epilog, main

__all__ = ["TOOLS", "help_epilog", "main"]
