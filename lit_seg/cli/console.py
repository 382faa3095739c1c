"""What a run prints: the noise a user cannot act on removed, one summary line at the end."""

import logging
import warnings

from lightning.pytorch.callbacks import ModelSummary as _ModelSummary

# Messages that say nothing about this run: Lightning's product tips, warnings about what lit-seg
# does on purpose (its module moves channels-last batches itself; a checkpoint of another run folder).
_QUIET_INFO = ("💡 Tip:",)
_QUIET_WARNINGS = (
    r"You have overridden `on_after_batch_transfer`",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The dirpath has changed from",
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


def drop_wandb_anonymous(trainer) -> None:
    """WandbLogger passes ``anonymous=None`` to ``wandb.init``, which warns that the setting is deprecated."""
    for logger in getattr(trainer, "loggers", []):
        init = getattr(logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)


class ModelSummary(_ModelSummary):
    """Lightning's model summary without the FLOPs column and total: they are 0 unless the module
    has an ``example_input_array`` (lit-seg counts the head's FLOPs itself, in summary.json)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        from lightning.pytorch.callbacks.model_summary import log
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *columns)
        log.info("\n" + table.rsplit("\n", 1)[0])  # the last line is "Total Flops"


def summary_line(best: float | None, epoch: int | None, run_folder: str, wandb_url: str | None) -> str:
    """``lit-seg: best val/mIoU 0.9076 (epoch 2) | run runs/x/y | view: <command>``."""
    view = wandb_url or f"wandb leet {run_folder}/wandb"
    score = f"best val/mIoU {best:.4f} (epoch {epoch})" if best is not None else "no validation"
    return f"lit-seg: {score} | run {run_folder} | view: {view}"
