"""The columns of an ablation's results CSV (``results/<ablation>.csv``), defined once: written by
``lit-seg ablate`` from its runs' records (:mod:`lit_seg.api.records`), read by
:mod:`lit_seg.study.analysis` and the notebook.

A row is one run; the per-class ``IoU/<class>`` columns go between :data:`BEFORE_CLASSES` and
:data:`AFTER_CLASSES`. The provenance columns (:data:`PROVENANCE_COLUMNS`) say what made the row:
the configuration's hash, the model code's hash and the modules it covers (a row is stale when
those modules' code changed since: ``lit-seg report`` marks it, ``lit-seg ablate --rerun-stale``
runs it again), the commit, the precision, the device and the scheduler's job.
"""

BEFORE_CLASSES = [
    # task: the run's task overlay (experiments/tasks/<task>.yaml); empty without one, as in CSVs
    # written before the column existed.
    "ablation", "experiment", "task", "head", "head_options", "recurrence", "seed", "overrides", "status",
    "val_mIoU_best", "val_mIoU_final", "val_pixel_acc_final", "val_mIoU_first",
]
# The head's cost, measured once per experiment (and task) by the cost harness at its training batch.
COST_COLUMNS = ["head_params", "head_gflops", "model_gflops", "head_fwd_ms", "head_fwdbwd_ms", "head_peak_mib"]
# What made the row (lit_seg.api.records): empty in rows written before runs had records.
PROVENANCE_COLUMNS = ["config_hash", "model_code_hash", "model_code_modules", "commit", "dirty", "precision", "device",
                      "job_id", "host", "error"]
AFTER_CLASSES = [
    "val_mAcc_final", "val_aAcc_final", "val_mDice_final",
    # Mean cosine distance between the attention maps of different queries (lit_seg.inference.query_dependence).
    "query_dependence",
    "params", *COST_COLUMNS,
    "steps", "wall_s", "wandb_run_id", "wandb_group", "run_folder", "log", *PROVENANCE_COLUMNS,
]
COLUMNS = BEFORE_CLASSES + AFTER_CLASSES
TEXT_COLUMNS = ["ablation", "experiment", "task", "head", "head_options", "overrides", "status", "wandb_run_id",
                "wandb_group", "run_folder", "log", "config_hash", "model_code_hash", "model_code_modules", "commit",
                "dirty", "precision", "device", "job_id", "host", "error"]
INT_COLUMNS = ["recurrence", "seed", "steps", "params", "head_params"]
IOU_PREFIX = "IoU/"
