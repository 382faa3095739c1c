"""Load an ablation's runs into one table and summarise it (used by notebooks/ablation_analysis.ipynb).

One row per run, with the columns ``lit-seg ablate`` writes to ``results/<ablation>.csv``
(:data:`COLUMNS`, plus one ``IoU/<class>`` column per class). :func:`load_csv` reads such files;
:func:`load_wandb` builds the same table from the W&B runs of a group. The other functions turn
it into what the notebook shows: mean ± std over seeds per experiment (:func:`summarize`,
:func:`format_table`, :func:`compare`), per-class IoU (:func:`per_class`), the CCNet recurrence
curve (:func:`ccnet_curve`), one attention-map image per experiment and task (:func:`attention_gallery`)
and, for an ablation over tasks, each head's profile across them (:func:`task_profile`).

Only pandas and numpy: no torch, so importing this is quick.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lit_seg.models.heads import HEADS
from lit_seg.study.columns import BEFORE_CLASSES, COLUMNS, INT_COLUMNS, IOU_PREFIX, TEXT_COLUMNS
from lit_seg.study.columns import COST_COLUMNS as MEASURED_COSTS

METRIC = "val_mIoU_best"
# The task profile compares heads on what they end at.
PROFILE_METRIC = "val_mIoU_final"
# The project's rule (README): a head differs from another only beyond the seeds' spread.
DIFFERENCE_RULE = ("a difference is called one only when the means are more than two standard deviations apart, "
                   "taking the larger of the two")
# The head costs the tables and plots show (the whole model's FLOPs stay in the CSV).
COST_COLUMNS = [c for c in MEASURED_COSTS if c != "model_gflops"]
COST_LABELS = {
    "params": "params",
    "head_params": "head params",
    "head_gflops": "head GFLOPs (fwd)",
    "head_fwd_ms": "head fwd (ms)",
    "head_fwdbwd_ms": "head fwd+bwd (ms)",
    "head_peak_mib": "head peak memory (MiB)",
}


_ATTENTION_FILE = re.compile(r"epoch(\d+)_(\d+)\.png$")


# --------------------------------------------------------------------------------------- loading


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """The run table in the contract's shape, whatever subset of the columns ``df`` has.

    Missing contract columns are added (empty), numbers are parsed (``""`` becomes NaN), integer
    columns become nullable integers, a missing ``status`` means ``finished``, and columns are
    ordered: the contract's first, then ``IoU/<class>``, then any others.
    """
    df = df.copy()
    for column in COLUMNS:
        if column not in df.columns:
            df[column] = pd.NA
    for column in df.columns:
        if column in TEXT_COLUMNS:
            df[column] = df[column].astype("string")
        elif column in INT_COLUMNS:
            values = pd.to_numeric(df[column], errors="coerce")
            whole = values.dropna()
            df[column] = values.round().astype("Int64") if (whole == whole.round()).all() else values
        elif column not in COLUMNS and not column.startswith(IOU_PREFIX):
            continue  # an extra column: left as read
        else:
            df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    df["status"] = df["status"].fillna("finished").str.strip().str.lower()
    df["task"] = df["task"].fillna("")  # no task overlay, or a CSV from before the column
    missing_recurrence = df["recurrence"].isna()
    if missing_recurrence.any():
        df.loc[missing_recurrence, "recurrence"] = [
            _recurrence(e, o) for e, o in zip(df.loc[missing_recurrence, "experiment"],
                                              df.loc[missing_recurrence, "head_options"])]
    _label_other_overrides(df)
    iou = [c for c in df.columns if c.startswith(IOU_PREFIX)]
    extra = [c for c in df.columns if c not in COLUMNS and c not in iou]
    split = len(BEFORE_CLASSES)  # per-class IoU columns go just after these
    return df[COLUMNS[:split] + iou + COLUMNS[split:] + extra].reset_index(drop=True)


def main_overrides(df: pd.DataFrame) -> str:
    """The set of overrides most of ``df``'s runs were made under (the first of equals)."""
    overrides = df["overrides"].fillna("")
    counts = overrides.value_counts()
    return max(dict.fromkeys(overrides), key=lambda s: counts[s]) if len(overrides) else ""


def _label_other_overrides(df: pd.DataFrame) -> None:
    """Runs made under other overrides than most (one ablation called twice with different ones)
    are other experiments: ``fcn`` becomes ``fcn [--trainer.max_epochs=6]``, so that no mean mixes
    the two. The most common set (the first of equals) keeps the plain names."""
    overrides = df["overrides"].fillna("")
    if overrides.nunique() < 2:
        return
    other = overrides != main_overrides(df)
    df.loc[other, "experiment"] = [f"{e} [{o or 'no overrides'}]" for e, o in zip(df.loc[other, "experiment"],
                                                                                   overrides[other])]


def _recurrence(experiment: Any, head_options: Any) -> Any:
    """R from ``recurrence=R`` in the head options or a ``ccnet_rR`` experiment name."""
    for text, pattern in ((head_options, r"(?:^|\s)recurrence=(\d+)"), (experiment, r"^ccnet_r(\d+)$")):
        if isinstance(text, str) and (match := re.search(pattern, text)):
            return int(match.group(1))
    return pd.NA


def load_csv(paths: str | Path | Sequence[str | Path], overrides: str | None = None) -> pd.DataFrame:
    """The runs in one or several ``results/<ablation>.csv`` files (paths or glob patterns); with
    ``overrides``, only those made under that set (the CSV's ``overrides`` text)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[str] = []
    for pattern in map(str, paths):
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not Path(matches[0]).is_file():
            raise FileNotFoundError(
                f"no results CSV at {pattern}: run an ablation first (lit-seg ablate) or point "
                f"RESULTS_CSV at one")
        files += matches
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[""]) for f in files]
    runs = pd.concat(frames, ignore_index=True)
    if overrides is not None:
        runs = runs[runs.get("overrides", pd.Series("", index=runs.index)).fillna("") == overrides]
    return normalize(runs)


def load_wandb(api: Any, path: str, group: str, runs_root: str | Path | None = None) -> pd.DataFrame:
    """The runs of W&B group ``group`` in project ``path`` (``entity/project``), as :func:`load_csv` gives them.

    ``api`` is a ``wandb.Api()`` (or anything with its ``runs(path, filters)``). Config keys are
    the flattened ones the CLI logs (``experiment``, ``seed_everything``, ``model.head.class_path``,
    ``model.head.init_args.*``); metrics come from the summary (last logged values), and from the
    history where the summary lacks them. Per-class IoU is the last validation's, like the CSV's.
    With ``runs_root``, ``run_folder`` is the local ``runs/<experiment>/<time>-<run id>`` folder
    when there is one (for the attention maps).
    """
    rows = []
    for run in api.runs(path, filters={"group": group}):
        config = dict(run.config or {})
        summary = run.summary
        keys = list(summary.keys())
        tags = list(getattr(run, "tags", None) or [])
        head_path = config.get("model.head.class_path") or ""
        init_prefix = "model.head.init_args."
        init_args = {k[len(init_prefix):]: v for k, v in config.items() if k.startswith(init_prefix)}
        experiment = config.get("experiment") or (tags[0] if tags else None) or run.name
        row: dict[str, Any] = {
            "ablation": group,
            "experiment": experiment,
            "head": head_path.rsplit(".", 1)[-1] or (tags[1] if len(tags) > 1 else None),
            "head_options": " ".join(f"{k}={v}" for k, v in init_args.items() if v is not None
                                     and not isinstance(v, (dict, list))),
            "recurrence": init_args.get("recurrence"),
            "seed": config.get("seed_everything"),
            "overrides": "",
            "status": _status(getattr(run, "state", "finished")),
            # W&B's define_metric summaries ({"max": ..., "last": ...}); older runs wrote val/mIoU_best.
            "val_mIoU_best": _number(_aggregate(summary.get("val/mIoU"), "max", summary.get("val/mIoU_best"))),
            "val_mIoU_final": _number(_aggregate(summary.get("val/mIoU"), "last")),
            "val_pixel_acc_final": _number(summary.get("val/pixel_acc")),
            "val_mAcc_final": _number(_aggregate(summary.get("val/mAcc"), "last")),
            "val_aAcc_final": _number(_aggregate(summary.get("val/aAcc"), "last")),
            "val_mDice_final": _number(_aggregate(summary.get("val/mDice"), "last")),
            "val_mIoU_first": math.nan,  # from the history
            "query_dependence": _number(summary.get("query_dependence")),
            "steps": _number(summary.get("trainer/global_step")),
            "wall_s": _number(summary.get("_runtime")),
            "wandb_run_id": run.id,
            "wandb_group": getattr(run, "group", None) or group,
            "run_folder": _local_run_folder(runs_root, experiment, run.id),
        }
        for column in ["params", *COST_COLUMNS]:
            row[column] = _number(summary.get(column))
        for key in keys:
            if key.startswith("val/" + IOU_PREFIX):
                row[key[len("val/"):]] = _number(summary.get(key))
        _fill_from_history(row, run)
        rows.append(row)
    if not rows:
        raise LookupError(f"no W&B runs in {path} with group {group!r}")
    return normalize(pd.DataFrame(rows))


def _status(state: Any) -> str:
    state = str(state or "").lower()
    return state if state in ("finished", "running", "pending") else "failed"


def _aggregate(value: Any, key: str, default: Any = None) -> Any:
    """A W&B summary entry: ``value[key]`` for a define_metric dict (``{"max": .., "last": ..}``); a
    plain value (an older run) is the last one; ``default`` otherwise."""
    if isinstance(value, dict) or hasattr(value, "keys"):
        return dict(value).get(key, default)
    return value if key == "last" and value is not None else default


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _local_run_folder(runs_root: str | Path | None, experiment: Any, run_id: str) -> str | None:
    if runs_root is None:
        return None
    root = Path(runs_root)
    found = sorted(root.glob(f"runs/{glob.escape(str(experiment))}/*-{glob.escape(run_id)}"))
    found = found or sorted(root.glob(f"runs/*/*-{glob.escape(run_id)}"))
    return found[0].relative_to(root).as_posix() if found else None


def _fill_from_history(row: dict[str, Any], run: Any) -> None:
    history = run.history(samples=10_000, pandas=True)
    if history is None or len(history) == 0 or "val/mIoU" not in history:
        return
    miou = pd.to_numeric(history["val/mIoU"], errors="coerce").dropna()
    if len(miou) and math.isnan(row["val_mIoU_best"]):
        row["val_mIoU_best"] = float(miou.max())
    if len(miou) and math.isnan(row["val_mIoU_final"]):
        row["val_mIoU_final"] = float(miou.iloc[-1])
    if len(miou):
        row["val_mIoU_first"] = float(miou.iloc[0])
    for key in history.columns:
        if key.startswith("val/" + IOU_PREFIX) and key[len("val/"):] not in row:
            values = pd.to_numeric(history[key], errors="coerce").dropna()
            row[key[len("val/"):]] = float(values.iloc[-1]) if len(values) else math.nan


# ----------------------------------------------------------------------------------- summarising


def order_experiments(names: Iterable[str]) -> list[str]:
    """Experiment names in the head list's order (families together, baselines first), others after, alphabetically."""
    names = list(dict.fromkeys(n for n in names if isinstance(n, str)))
    known = [n for n in HEADS if n in names]
    return known + sorted(n for n in names if n not in HEADS)


def finished(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """The runs that count: finished, with a value for ``metric``."""
    return df[(df["status"] == "finished") & df[metric].notna()]


OTHER_METRICS = {"val_mAcc_final": "mAcc", "val_aAcc_final": "aAcc", "val_mDice_final": "mDice"}


def other_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Per experiment, ``mean ± std`` over its finished runs of the metrics mmseg reports beside
    mIoU (mean class accuracy, overall accuracy, mean Dice, at the end of each run), and ``n`` runs
    that have them; empty when the runs predate those columns."""
    present = [c for c in OTHER_METRICS if c in df and pd.to_numeric(df[c], errors="coerce").notna().any()]
    rows = []
    for experiment in order_experiments(df["experiment"]):
        done = df[(df["experiment"] == experiment) & (df["status"] == "finished")]
        values = {c: pd.to_numeric(done[c], errors="coerce").dropna() for c in present}
        if not any(len(v) for v in values.values()):
            continue
        row = {"experiment": experiment, "n": max(len(v) for v in values.values())}
        for column, v in values.items():
            row[OTHER_METRICS[column]] = format_mean_std(v.mean(), v.std(ddof=1) if len(v) > 1 else math.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "n", *(OTHER_METRICS[c] for c in present)]).set_index("experiment")


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``0.908 ± 0.001``; ``0.908`` alone for a single run, ``–`` for none."""
    if mean is None or pd.isna(mean):
        return "–"
    if std is None or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarize(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """One row per experiment: ``mean`` and ``std`` (sample std, ddof=1) of ``metric`` over its
    finished runs, ``n`` of them, ``failed`` (runs that did not finish), the head, the mean and std
    of ``query_dependence`` over the finished runs that have one (``query_dependence_mean``,
    ``_std``; left out when no run has one) and the mean of each cost column. Experiments whose
    runs all failed stay in, with ``n`` = 0.
    """
    rows = []
    for experiment in order_experiments(df["experiment"]):
        runs = df[df["experiment"] == experiment]
        done = finished(runs, metric)
        values = done[metric].astype(float)
        row = {
            "experiment": experiment,
            "head": _first(runs["head"]),
            "n": len(values),
            "failed": int((runs["status"] != "finished").sum()),
            "mean": values.mean() if len(values) else math.nan,
            "std": values.std(ddof=1) if len(values) > 1 else math.nan,
            "seeds": " ".join(str(s) for s in done["seed"].dropna().tolist()),
        }
        if "val_mIoU_final" in df and metric != "val_mIoU_final":
            row["final_mean"] = done["val_mIoU_final"].mean() if len(done) else math.nan
        if "val_mIoU_first" in df and metric != "val_mIoU_first":
            row["first_mean"] = done["val_mIoU_first"].mean() if len(done) else math.nan
        dependence = pd.to_numeric(done["query_dependence"], errors="coerce").dropna()
        row["query_dependence_mean"] = dependence.mean() if len(dependence) else math.nan
        row["query_dependence_std"] = dependence.std(ddof=1) if len(dependence) > 1 else math.nan
        costs = done if len(done) else runs
        for column in ["params", *COST_COLUMNS]:
            row[column] = pd.to_numeric(costs[column], errors="coerce").astype(float).mean()
        rows.append(row)
    columns = ["experiment", "head", "n", "failed", "mean", "std", "seeds", "final_mean", "first_mean",
               "query_dependence_mean", "query_dependence_std", "params", *COST_COLUMNS]
    out = pd.DataFrame(rows, columns=columns).set_index("experiment")
    empty = [c for c in ["final_mean", "first_mean"] if out[c].isna().all()]
    if out["query_dependence_mean"].isna().all():  # runs from before the measurement, or no attention head
        empty += ["query_dependence_mean", "query_dependence_std"]
    return out.drop(columns=empty)


def _first(values: pd.Series) -> Any:
    values = values.dropna()
    return values.iloc[0] if len(values) else None


def format_table(summary: pd.DataFrame, metric: str = METRIC, digits: int = 3) -> pd.DataFrame:
    """:func:`summarize`'s table for reading: ``mean ± std`` as text, costs rounded, empty cost columns dropped."""
    label = metric.replace("val_", "")
    table = pd.DataFrame(index=summary.index)
    table["head"] = summary["head"].fillna("")
    table[f"{label} (mean ± std)"] = [format_mean_std(m, s, digits) for m, s in zip(summary["mean"], summary["std"])]
    table["n"] = summary["n"].astype(int)
    if summary["failed"].any():
        table["failed"] = summary["failed"].astype(int)
    if "final_mean" in summary:
        table["final mIoU (mean)"] = summary["final_mean"].map(lambda v: "–" if pd.isna(v) else f"{v:.{digits}f}")
    if "first_mean" in summary:
        table["mIoU at 1st validation (mean)"] = summary["first_mean"].map(
            lambda v: "–" if pd.isna(v) else f"{v:.{digits}f}")
    if "query_dependence_mean" in summary:
        # One more digit: the distances of near-identical maps are small.
        table["query dependence (mean ± std)"] = [
            format_mean_std(m, s, digits + 1)
            for m, s in zip(summary["query_dependence_mean"], summary["query_dependence_std"])]
    _add_costs(table, summary, ["params", *COST_COLUMNS])
    return table


_COST_FORMATS = {"params": "{:,.0f}", "head_params": "{:,.0f}", "head_gflops": "{:.4f}", "head_fwd_ms": "{:.2f}",
                 "head_fwdbwd_ms": "{:.2f}", "head_peak_mib": "{:.1f}"}


def _add_costs(table: pd.DataFrame, summary: pd.DataFrame, columns: Sequence[str]) -> None:
    """The cost columns that have values, as text (``–`` where one is missing)."""
    for column in columns:
        if column in summary and summary[column].notna().any():
            fmt = _COST_FORMATS.get(column, "{:.3g}")
            label = COST_LABELS.get(column, column)
            table[label] = ["–" if pd.isna(v) else fmt.format(v) for v in summary[column]]


def compare(summary: pd.DataFrame, experiments: Sequence[str], baseline: str | None = None,
            columns: Sequence[str] = ("head_gflops", "head_fwdbwd_ms", "head_peak_mib"), digits: int = 3,
            ) -> pd.DataFrame:
    """The rows of ``experiments`` that are in ``summary`` (mean ± std and costs), and, when
    ``baseline`` is among them, each one's difference from it: ``Δ`` of the means and Welch's
    ``t`` = Δ / sqrt(s₁²/n₁ + s₂²/n₂) (NaN with fewer than 2 runs on either side).
    """
    present = [e for e in experiments if e in summary.index]
    rows = summary.loc[present]
    table = pd.DataFrame(index=rows.index)
    table["mIoU (mean ± std)"] = [format_mean_std(m, s, digits) for m, s in zip(rows["mean"], rows["std"])]
    table["n"] = rows["n"].astype(int)
    if baseline in rows.index:
        base = rows.loc[baseline]
        delta = rows["mean"] - base["mean"]
        noise = np.sqrt(rows["std"] ** 2 / rows["n"].clip(lower=1) + base["std"] ** 2 / max(int(base["n"]), 1))
        is_base = rows.index == baseline
        delta_text = delta.map(lambda v: "–" if pd.isna(v) else f"{v:+.{digits}f}")
        table[f"Δ vs {baseline}"] = delta_text.where(~is_base, "")
        t = (delta / noise).where(~is_base)
        table["t"] = t.map(lambda v: "" if pd.isna(v) else f"{v:+.1f}")
    _add_costs(table, rows, columns)
    return table


def per_class(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Experiments × classes: the final per-class IoU, mean over the finished runs."""
    done = finished(df, metric)
    columns = [c for c in df.columns if c.startswith(IOU_PREFIX) and df[c].notna().any()]
    if not columns or done.empty:
        return pd.DataFrame()
    table = done.groupby("experiment")[columns].mean()
    table = table.loc[order_experiments(table.index)]
    table.columns = [c[len(IOU_PREFIX):] for c in columns]
    return table


def ccnet_curve(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """The CCNet rows by recurrence R: ``n``, ``mean``, ``std`` of ``metric`` and the mean costs.

    CCNet rows are those with a recurrence (CCHead, or a ``ccnet_rR`` experiment). Empty when
    the ablation has none.
    """
    is_cc = (df["head"] == "CCHead").fillna(False) | df["experiment"].str.match(r"^ccnet_r\d+$").fillna(False)
    runs = df[is_cc & df["recurrence"].notna()]
    done = finished(runs, metric)
    rows = []
    for r in sorted(runs["recurrence"].dropna().astype(int).unique()):
        values = done.loc[done["recurrence"] == r, metric].astype(float)
        costs = done[done["recurrence"] == r] if len(values) else runs[runs["recurrence"] == r]
        row = {"R": r, "experiments": " ".join(order_experiments(costs["experiment"])), "n": len(values),
               "mean": values.mean() if len(values) else math.nan,
               "std": values.std(ddof=1) if len(values) > 1 else math.nan}
        for column in COST_COLUMNS:
            row[column] = pd.to_numeric(costs[column], errors="coerce").astype(float).mean()
        rows.append(row)
    return pd.DataFrame(rows, columns=["R", "experiments", "n", "mean", "std", *COST_COLUMNS]).set_index("R")


# ------------------------------------------------------------------------------------- tasks


def has_tasks(df: pd.DataFrame) -> bool:
    """Whether any run has a task: then the report (and the notebook) go task by task."""
    return bool((df["task"] != "").any())


def tasks(df: pd.DataFrame) -> list[str]:
    """The runs' tasks in the order they first appear (the ablation's); "" for runs without one."""
    return list(dict.fromkeys(df["task"]))


def differs(mean: float, std: float, base_mean: float, base_std: float) -> float:
    """+1 (-1) when ``mean`` is above (below) ``base_mean`` by more than two standard deviations,
    the larger of the two (:data:`DIFFERENCE_RULE`); 0 when it is not a difference; NaN when it
    cannot be told (a mean or std missing: fewer than 2 runs on a side)."""
    if any(pd.isna(v) for v in (mean, std, base_mean, base_std)):
        return math.nan
    gap = mean - base_mean
    return float(np.sign(gap)) if abs(gap) > 2 * max(std, base_std) else 0.0


def task_profile(df: pd.DataFrame, metric: str = PROFILE_METRIC, baseline: str = "fcn") -> pd.DataFrame:
    """One row per experiment and task (index ``experiment``, ``task``: the head list's order, then
    :func:`tasks`' order), from :func:`summarize` on that task's runs: ``head``, ``n``, ``mean``,
    ``std`` of ``metric``, ``query_dependence_mean`` and ``head_gflops``; and ``vs_baseline``,
    :func:`differs` against ``baseline`` on the same task (NaN for the baseline, or without it)."""
    parts = []
    for task in tasks(df):
        summary = summarize(df[df["task"] == task], metric).reindex(
            columns=["head", "n", "mean", "std", "query_dependence_mean", "head_gflops"])
        base = summary.loc[baseline] if baseline in summary.index else None
        summary["vs_baseline"] = [
            math.nan if base is None or name == baseline else differs(mean, std, base["mean"], base["std"])
            for name, mean, std in zip(summary.index, summary["mean"], summary["std"])]
        parts.append(summary.assign(task=task).reset_index())
    profile = pd.concat(parts, ignore_index=True).set_index(["experiment", "task"])
    order = [(e, t) for e in order_experiments(profile.index.get_level_values("experiment")) for t in tasks(df)]
    return profile.loc[[key for key in order if key in profile.index]]


_MARKS = {1.0: " ↑", -1.0: " ↓"}

# Capacity and reliability (the task suite's profile): a run *learns* a task when its final val/mIoU
# is at least half-way from the task's chance level (the median of the baseline, FCN, which cannot
# see the cue by construction) to its oracle (the best median of any experiment on it). A head *can
# learn* a task when any of its seeds does, and learns it *reliably* when at least RELIABLE of them do.
RELIABLE = 0.8
LEARNT_RULE = ("a run learns a task when its final val/mIoU is at least half-way from the task's chance level "
               "(FCN's median: it cannot see the cue) to its oracle (the best median of any head), where that half-way "
               "point is more than two of FCN's standard deviations above chance; a head can learn a task when any "
               f"seed does, and learns it reliably when at least {RELIABLE:.0%} of its seeds do")


def learning_thresholds(df: pd.DataFrame, metric: str = PROFILE_METRIC, baseline: str = "fcn") -> pd.DataFrame:
    """Per task (index): ``chance`` (the baseline's median ``metric``), ``oracle`` (the best median of
    any experiment) and ``threshold``, half-way between them, over the runs of the main set of
    overrides (:func:`main_overrides`). NaN without the baseline on a task, and where the threshold
    is not more than two of the baseline's standard deviations above chance (the project's rule,
    :func:`differs`): then no head learnt the task clearly, and a seed above the threshold could be
    the baseline's own noise."""
    df = df[df["overrides"].fillna("") == main_overrides(df)] if len(df) else df
    rows = []
    for task in tasks(df):
        done = finished(df[df["task"] == task], metric)
        medians = done.groupby("experiment")[metric].median()
        chance = medians.get(baseline, math.nan)
        oracle = medians.max() if len(medians) else math.nan
        threshold = (chance + oracle) / 2
        spread = done[done["experiment"] == baseline][metric].astype(float).std()
        if pd.isna(spread) or not threshold - chance > 2 * spread:
            threshold = math.nan
        rows.append({"task": task, "chance": chance, "oracle": oracle, "threshold": threshold})
    return pd.DataFrame(rows, columns=["task", "chance", "oracle", "threshold"]).set_index("task")


def capacity_profile(df: pd.DataFrame, metric: str = PROFILE_METRIC, baseline: str = "fcn") -> pd.DataFrame:
    """:func:`task_profile` with each cell's seeds told apart: ``seeds`` and ``values`` (the per-seed
    ``metric``, in seed order), ``median``, ``learnt`` (how many seeds reach the task's
    :func:`learning_thresholds`), ``fraction`` of them, ``can_learn`` (any seed does) and
    ``reliable`` (at least :data:`RELIABLE` do); NaN / False where the task has no threshold."""
    profile = task_profile(df, metric, baseline)
    thresholds = learning_thresholds(df, metric, baseline)
    seeds, values, medians, learnt, fractions = [], [], [], [], []
    for experiment, task in profile.index:
        done = finished(df[(df["experiment"] == experiment) & (df["task"] == task)], metric).sort_values("seed")
        cell = done[metric].astype(float).tolist()
        threshold = thresholds.loc[task, "threshold"] if task in thresholds.index else math.nan
        seeds.append([int(s) for s in done["seed"]])
        values.append(cell)
        medians.append(float(np.median(cell)) if cell else math.nan)
        count = sum(v >= threshold for v in cell) if not pd.isna(threshold) else math.nan
        learnt.append(count)
        fractions.append(count / len(cell) if cell and not pd.isna(count) else math.nan)
    profile = profile.assign(seeds=seeds, values=values, median=medians, learnt=learnt, fraction=fractions)
    profile["can_learn"] = profile["learnt"].fillna(0) > 0
    profile["reliable"] = profile["fraction"].fillna(0) >= RELIABLE
    return profile


def mixed_cells(profile: pd.DataFrame) -> list[tuple[str, str]]:
    """(experiment, task) of the cells whose seeds disagree: some learn the task, some do not."""
    return [key for key, row in profile.iterrows() if row["can_learn"] and row["fraction"] < 1]


def capacity_marks(row: pd.Series) -> tuple[str, str, str]:
    """A :func:`capacity_profile` cell's marks: `` k/n`` seeds that learn the task, `` ✓`` (reliably)
    or `` ~`` (some seeds), `` ↑`` / `` ↓`` (its mean against the baseline's, by the rule); each ""
    where it does not apply."""
    learnt = "" if pd.isna(row["learnt"]) else f" {int(row['learnt'])}/{len(row['values'])}"
    mark = " ✓" if row["reliable"] else " ~" if row["can_learn"] else ""
    return learnt, mark, _MARKS.get(row["vs_baseline"], "")


def format_capacity(profile: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`capacity_profile` for reading: experiments x tasks, ``median [per-seed values] k/n``,
    with ``✓`` where the head learns the task reliably, ``~`` where some seeds do, and ``↑`` / ``↓``
    where its mean differs from the baseline's by the rule."""
    cells = {}
    for key, row in profile.iterrows():
        if not row["values"]:
            cells[key] = "–"
            continue
        values = " ".join(f"{v:.{digits}f}" for v in row["values"])
        learnt, mark, arrow = capacity_marks(row)
        cells[key] = f"{row['median']:.{digits}f} [{values}]{learnt}{mark}{arrow}"
    return _by_task(profile, cells)


def format_profile(profile: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`task_profile` for reading: experiments x tasks, ``mean ± std (n)``, marked ``↑`` (``↓``)
    where the experiment is above (below) the baseline by the rule; ``–`` where it has no runs."""
    cells = {(e, t): "–" if not row["n"] else
             f"{format_mean_std(row['mean'], row['std'], digits)} ({int(row['n'])}){_MARKS.get(row['vs_baseline'], '')}"
             for (e, t), row in profile.iterrows()}
    return _by_task(profile, cells)


def compare_profiles(df: pd.DataFrame, other: pd.DataFrame, metric: str = PROFILE_METRIC) -> pd.DataFrame:
    """Two ablations of the same experiments and tasks side by side (the suite in bf16 against fp32,
    after a code change against before): per experiment and task (:func:`task_profile`'s index and
    order, of ``df``; pairs in only one of them included) ``n``, ``mean``, ``std`` of each
    (``_other`` suffixed for ``other``), ``delta`` (mean - mean_other) and ``vs_other``,
    :func:`differs` of ``df`` against ``other``."""
    mine = task_profile(df, metric)[["n", "mean", "std"]]
    theirs = task_profile(other, metric)[["n", "mean", "std"]].add_suffix("_other")
    both = mine.join(theirs, how="outer")
    order = list(mine.index) + [key for key in theirs.index if key not in mine.index]
    both = both.loc[order]
    both["delta"] = both["mean"] - both["mean_other"]
    both["vs_other"] = [differs(m, s, mo, so) for m, s, mo, so in
                        zip(both["mean"], both["std"], both["mean_other"], both["std_other"])]
    return both


def format_comparison(comparison: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`compare_profiles` for reading: experiments x tasks, ``this vs other (Δ)``, marked ``↑``
    (``↓``) where this is above (below) the other by the rule; ``–`` for a side without runs."""
    cells = {}
    for key, row in comparison.iterrows():
        this = "–" if not row["n"] or pd.isna(row["n"]) else format_mean_std(row["mean"], row["std"], digits)
        that = ("–" if not row["n_other"] or pd.isna(row["n_other"]) else
                format_mean_std(row["mean_other"], row["std_other"], digits))
        delta = "" if pd.isna(row["delta"]) else f" ({row['delta']:+.{digits}f})"
        cells[key] = f"{this} vs {that}{delta}{_MARKS.get(row['vs_other'], '')}"
    return _by_task(comparison, cells)


def query_dependence_profile(profile: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Experiments x tasks: the mean query dependence over seeds (``–`` without attention maps);
    empty when no run has one."""
    if profile["query_dependence_mean"].isna().all():
        return pd.DataFrame()
    cells = {key: "–" if pd.isna(v) else f"{v:.{digits}f}" for key, v in profile["query_dependence_mean"].items()}
    return _by_task(profile, cells)


def _by_task(profile: pd.DataFrame, cells: dict[tuple[str, str], str]) -> pd.DataFrame:
    experiments = list(dict.fromkeys(profile.index.get_level_values("experiment")))
    names = list(dict.fromkeys(profile.index.get_level_values("task")))
    table = pd.DataFrame([[cells.get((e, t), "–") for t in names] for e in experiments], index=experiments,
                         columns=[t or "(no task)" for t in names])
    table.index.name = "experiment"
    return table


# ------------------------------------------------------------------------------ attention maps


def latest_attention_image(run_folder: str | Path) -> tuple[Path, int] | None:
    """``(path, epoch)`` of the run's attention overlay from its last epoch (first image), or None."""
    folder = Path(run_folder) / "attention"
    best: tuple[int, int, Path] | None = None
    for path in folder.glob("epoch*_*.png") if folder.is_dir() else []:
        match = _ATTENTION_FILE.fullmatch(path.name)
        if match:
            key = (-int(match.group(1)), int(match.group(2)), path)
            best = key if best is None or key[:2] < best[:2] else best
    return (best[2], -best[0]) if best else None


def attention_gallery(df: pd.DataFrame, runs_root: str | Path, metric: str = METRIC) -> pd.DataFrame:
    """One attention image per experiment and task: from the finished run with the lowest seed that
    has one, its latest epoch's first image. Columns ``experiment``, ``task`` (``""`` for runs without
    one), ``seed``, ``epoch``, ``path``, in the head list's order, then :func:`tasks`' order
    (experiments without attention images are left out)."""
    rows = []
    done = finished(df, metric)
    task_of = done["task"].fillna("") if "task" in done else pd.Series("", index=done.index)
    for experiment in order_experiments(done["experiment"]):
        for task in dict.fromkeys(task_of[done["experiment"] == experiment]):
            runs = done[(done["experiment"] == experiment) & (task_of == task)].sort_values("seed", na_position="last")
            for seed, folder in zip(runs["seed"], runs["run_folder"]):
                if not isinstance(folder, str) or not folder:
                    continue
                found = latest_attention_image(Path(runs_root) / folder)
                if found:
                    rows.append({"experiment": experiment, "task": task, "seed": seed, "epoch": found[1],
                                 "path": found[0]})
                    break
    return pd.DataFrame(rows, columns=["experiment", "task", "seed", "epoch", "path"])


def find_root(start: str | Path | None = None) -> Path:
    """The repository root: the first folder from ``start`` (default: the working directory) up
    that holds ``pyproject.toml``, else ``start`` itself (notebooks run with ``notebooks/`` as
    their working directory)."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def resolve(path: str | Path, root: str | Path) -> Path:
    """``path`` as given when absolute, else relative to ``root``."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(root) / path

