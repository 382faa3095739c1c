"""What a run prints: the noise a user cannot act on removed, one summary line at the end."""

import logging
import warnings

__all__ = ["quiet"]

# Messages that say nothing about this run: Lightning's product tips, warnings about what lit-seg
# does on purpose (its module moves channels-last batches itself; a checkpoint of another run folder).
_QUIET_INFO = ("💡 Tip:",)
_QUIET_WARNINGS = (
    r"You have overridden `on_after_batch_transfer`",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The dirpath has changed from",
    r"Experiment logs directory .* exists and is not empty",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_QUIET_INFO)


def quiet() -> None:
    """Drops Lightning's tips and the warnings above (idempotent)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
