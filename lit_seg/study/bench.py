"""One cost harness for every context operator (ours and the seeds') and every decode head.

    lit-seg bench                         # operators + heads, C=512, 64x64, batch 2
    lit-seg bench --sweep 32 64 96 128    # operators: time and memory vs size
    lit-seg bench --ccnet-claim           # CCNet's FLOPs claim, 1x512x97x97
    lit-seg bench --device cuda --dtype bfloat16

For every operator, ours (lit_seg.models.attention) and the seed's code (lit_seg/study/seed_ops.py,
same configuration and weights) are measured back to back in the same run; heads are ours only
(features ``(batch, channels, H, W)`` as the deepest encoder map, and as every other map a head
reads, e.g. ANN's low-level one; head width ``--head-channels``).
Each measurement: parameters; FLOPs of the forward and of forward + backward
(``torch.utils.flop_counter.FlopCounterMode``: matrix products, convolutions and attention
kernels; elementwise work is not counted); median latency of ``--repeats`` forward (no_grad)
and forward + backward passes after ``--warmup`` warm-up passes; peak memory of the forward and
of forward + backward. The fp32 matrix-product speed of the machine (an n x n product) is
measured in the same run and each operator's achieved GFLOP/s (forward + backward) is given as
a fraction of it.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (minus the allocation at the start).
On the CPU every measurement runs in a fresh process (forked from a server that has only
imported the modules), and the reported peak is torch's own allocator seen through the
profiler's memory events (``profile_memory=True``: every allocation and free of torch's CPU
allocator with its size; the maximum of their running sum is the peak growth, the CPU
counterpart of ``max_memory_allocated``); the growth of the process's peak RSS (``VmHWM``, reset
through ``/proc/self/clear_refs``) is reported alongside as a cross-check that also sees memory
outside torch's allocator (see lit_seg/study/harness.py).

Outputs (``--out``, default results/benchmark/): operators.{csv,md}, heads.{csv,md};
sweep.{csv,md,png} with ``--sweep``; ccnet_claim.{csv,md} with ``--ccnet-claim``.
"""

import argparse
import csv
import datetime
import math
import os
import sys
from pathlib import Path

from lit_seg.api.environment import cpu_summary
from lit_seg.study import harness
from lit_seg.study.runner import Runner

MIB = 2**20
CLAIM_OPERATORS = ["non_local", "criss_cross_r1", "criss_cross_r2"]


# --- running measurements ------------------------------------------------------------------------


def _progress(spec: dict, result: dict) -> None:
    what = f"{spec['kind']:8} {spec.get('name', 'matmul'):16} {spec.get('impl', ''):4} {spec.get('size', '')}"
    status = result.get("error") or result.get("skipped") or (
        f"fwd+bwd {result.get('fwdbwd_ms', math.nan):9.1f} ms, "
        f"peak {result.get('peak_fwdbwd', math.nan) / MIB:8.1f} MiB"
        if "fwdbwd_ms" in result else f"{result.get('gflops', math.nan):.0f} GFLOP/s")
    print(f"[{result['wall_s']:6.1f} s, load {result['load1']:.2f}] {what}: {status}", flush=True)


# --- formatting ----------------------------------------------------------------------------------


def _num(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(numerator, denominator) -> float:
    try:
        if (numerator is None or denominator is None or math.isnan(numerator) or math.isnan(denominator)
                or denominator <= 0):
            return math.nan
    except TypeError:
        return math.nan
    return numerator / denominator


def _times(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}×"


def _pair(ours, seed, digits: int = 1) -> str:
    return f"{_num(ours, digits)} / {_num(seed, digits)}"


def _row(spec: dict, result: dict, label: str, matmul_gflops: float) -> dict:
    """A flat CSV row."""
    flops = result.get("flops_fwdbwd", math.nan)
    gflops = _ratio(flops / 1e9 if isinstance(flops, (int, float)) else math.nan,
                    result.get("fwdbwd_ms", math.nan) / 1e3)
    return {
        "name": spec["name"],
        "label": label,
        "impl": spec.get("impl", "ours"),
        "channels": spec["channels"],
        "head_channels": spec.get("head_channels", ""),
        "height": spec["size"][0],
        "width": spec["size"][1],
        "batch": spec["batch"],
        "dtype": spec["dtype"],
        "device": spec["device"],
        "threads": result.get("threads", ""),
        "params": result.get("params", ""),
        "flops_fwd": result.get("flops_fwd", ""),
        "flops_fwdbwd": result.get("flops_fwdbwd", ""),
        "gflop_fwd": _r(result.get("flops_fwd", math.nan), 1e9, 4),
        "gflop_fwdbwd": _r(flops, 1e9, 4),
        "fwd_ms": _r(result.get("fwd_ms", math.nan), 1, 2),
        "fwdbwd_ms": _r(result.get("fwdbwd_ms", math.nan), 1, 2),
        "peak_fwd_mib": _r(result.get("peak_fwd", math.nan), MIB, 2),
        "peak_fwdbwd_mib": _r(result.get("peak_fwdbwd", math.nan), MIB, 2),
        "rss_fwdbwd_mib": _r(result.get("rss_fwdbwd", math.nan), MIB, 2),
        "gflops_achieved": round(gflops, 2) if not math.isnan(gflops) else math.nan,
        "matmul_fraction": round(_ratio(gflops, matmul_gflops), 4) if not math.isnan(gflops) else math.nan,
        "fwd_ms_all": " ".join(map(str, result.get("fwd_ms_all", []))),
        "fwdbwd_ms_all": " ".join(map(str, result.get("fwdbwd_ms_all", []))),
        "rounds_fwdbwd_ms": " ".join(map(str, result.get("rounds_fwdbwd_ms", []))),
        "load1": result.get("load1", ""),
        "note": result.get("error") or result.get("skipped") or "",
    }


def _r(value, unit: float, digits: int) -> float:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return math.nan
    return round(value / unit, digits)


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _header(args, title: str, machine: dict, loads: list[float], latency: str) -> list[str]:
    import torch

    loads = [x for x in loads if isinstance(x, (int, float))]
    lines = [
        f"# {title}",
        "",
        f"- command: `{' '.join(['lit-seg bench', *args.argv])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; torch {torch.__version__}; "
        f"{cpu_summary()}; device {args.device}, "
        f"{machine.get('threads', '?')} threads, dtype {args.dtype}, denormals "
        f"{'flushed to zero (torch.set_flush_denormal)' if args.flush_denormal else 'not flushed (PyTorch default)'}",
        f"- fp32 matrix product ({args.matmul_n}²): {_num(machine.get('fp32'), 0)} GFLOP/s"
        + (f"; {args.dtype}: {_num(machine.get('dtype'), 0)} GFLOP/s" if args.dtype != "float32" else "")
        + " (median of 5, same run)",
        f"- 1-min load average before each measurement: {min(loads):.2f}–{max(loads):.2f}" if loads else None,
        f"- latency: {latency}; forward under no_grad, training mode throughout",
        "- peak memory: growth during the pass; CPU: torch's allocator through the profiler's memory events, "
        "each measurement in a fresh process (RSS: growth of the peak resident set, a cross-check); "
        "CUDA: max_memory_allocated",
        "- FLOPs: FlopCounterMode (matrix products, convolutions, attention kernels incl. the backward's "
        "recomputation; elementwise work not counted); % of matmul = achieved fwd+bwd GFLOP/s / fp32 matmul GFLOP/s",
        "",
    ]
    return [line for line in lines if line is not None]


# --- modes ---------------------------------------------------------------------------------------


def base_spec(args, **extra) -> dict:
    spec = {"channels": args.channels, "size": list(args.size), "batch": args.batch, "dtype": args.dtype,
            "device": args.device, "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
            "flush_denormal": args.flush_denormal, "min_time": args.min_time}
    spec.update(extra)
    return spec


def measure_machine(args, run: Runner) -> dict:
    machine = {}
    for key, dtype in [("fp32", "float32"), ("dtype", args.dtype)]:
        if key == "dtype" and dtype == "float32":
            machine["dtype"] = machine["fp32"]
            continue
        spec = {"kind": "matmul", "n": args.matmul_n, "dtype": dtype, "device": args.device, "repeats": 5,
                "threads": args.threads, "flush_denormal": args.flush_denormal}
        result = run(spec)
        _progress(spec, result)
        machine[key] = result.get("gflops", math.nan)
        machine["threads"] = result.get("threads", "?")
    return machine


def _measure_pair(args, run: Runner, name: str, rounds: int = 1, **spec_extra) -> tuple[dict, dict, dict, dict]:
    """Measures ours and the seed's version of one operator: (ours spec, ours result, seed spec, seed result).

    With ``rounds`` > 1 the two alternate (ours, seed, ours, seed, ...), each time in a fresh
    process, and each keeps its round with the lowest median forward + backward time: on a shared
    machine another process's burst only ever slows a round down. FLOPs and memory are the same
    in every round.
    """
    specs, results = {}, {"ours": [], "seed": []}
    for _ in range(rounds):
        for impl in ("ours", "seed"):
            spec = base_spec(args, kind="operator", name=name, impl=impl, **spec_extra)
            specs[impl] = spec
            itemsize = 2 if spec["dtype"] in ("bfloat16", "float16") else 4
            estimate = harness.seed_memory_estimate(name, spec["channels"], spec["size"], spec["batch"], itemsize)
            if impl == "seed" and estimate > args.max_seed_gib * 2**30:
                result = {"skipped": f"skipped: the seed needs > {estimate / 2**30:,.0f} GiB (limit --max-seed-gib "
                                     f"{args.max_seed_gib:g})", "load1": round(os.getloadavg()[0], 2), "wall_s": 0.0}
            else:
                result = run(spec)
            _progress(spec, result)
            results[impl].append(result)
    best = {}
    for impl, found in results.items():
        ok = [r for r in found if "fwdbwd_ms" in r and not math.isnan(r["fwdbwd_ms"])]
        best[impl] = dict(min(ok, key=lambda r: r["fwdbwd_ms"]) if ok else found[-1])
        best[impl]["rounds_fwdbwd_ms"] = [round(r.get("fwdbwd_ms", math.nan), 1) for r in found]
    return specs["ours"], best["ours"], specs["seed"], best["seed"]


def run_default(args, run: Runner, machine: dict) -> None:
    rows, lines, loads = [], [], []
    if args.operators:
        lines += [
            f"## Operators: ours vs the seeds' code, {args.batch}×{args.channels}×{args.size[0]}×{args.size[1]}, "
            f"{args.dtype}, {args.device}",
            "",
            "Speed-up = seed / ours forward+backward time; memory ratio = seed / ours peak forward+backward memory.",
            "",
            "| operator | params | GFLOP fwd+bwd ours / seed | fwd ms ours / seed | fwd+bwd ms ours / seed "
            "| speed-up fwd / fwd+bwd "
            "| peak MiB fwd ours / seed | peak MiB fwd+bwd ours / seed | memory ratio fwd / fwd+bwd "
            "| RSS MiB fwd+bwd ours / seed | % of matmul ours / seed |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in args.operators:
            ours_spec, ours, seed_spec, seed = _measure_pair(args, run, name, rounds=args.rounds)
            label = harness.OPERATOR_LABELS[name]
            ours_row = _row(ours_spec, ours, label, machine["fp32"])
            seed_row = _row(seed_spec, seed, label, machine["fp32"])
            speed_fwd = _ratio(seed_row["fwd_ms"], ours_row["fwd_ms"])
            speed = _ratio(seed_row["fwdbwd_ms"], ours_row["fwdbwd_ms"])
            mem_fwd = _ratio(seed_row["peak_fwd_mib"], ours_row["peak_fwd_mib"])
            mem = _ratio(seed_row["peak_fwdbwd_mib"], ours_row["peak_fwdbwd_mib"])
            ours_row.update(speedup_fwd=round(speed_fwd, 3), speedup_fwdbwd=round(speed, 3),
                            memory_ratio_fwd=round(mem_fwd, 3), memory_ratio_fwdbwd=round(mem, 3))
            seed_row.update(speedup_fwd="", speedup_fwdbwd="", memory_ratio_fwd="", memory_ratio_fwdbwd="")
            rows += [ours_row, seed_row]
            loads += [ours_row["load1"], seed_row["load1"]]
            note = seed_row["note"] or ours_row["note"]
            lines.append(
                f"| {label} | {_num(ours_row['params'] if ours_row['params'] != '' else math.nan, 0)}"
                f" | {_pair(ours_row['gflop_fwdbwd'], seed_row['gflop_fwdbwd'], 2)}"
                f" | {_pair(ours_row['fwd_ms'], seed_row['fwd_ms'])}"
                f" | {_pair(ours_row['fwdbwd_ms'], seed_row['fwdbwd_ms'])}"
                f" | {_times(speed_fwd)} / {_times(speed)}"
                f" | {_pair(ours_row['peak_fwd_mib'], seed_row['peak_fwd_mib'])}"
                f" | {_pair(ours_row['peak_fwdbwd_mib'], seed_row['peak_fwdbwd_mib'])}"
                f" | {_times(mem_fwd)} / {_times(mem)}"
                f" | {_pair(ours_row['rss_fwdbwd_mib'], seed_row['rss_fwdbwd_mib'])}"
                f" | {_pair(100 * ours_row['matmul_fraction'], 100 * seed_row['matmul_fraction'], 0)} |")
            if note:
                lines.append(f"| ↳ {note} |  |  |  |  |  |  |  |  |  |  |")
        _write_csv(args.output_dir / "operators.csv", rows)
        latency = (f"median of at least {args.repeats} passes (more, up to 30, until they add up to "
                   f"{args.min_time:g} s) "
                   f"after {args.warmup} warm-up pass(es) and the counting passes; ours and the seed's alternate "
                   f"{args.rounds} time(s), each in a fresh process, and each keeps its fastest round")
        text = _header(args, "Context operators: ours vs the seeds", machine, loads, latency) + lines
        (args.output_dir / "operators.md").write_text("\n".join(text) + "\n")
        print("\n".join(lines))

    if args.heads:
        rows, loads = [], []
        lines = [
            "",
            f"## Heads (ours): features {args.batch}×{args.channels}×{args.size[0]}×{args.size[1]}, head width "
            f"{args.head_channels}, {harness.NUM_CLASSES} classes, {args.dtype}, {args.device}",
            "",
            "| head | params | GFLOP fwd | GFLOP fwd+bwd | fwd ms | fwd+bwd ms | peak MiB fwd | peak MiB fwd+bwd "
            "| RSS MiB fwd+bwd | GFLOP/s fwd+bwd (% of matmul) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in args.heads:
            spec = base_spec(args, kind="head", name=name, impl="ours", head_channels=args.head_channels,
                             repeats=args.head_repeats, warmup=0, min_time=0.0)
            result = run(spec)
            _progress(spec, result)
            row = _row(spec, result, name, machine["fp32"])
            rows.append(row)
            loads.append(row["load1"])
            lines.append(
                f"| {name} | {_num(row['params'] if row['params'] != '' else math.nan, 0)}"
                f" | {_num(row['gflop_fwd'], 2)}"
                f" | {_num(row['gflop_fwdbwd'], 2)} | {_num(row['fwd_ms'])} | {_num(row['fwdbwd_ms'])}"
                f" | {_num(row['peak_fwd_mib'])} | {_num(row['peak_fwdbwd_mib'])} | {_num(row['rss_fwdbwd_mib'])}"
                f" | {_num(row['gflops_achieved'], 0)} ({_num(100 * row['matmul_fraction'], 0)}%) |"
                + (f" {row['note']}" if row["note"] else ""))
        _write_csv(args.output_dir / "heads.csv", rows)
        latency = f"median of {args.head_repeats} passes after the counting passes"
        text = _header(args, "Decode heads", machine, loads, latency) + lines[1:]
        (args.output_dir / "heads.md").write_text("\n".join(text) + "\n")
        print("\n".join(lines))


def run_sweep(args, run: Runner, machine: dict) -> None:
    rows, loads = [], []
    lines = [
        f"## Sweep: forward+backward time and peak memory vs feature size, batch {args.batch}, C={args.channels}, "
        f"{args.dtype}, {args.device}",
        "",
        "| operator | H×W | fwd+bwd ms ours / seed | speed-up | peak MiB ours / seed | memory ratio "
        "| RSS MiB ours / seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.operators:
        for size in args.sweep:
            repeats = args.sweep_repeats if size < args.sweep_large else 0
            ours_spec, ours, seed_spec, seed = _measure_pair(
                args, run, name, size=[size, size], forward=False, warmup=0, repeats=repeats,
                min_time=args.sweep_min_time)
            label = harness.OPERATOR_LABELS[name]
            ours_row = _row(ours_spec, ours, label, machine["fp32"])
            seed_row = _row(seed_spec, seed, label, machine["fp32"])
            speed = _ratio(seed_row["fwdbwd_ms"], ours_row["fwdbwd_ms"])
            mem = _ratio(seed_row["peak_fwdbwd_mib"], ours_row["peak_fwdbwd_mib"])
            ours_row.update(speedup_fwdbwd=round(speed, 3), memory_ratio_fwdbwd=round(mem, 3))
            seed_row.update(speedup_fwdbwd="", memory_ratio_fwdbwd="")
            rows += [ours_row, seed_row]
            loads += [ours_row["load1"], seed_row["load1"]]
            lines.append(
                f"| {label} | {size}×{size} | {_pair(ours_row['fwdbwd_ms'], seed_row['fwdbwd_ms'])} | {_times(speed)}"
                f" | {_pair(ours_row['peak_fwdbwd_mib'], seed_row['peak_fwdbwd_mib'])} | {_times(mem)}"
                f" | {_pair(ours_row['rss_fwdbwd_mib'], seed_row['rss_fwdbwd_mib'])} |"
                + (f" {seed_row['note'] or ours_row['note']}" if seed_row["note"] or ours_row["note"] else ""))
    _write_csv(args.output_dir / "sweep.csv", rows)
    latency = (f"median of at least {args.sweep_repeats} pass(es) (more, up to 30, until they add up to "
               f"{args.sweep_min_time:g} s) after the counting pass, one process per point; from "
               f"{args.sweep_large}×{args.sweep_large} on the one counting pass itself (FLOP counter and memory "
               "profiler on: well under 1% of a pass of several seconds)")
    text = _header(args, "Operators vs feature size", machine, loads, latency) + lines
    (args.output_dir / "sweep.md").write_text("\n".join(text) + "\n")
    print("\n".join(lines))
    _plot_sweep(rows, args.output_dir / "sweep.png", args)


def _plot_sweep(rows: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    names = list(dict.fromkeys(r["name"] for r in rows))
    colors = plt.get_cmap("tab10")
    for index, name in enumerate(names):
        for impl, style in (("ours", "-"), ("seed", "--")):
            mine = [r for r in rows if r["name"] == name and r["impl"] == impl]
            for ax, key in zip(axes, ("fwdbwd_ms", "peak_fwdbwd_mib")):
                points = [(r["height"], r[key]) for r in mine if isinstance(r[key], float) and not math.isnan(r[key])]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, marker="o", color=colors(index % 10),
                            label=f"{harness.OPERATOR_LABELS[name]} ({impl})")
    sizes = sorted({r["height"] for r in rows})
    for ax, title in zip(axes, ("forward + backward time (ms)", "peak memory, forward + backward (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("feature size H = W")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"ours (solid) vs seeds (dashed): batch {args.batch}, C={args.channels}, {args.dtype}, {args.device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_claim(args, run: Runner, machine: dict) -> None:
    size = list(args.claim_size)
    rows, results, loads = [], {}, []
    for name in CLAIM_OPERATORS:
        ours_spec, ours, seed_spec, seed = _measure_pair(
            args, run, name, size=size, batch=1, channels=args.claim_channels, warmup=0, repeats=args.claim_repeats,
            min_time=0.0)
        for spec, result in ((ours_spec, ours), (seed_spec, seed)):
            row = _row(spec, result, harness.OPERATOR_LABELS[name], machine["fp32"])
            rows.append(row)
            loads.append(row["load1"])
            results[name, spec["impl"]] = row
    _write_csv(args.output_dir / "ccnet_claim.csv", rows)
    shape = f"1×{args.claim_channels}×{size[0]}×{size[1]}"
    lines = [
        f"## CCNet's FLOPs claim on this harness: {shape}, {args.dtype}, {args.device}",
        "",
        "Paper (Huang et al., CCNet): one criss-cross module ≈ 8 GFLOPs vs non-local ≈ 108 GFLOPs; with R=2 the "
        "criss-cross attention saves ≈ 85% of the non-local block's FLOPs; 11× less GPU memory.",
        "",
        "| module | GFLOP fwd ours / seed | GFLOP fwd+bwd ours / seed | fwd ms ours / seed | fwd+bwd ms ours / seed "
        "| peak MiB fwd ours / seed | peak MiB fwd+bwd ours / seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CLAIM_OPERATORS:
        o, s = results[name, "ours"], results[name, "seed"]
        lines.append(
            f"| {harness.OPERATOR_LABELS[name]} | {_pair(o['gflop_fwd'], s['gflop_fwd'], 2)}"
            f" | {_pair(o['gflop_fwdbwd'], s['gflop_fwdbwd'], 2)} | {_pair(o['fwd_ms'], s['fwd_ms'])}"
            f" | {_pair(o['fwdbwd_ms'], s['fwdbwd_ms'])} | {_pair(o['peak_fwd_mib'], s['peak_fwd_mib'])}"
            f" | {_pair(o['peak_fwdbwd_mib'], s['peak_fwdbwd_mib'])} |")
    lines.append("")
    for impl in ("ours", "seed"):
        nl = results["non_local", impl]
        r1, r2 = results["criss_cross_r1", impl], results["criss_cross_r2", impl]
        one = _ratio(float(r1["flops_fwd"] or math.nan), float(nl["flops_fwd"] or math.nan))
        two = _ratio(float(r2["flops_fwd"] or math.nan), float(nl["flops_fwd"] or math.nan))
        mem_fwd = _ratio(nl["peak_fwd_mib"], r2["peak_fwd_mib"])
        mem_r1 = _ratio(nl["peak_fwd_mib"], r1["peak_fwd_mib"])
        mem = _ratio(nl["peak_fwdbwd_mib"], r2["peak_fwdbwd_mib"])
        lines += [
            f"- {impl}: one criss-cross module {_num(r1['gflop_fwd'], 2)} GFLOPs "
            f"vs non-local {_num(nl['gflop_fwd'], 2)} "
            f"(ratio {_num(100 * one, 1)}%; paper 8/108 = 7.4%); R=2 = {_num(100 * two, 1)}% of non-local, "
            f"i.e. saves {_num(100 * (1 - two), 1)}% (paper ≈ 85%). Peak memory non-local / criss-cross: "
            f"forward {_times(mem_r1)} (R=1), {_times(mem_fwd)} (R=2); forward+backward {_times(mem)} (R=2) "
            "(paper: 11×).",
        ]
    latency = f"median of {args.claim_repeats} pass(es) after the counting passes"
    text = _header(args, "CCNet FLOPs claim", machine, loads, latency) + lines
    (args.output_dir / "ccnet_claim.md").write_text("\n".join(text) + "\n")
    print("\n".join(lines))


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lit-seg bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=512, help="feature channels C (512)")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"), help="feature size (64 64)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.set_flush_denormal in every measurement (default on: subnormal softmax weights "
                             "make DANet's channel attention, seed and ours, ~14x slower on x86 CPUs)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (median)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="time more passes (up to 30) until the timed ones add up to this many seconds")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up passes after the counting passes")
    parser.add_argument("--operators", nargs="*", choices=list(harness.SEED_OPERATORS),
                        default=list(harness.SEED_OPERATORS), help="operators to measure (none: no operators)")
    parser.add_argument("--heads", nargs="*", choices=list(harness.HEADS), default=list(harness.HEADS),
                        help="heads to measure in the default mode (none: no heads)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="operators: alternate ours/seed this many times (fresh processes), "
                             "keep each one's best round")
    parser.add_argument("--head-channels", type=int, default=256,
                        help="head width (256; mmsegmentation's 512 takes ~4x longer: ~20 s per head here)")
    parser.add_argument("--head-repeats", type=int, default=2,
                        help="timed passes per head (after the counting passes, no extra warm-up)")
    parser.add_argument("--sweep", type=int, nargs="+", metavar="N",
                        help="instead of the default tables: operators at N×N for each N")
    parser.add_argument("--sweep-repeats", type=int, default=1,
                        help="timed passes per sweep point (more until --sweep-min-time)")
    parser.add_argument("--sweep-min-time", type=float, default=0.5)
    parser.add_argument("--sweep-large", type=int, default=128,
                        help="from this size on, the sweep's time is that of its one (counting) pass")
    parser.add_argument("--ccnet-claim", action="store_true", help="instead of the default tables: CCNet's FLOPs claim")
    parser.add_argument("--claim-size", type=int, nargs=2, default=[97, 97], metavar=("H", "W"))
    parser.add_argument("--claim-channels", type=int, default=512)
    parser.add_argument("--claim-repeats", type=int, default=1)
    parser.add_argument("--max-seed-gib", type=float, default=7.0,
                        help="skip a seed whose estimated temporaries exceed this (the concatenation seed)")
    parser.add_argument("--matmul-n", type=int, default=2048, help="size of the reference matrix product")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (fast; RSS then not from a fresh process)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--output_dir", type=Path, default=Path("results/benchmark"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    run = Runner(fresh_process=not args.in_process, timeout=args.timeout)
    machine = measure_machine(args, run)
    if args.sweep:
        run_sweep(args, run, machine)
    if args.ccnet_claim:
        run_claim(args, run, machine)
    if not args.sweep and not args.ccnet_claim:
        run_default(args, run, machine)


if __name__ == "__main__":
    main()
