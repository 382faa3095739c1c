"""The cost harness: the seeds' transcribed operators against ours, and the benchmark script end to end.

No timing assertions: sizes are tiny and the machine is shared.
"""

import csv
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lit_seg.study import bench, harness, seed_ops, training_step
from lit_seg.study.runner import Runner
from tests.conftest import randomize

SEEDS = {
    "self_attention": (lambda: seed_ops._SelfAttentionBlock(8, 4, 6, 5), (2, 8, 5, 7)),
    "self_attention_default_out": (lambda: seed_ops._SelfAttentionBlock(8, 6, 4), (3, 8, 4, 4)),
    "non_local": (lambda: seed_ops._NonLocalBlockND(8, sub_sample=False), (2, 8, 5, 7)),
    "non_local_sub_sample": (lambda: seed_ops._NonLocalBlockND(8, inter_channels=2), (2, 8, 6, 8)),
    "non_local_concat": (lambda: seed_ops._NonLocalBlockNDConcatenation(8, sub_sample=False), (2, 8, 5, 7)),
    "non_local_concat_sub_sample": (lambda: seed_ops._NonLocalBlockNDConcatenation(8), (2, 8, 6, 8)),
    "pam": (lambda: seed_ops._PositionAttentionModule(16), (2, 16, 5, 7)),
    "cam": (lambda: seed_ops._ChannelAttentionModule(), (2, 8, 5, 7)),
    "criss_cross": (lambda: seed_ops.CrissCrossAttention(16), (2, 16, 5, 7)),
    "criss_cross_r2": (lambda: seed_ops.Recurrent(seed_ops.CrissCrossAttention(16), 2), (2, 16, 6, 5)),
    "global_context": (lambda: seed_ops.GlobalContextBlock(32), (2, 32, 5, 7)),
}


def _random_seed_module(name: str) -> torch.nn.Module:
    """The seed's module with random weights everywhere (gamma, alpha, beta and the zeroed W included)."""
    seed = randomize(SEEDS[name][0]()).double()
    with torch.no_grad():
        for module in seed.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.abs_().add_(0.5)  # a valid variance, for evaluation mode
    return seed


@pytest.mark.parametrize("name", list(SEEDS))
def test_seed_operator_matches_ours_forward_and_backward(name):
    seed = _random_seed_module(name)
    ours = seed_ops.ours_from_seed(seed)
    assert type(ours).__module__.startswith(("lit_seg.models.", "lit_seg.study.seed_ops"))  # Recurrent wraps R>1
    x = torch.randn(SEEDS[name][1], dtype=torch.float64, requires_grad=True)
    x_ours = x.detach().clone().requires_grad_(True)
    want, got = seed(x), ours(x_ours)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(want)
    want.backward(grad)
    got.backward(grad)
    torch.testing.assert_close(x_ours.grad, x.grad)
    params_ours, params_seed = dict(ours.named_parameters()), dict(seed.named_parameters())
    compared = 0
    for o, s in seed_ops.parameter_pairs(seed):
        if o in params_ours:
            torch.testing.assert_close(params_ours[o].grad, params_seed[s].grad, msg=f"{o} <- {s}")
            compared += 1
    assert compared == len(params_ours)
    # The seeds' conv bias in front of a BatchNorm (left out in ours) gets no gradient.
    for _o, s in seed_ops._BIAS_BEFORE_NORM.get(type(seed), []):
        torch.testing.assert_close(params_seed[s].grad, torch.zeros_like(params_seed[s]))


@pytest.mark.parametrize("name", list(SEEDS))
def test_seed_operator_matches_ours_in_evaluation_mode(name):
    # Fresh copies: in training mode the OCNet seed runs f_key (and its BatchNorm update) twice.
    seed = _random_seed_module(name).eval()
    ours = seed_ops.ours_from_seed(seed)
    assert not ours.training
    x = torch.randn(SEEDS[name][1], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), seed(x))


def test_seed_criss_cross_runs_on_the_cpu_and_in_bfloat16():
    seed = randomize(seed_ops.CrissCrossAttention(16), 0.1).to(torch.bfloat16)
    out = seed(torch.randn(1, 16, 4, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_mapping_rejects_what_ours_cannot_express():
    with pytest.raises(ValueError, match="bn_layer"):
        seed_ops.ours_from_seed(seed_ops._NonLocalBlockND(8, bn_layer=False))
    with pytest.raises(TypeError):
        seed_ops.ours_from_seed(torch.nn.Conv2d(2, 2, 1))


def test_flop_counter_sees_our_cpu_attention_kernels():
    # Same work in both: without the CPU flash-attention formulas ours would count only the convs.
    seed = seed_ops._NonLocalBlockND(16, sub_sample=False)
    ours = seed_ops.ours_from_seed(seed)
    x = torch.randn(2, 16, 8, 8)
    counts = []
    for block in (ours, seed):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            block(x)
        counts.append(counter.get_total_flops())
    n = 64
    attention = 2 * (2 * 2 * n * n * 8)  # q k^T and A v, batch 2, C' = 8
    assert counts[0] == counts[1] and counts[0] > attention


def test_peak_memory_sees_torch_allocations():
    with harness.PeakMemory(torch.device("cpu")) as memory:
        a = torch.ones(4 * 2**20 // 4)  # 4 MiB
        b = torch.ones(8 * 2**20 // 4)  # 8 MiB
        del a, b
    assert 12 * 2**20 <= memory.peak < 13 * 2**20


def test_fresh_process_measurement():
    spec = {"kind": "operator", "name": "cam", "impl": "seed", "channels": 8, "size": [4, 4], "batch": 1,
            "dtype": "float32", "device": "cpu", "warmup": 0, "repeats": 1, "threads": 1}
    result = Runner(fresh_process=True, timeout=120)(spec)
    assert "error" not in result, result
    assert result["peak_fwdbwd"] > 0 and not math.isnan(result["rss_fwdbwd"])


# --- the script end to end -------------------------------------------------------------------------

TINY = ["--channels", "16", "--size", "8", "8", "--batch", "2", "--repeats", "1", "--warmup", "0",
        "--threads", "1", "--in-process", "--matmul-n", "64", "--min-time", "0"]
COLUMNS = {"name", "impl", "params", "flops_fwd", "flops_fwdbwd", "gflop_fwd", "gflop_fwdbwd", "fwd_ms", "fwdbwd_ms",
           "peak_fwd_mib", "peak_fwdbwd_mib", "rss_fwdbwd_mib", "gflops_achieved", "matmul_fraction", "load1", "note"}


def _read(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_harness_runs_every_operator_and_head(tmp_path):
    bench.main([*TINY, "--head-channels", "8", "--head-repeats", "1", "--output_dir", str(tmp_path)])
    operators = _read(tmp_path / "operators.csv")
    assert COLUMNS | {"speedup_fwdbwd", "memory_ratio_fwdbwd"} <= set(operators[0])
    assert [(r["name"], r["impl"]) for r in operators] == [
        (name, impl) for name in harness.SEED_OPERATORS for impl in ("ours", "seed")]
    for row in operators:
        assert row["note"] == "", row
        assert int(row["flops_fwdbwd"]) > int(row["flops_fwd"]) > 0
        assert float(row["fwdbwd_ms"]) > 0 and float(row["peak_fwdbwd_mib"]) > 0
    assert all(float(r["speedup_fwdbwd"]) > 0 for r in operators if r["impl"] == "ours")
    heads = _read(tmp_path / "heads.csv")
    assert COLUMNS <= set(heads[0])
    assert [r["name"] for r in heads] == list(harness.HEADS)
    assert all(r["note"] == "" and int(r["flops_fwd"]) > 0 and float(r["fwdbwd_ms"]) > 0 for r in heads)
    table = (tmp_path / "operators.md").read_text()
    assert "| operator | params | GFLOP fwd+bwd ours / seed |" in table and "GFLOP/s" in table
    assert "| head | params |" in (tmp_path / "heads.md").read_text()


def test_sweep_mode(tmp_path):
    # 8x8 is a "large" point: its time is that of the counting pass.
    bench.main([*TINY, "--sweep", "4", "8", "--sweep-large", "8", "--operators", "pam", "criss_cross_r2",
                           "non_local_concat", "--output_dir", str(tmp_path)])
    rows = _read(tmp_path / "sweep.csv")
    assert [(r["name"], r["height"], r["impl"]) for r in rows] == [
        (name, size, impl) for name in ("pam", "criss_cross_r2", "non_local_concat") for size in ("4", "8")
        for impl in ("ours", "seed")]
    assert all(float(r["fwdbwd_ms"]) > 0 and float(r["peak_fwdbwd_mib"]) > 0 for r in rows)
    assert all(len(r["fwdbwd_ms_all"].split()) == 1 for r in rows if r["height"] == "8")
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert "| operator | H×W |" in (tmp_path / "sweep.md").read_text()


def test_sweep_skips_a_seed_that_cannot_fit(tmp_path):
    bench.main([*TINY, "--sweep", "8", "--operators", "non_local_concat", "--max-seed-gib", "1e-6",
                           "--output_dir", str(tmp_path)])
    ours, seed = _read(tmp_path / "sweep.csv")
    assert ours["note"] == "" and seed["note"].startswith("skipped")


def test_ccnet_claim_mode(tmp_path):
    bench.main([*TINY, "--ccnet-claim", "--claim-size", "9", "9", "--claim-channels", "16",
                "--output_dir", str(tmp_path)])
    rows = {(r["name"], r["impl"]): r for r in _read(tmp_path / "ccnet_claim.csv")}
    assert set(rows) == {(n, i) for n in ("non_local", "criss_cross_r1", "criss_cross_r2") for i in ("ours", "seed")}
    for impl in ("ours", "seed"):
        r1, r2 = int(rows["criss_cross_r1", impl]["flops_fwd"]), int(rows["criss_cross_r2", impl]["flops_fwd"])
        assert r2 == 2 * r1 > 0 and rows["non_local", impl]["batch"] == "1"
    text = (tmp_path / "ccnet_claim.md").read_text()
    assert "saves" in text and "paper" in text


def test_training_step_benchmark(tmp_path):
    summary = training_step.main(["--steps", "2", "--warmup", "1", "--rounds", "1", "--batch", "2",
                        "--size", "32", "32", "--output_dir", str(tmp_path)])
    assert summary["bare_ms"] > 0 and summary["lightning_ms"] > 0
    assert summary["ratio"] == pytest.approx(summary["lightning_ms"] / summary["bare_ms"], rel=1e-3)
    lines = (tmp_path / "training_step.csv").read_text().splitlines()
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))  # a closing comment line
    assert {r["loop"] for r in rows} == {"bare", "lightning"} and all(int(r["steps"]) == 2 for r in rows)
