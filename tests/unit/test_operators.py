"""The context operators against plain references written from the seeds' formulas."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lit_seg.models.attention import (
    AsymmetricFusion,
    AsymmetricPyramid,
    ChannelAttention,
    CrissCrossAttention,
    ExpectationMaximizationAttention,
    GlobalContextBlock,
    Hamburger,
    InterlacedSparseAttention,
    NMF2d,
    NonLocal2d,
    ObjectAttention,
    PositionAttention,
    PyramidKeyAttention,
    SelfAttention2d,
    SpatialGather,
    functional,
)
from lit_seg.models.attention.asymmetric_non_local import pyramid_pool
from lit_seg.models.attention.expectation_maximization import expectation_maximization
from lit_seg.models.attention.non_local import _relu_pair_sum
from tests import reference
from tests.conftest import randomize

SHAPES = [(2, 8, 5, 7), (3, 6, 6, 4)]
MODES = ["gaussian", "embedded_gaussian", "dot_product", "concatenation"]
QUERIES = torch.tensor([[0, 0], [1, 2], [3, 3]])


def _check_forward_and_backward(block, shape, ref_fn, std=0.5):
    """Forward and the gradients of the input and every trainable parameter match the reference
    (float64). The reference runs first: a training forward may update buffers (EMA's bases)
    after computing its output."""
    block = randomize(block, std).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    ref = ref_fn(x_ref, block)
    out = block(x)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    params = [p for p in block.parameters() if p.requires_grad]
    got = torch.autograd.grad(out, [x, *params], grad)
    want = torch.autograd.grad(ref, [x_ref, *params], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def _check_inputs_against_reference(block, inputs, ref_fn, std=0.5):
    """As _check_forward_and_backward, for an operator of several inputs: ``block(*inputs)``."""
    block = randomize(block, std).double()
    inputs = [t.double().requires_grad_(True) for t in inputs]
    refs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = block(*inputs)
    ref = ref_fn(*refs, block)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    params = list(block.parameters())
    got = torch.autograd.grad(out, [*inputs, *params], grad)
    want = torch.autograd.grad(ref, [*refs, *params], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def _expected_map(full_map: torch.Tensor, queries: torch.Tensor, width: int) -> torch.Tensor:
    """Rows of a reference (B, N, M) matrix for the query pixels: (B, Q, M)."""
    return full_map[:, queries[:, 0] * width + queries[:, 1]]


# --- non-local -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_non_local_matches_seed_formula(mode, sub_sample, shape):
    block = NonLocal2d(shape[1], mode=mode, sub_sample=sub_sample)
    _check_forward_and_backward(block, shape, reference.non_local)


def test_non_local_embedded_gaussian_without_scale_matches_seed_formula():
    block = NonLocal2d(8, reduction=4, use_scale=False)
    _check_forward_and_backward(block, (2, 8, 4, 6), reference.non_local)


@pytest.mark.parametrize("mode", MODES)
def test_non_local_starts_as_identity(mode):
    block = NonLocal2d(8, mode=mode)
    x = torch.randn(2, 8, 5, 6)
    assert torch.equal(block(x), x)
    assert not hasattr(block, "theta") if mode == "gaussian" else hasattr(block, "theta")


@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_non_local_attention_map_matches_reference_rows(mode, sub_sample):
    block = randomize(NonLocal2d(8, mode=mode, sub_sample=sub_sample)).double()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    _, full = reference.non_local(x, block, return_map=True)
    maps = block.attention_map(x, QUERIES)
    key_size = (2, 3) if sub_sample else (5, 7)
    assert maps.shape == (2, len(QUERIES), *key_size)
    torch.testing.assert_close(maps.flatten(2), _expected_map(full, QUERIES, 7))
    if mode in ("gaussian", "embedded_gaussian"):
        torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, len(QUERIES), dtype=torch.float64))


def _batch_norm_eval(y: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    scale = bn.weight.view(shape) / (bn.running_var.view(shape) + bn.eps).sqrt()
    return (y - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)


@pytest.mark.parametrize("shared", [True, False])
def test_non_local_key_query_activation_embeds_by_conv_batchnorm_relu(shared):
    """OCNet's f_key in the non-local block (an intervention): theta_i . phi_j of ReLU(BN(conv x)),
    written out here with the BatchNorm's running statistics (eval), forward and gradients."""
    block = randomize(NonLocal2d(8, share_key_query=shared, key_query_activation="relu")).double().eval()
    with torch.no_grad():
        for bn in (block.theta[1], block.phi[1]):
            bn.running_mean.normal_(0.0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    assert (block.phi is block.theta) == shared and block.theta[0].bias is None
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64, requires_grad=True)

    query, key = reference.embed(x, block.theta).flatten(2), reference.embed(x, block.phi).flatten(2)
    value = torch.nn.functional.conv2d(x, block.g.weight, block.g.bias).flatten(2)
    weights = torch.softmax(query.transpose(1, 2) @ key / block.inter_channels**0.5, dim=-1)  # (B, N, M)
    y = (value @ weights.transpose(1, 2)).unflatten(2, (5, 7))
    want = x + _batch_norm_eval(torch.nn.functional.conv2d(y, block.W[0].weight), block.W[1])
    got = block(x)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(got)
    params = [x, *block.parameters()]
    for g, w in zip(torch.autograd.grad(got, params, grad), torch.autograd.grad(want, params, grad), strict=True):
        torch.testing.assert_close(g, w)
    torch.testing.assert_close(block.attention_map(x, QUERIES).flatten(2), _expected_map(weights, QUERIES, 7))
    with pytest.raises(ValueError, match="key_query_activation needs theta and phi"):
        NonLocal2d(8, mode="gaussian", key_query_activation="relu")


def test_non_local_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        NonLocal2d(8, mode="softmax")


def test_concatenation_handles_all_and_no_active_keys():
    # a_i + b_j > 0 for all j, for none, and at a tie (ReLU(0) = 0): the sorted-prefix form is exact.
    a = torch.tensor([[10.0, -10.0, 0.5]], dtype=torch.float64)
    b = torch.tensor([[-1.0, -0.5, 0.0, 2.0]], dtype=torch.float64)
    g = torch.randn(1, 3, 4, dtype=torch.float64)  # (B, C, M)
    want = g @ torch.relu(a[:, :, None] + b[:, None, :]).transpose(1, 2)
    torch.testing.assert_close(_relu_pair_sum(a, b, g), want)


# --- OCNet self-attention --------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize(("key_channels", "value_channels", "out_channels"), [(4, 4, None), (3, 5, 7)])
def test_self_attention_matches_seed_formula(key_channels, value_channels, out_channels, scale, shape):
    block = SelfAttention2d(shape[1], key_channels=key_channels, value_channels=value_channels,
                            out_channels=out_channels, scale=scale)
    _check_forward_and_backward(block, shape, reference.self_attention)


def test_self_attention_starts_with_zero_context():
    block = SelfAttention2d(8, key_channels=4, value_channels=6, out_channels=5, scale=2)
    out = block(torch.randn(2, 8, 7, 6))
    assert out.shape == (2, 5, 7, 6) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("scale", [1, 2])
def test_self_attention_attention_map_matches_reference_rows(scale):
    block = randomize(SelfAttention2d(8, key_channels=4, value_channels=6, scale=scale)).double()
    x = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    _, full = reference.self_attention(x, block, return_map=True)
    queries = torch.tensor([[0, 0], [1, 2], [5, 4]])
    maps = block.attention_map(x, queries)
    pooled = (6 // scale, 5 // scale)
    assert maps.shape == (2, 3, *pooled)
    # A query stands for the pooled cell holding it; (5, 4) lies past the last full 2x2 cell.
    rows = (queries[:, 0] // scale).clamp(max=pooled[0] - 1)
    cols = (queries[:, 1] // scale).clamp(max=pooled[1] - 1)
    cells = torch.stack([rows, cols], dim=1)
    torch.testing.assert_close(maps.flatten(2), _expected_map(full, cells, pooled[1]))
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 3, dtype=torch.float64))


# --- DANet -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", [2, 1])  # key dim != value dim (chunked kernel), == (SDPA)
def test_position_attention_matches_seed_formula(reduction, shape):
    _check_forward_and_backward(PositionAttention(shape[1], reduction=reduction), shape, reference.position_attention)


@pytest.mark.parametrize("shape", SHAPES)
def test_channel_attention_matches_seed_formula(shape):
    # Small weights and inputs: the C x C energies are sums over N positions.
    _check_forward_and_backward(ChannelAttention(), shape, lambda x, block: reference.channel_attention(x, block.beta))


def test_dual_attention_starts_as_identity():
    x = torch.randn(2, 16, 5, 6)
    assert torch.equal(PositionAttention(16)(x), x)
    assert torch.equal(ChannelAttention()(x), x)


def test_position_attention_map_matches_reference_rows():
    block = randomize(PositionAttention(8, reduction=2)).double()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    _, full = reference.position_attention(x, block, return_map=True)
    maps = block.attention_map(x, QUERIES)
    assert maps.shape == (2, 3, 5, 7)
    torch.testing.assert_close(maps.flatten(2), _expected_map(full, QUERIES, 7))
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 3, dtype=torch.float64))


def test_channel_affinity_is_the_seed_map_and_softmax_of_minus_energy():
    block = ChannelAttention().double()
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64) * 0.3
    _, want = reference.channel_attention(x, block.beta, return_map=True)
    affinity = block.channel_affinity(x)
    torch.testing.assert_close(affinity, want)
    energy = x.flatten(2) @ x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(affinity, torch.softmax(-energy, dim=-1))
    torch.testing.assert_close(affinity.sum(-1), torch.ones(2, 6, dtype=torch.float64))


# --- GCNet -----------------------------------------------------------------------------------

FUSIONS = [("add",), ("mul",), ("add", "mul")]


@pytest.mark.parametrize("shape", [(2, 32, 5, 7), (3, 16, 6, 4)])
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("pooling", ["att", "avg"])
def test_global_context_matches_seed_formula(pooling, fusion, shape):
    block = GlobalContextBlock(shape[1], ratio=1 / 8, pooling=pooling, fusion=fusion)
    assert block.planes == shape[1] // 8
    _check_forward_and_backward(block, shape, reference.global_context)


@pytest.mark.parametrize("pooling", ["att", "avg"])
def test_global_context_fresh_block(pooling):
    x = torch.randn(2, 32, 5, 6)
    assert torch.equal(GlobalContextBlock(32, pooling=pooling)(x), x)
    # The zero-initialised last conv gives sigmoid(0) = 1/2 with mul fusion, as in the authors' code.
    torch.testing.assert_close(GlobalContextBlock(32, pooling=pooling, fusion=("mul",))(x), x / 2)


def test_global_context_add_fusion_adds_one_vector_everywhere():
    block = randomize(GlobalContextBlock(32, pooling="att", fusion=("add",)))
    x = torch.randn(2, 32, 5, 6)
    added = block(x) - x
    torch.testing.assert_close(added, added[:, :, :1, :1].expand_as(added))
    assert added.abs().amax() > 0


@pytest.mark.parametrize("pooling", ["att", "avg"])
def test_global_context_attention_map_is_the_pooling_weights(pooling):
    block = randomize(GlobalContextBlock(16, pooling=pooling)).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    _, weights = reference.global_context(x, block, return_map=True)
    maps = block.attention_map(x, QUERIES)
    assert maps.shape == (2, 1, 5, 7)
    torch.testing.assert_close(maps.flatten(1), weights.flatten(1))
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("fusion", [(), ("add", "add"), ("sum",)])
def test_global_context_rejects_bad_fusion(fusion):
    with pytest.raises(ValueError, match="fusion"):
        GlobalContextBlock(16, fusion=fusion)


def test_global_context_planes_never_zero():
    assert GlobalContextBlock(8).planes == 1


# --- EMANet: expectation-maximization attention ------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_stages", [1, 3])
def test_ema_matches_the_plain_em(num_stages, shape):
    block = ExpectationMaximizationAttention(shape[1], num_bases=4, num_stages=num_stages)
    _check_forward_and_backward(block, shape, lambda x, b: reference.expectation_maximization_attention(x, b)["out"])


def test_ema_moves_its_bases_after_the_output_in_training_only():
    block = randomize(ExpectationMaximizationAttention(8, num_bases=5, momentum=0.3)).double()
    x = torch.randn(3, 8, 6, 5, dtype=torch.float64)
    before = block.bases.clone()
    want = reference.expectation_maximization_attention(x, block)
    with torch.no_grad():
        block.eval()
        evaluated = block(x)
        assert torch.equal(block.bases, before), "evaluation never updates the bases"
        block.train()
        trained = block(x)
    # Training-mode BatchNorm differs from eval-mode: compare each with the same-mode reference.
    torch.testing.assert_close(trained, want["out"])  # computed with the bases from before the update
    torch.testing.assert_close(block.bases, want["bases"])
    assert not torch.allclose(block.bases, before)
    block.eval()
    with torch.no_grad():
        assert not torch.equal(block(x), evaluated)  # the new bases do change later outputs


def test_ema_gives_no_gradient_through_the_em_and_freezes_its_input_projection():
    block = randomize(ExpectationMaximizationAttention(8, num_bases=4))
    assert not any(p.requires_grad for p in block.project.parameters())
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    bases_before = block.bases.clone()  # the training forward updates them after its output
    block(x).sum().backward()
    assert block.project.weight.grad is None and block.out[0].weight.grad is not None
    # The input's gradient is the residual path's alone: the same as with the reconstruction fixed.
    x2 = x.detach().clone().requires_grad_(True)
    with torch.no_grad():
        feats = block.project(x2).flatten(2)
        bases, z = expectation_maximization(feats, bases_before.expand(2, -1, -1), block.num_stages)
        recon = torch.bmm(bases, z.transpose(1, 2)).unflatten(2, (5, 6))
    torch.nn.functional.relu(x2 + block.out(torch.relu(recon))).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_ema_attention_map_is_the_reconstructions_weights():
    block = randomize(ExpectationMaximizationAttention(8, num_bases=4)).double().eval()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    want = reference.expectation_maximization_attention(x, block)
    # The reference's map reproduces the reconstruction exactly: recon = feats A^T.
    torch.testing.assert_close(want["recon"], want["feats"] @ want["map"].transpose(1, 2))
    maps = block.attention_map(x, QUERIES)
    assert maps.shape == (2, 3, 5, 7) and (maps >= 0).all()
    torch.testing.assert_close(maps.flatten(2), _expected_map(want["map"], QUERIES, 7))


def _ema_update_worker(rank: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    block = ExpectationMaximizationAttention(8, num_bases=4).double()
    block.load_state_dict(torch.load(f"{folder}/state.pt"))
    block.train()(torch.load(f"{folder}/input{rank}.pt"))
    torch.save(block.bases, f"{folder}/bases{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ema_bases_update_is_the_mean_over_the_ddp_processes(tmp_path):
    """Two gloo processes, each with its own batch: both end with the bases of one process that saw
    both batches (mmseg's reduce_mean), not with their own batch's."""
    torch.manual_seed(3)
    block = randomize(ExpectationMaximizationAttention(8, num_bases=4)).double()
    inputs = [torch.randn(2, 8, 5, 6, dtype=torch.float64), 3 * torch.randn(2, 8, 5, 6, dtype=torch.float64)]
    torch.save(block.state_dict(), tmp_path / "state.pt")
    for rank, x in enumerate(inputs):
        torch.save(x, tmp_path / f"input{rank}.pt")
    torch.multiprocessing.spawn(_ema_update_worker, args=(str(tmp_path),), nprocs=2)
    want = reference.expectation_maximization_attention(torch.cat(inputs), block)["bases"]
    alone = reference.expectation_maximization_attention(inputs[0], block)["bases"]
    for rank in range(2):
        got = torch.load(tmp_path / f"bases{rank}.pt")
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, alone)


# --- ANN: attention over pyramid-pooled keys -----------------------------------------------------


@pytest.mark.parametrize("size", [(7, 5), (13, 17), (3, 2)])
def test_pyramid_pool_averages_the_adaptive_bins(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(pyramid_pool(x, (1, 3, 6, 8)), reference.pyramid_pool(x, (1, 3, 6, 8)))


@pytest.mark.parametrize(("key_size", "shared"), [((5, 7), True), ((11, 9), False), ((3, 4), False)])
def test_pyramid_key_attention_matches_the_plain_reference(key_size, shared):
    key_in = 6 if shared else 4
    block = randomize(PyramidKeyAttention(key_in, 6, 5, key_channels=3, pool_scales=(1, 2, 3),
                                          share_key_query=shared), 0.5).double()
    query_feats = torch.randn(3, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    key_feats = query_feats if shared else torch.randn(3, key_in, *key_size, dtype=torch.float64, requires_grad=True)
    leaves = [query_feats] if shared else [query_feats, key_feats]
    want = reference.pyramid_key_attention(query_feats, key_feats, block)
    got = block(query_feats, key_feats)
    assert got.shape == (3, 5, 5, 7)
    torch.testing.assert_close(got, want["out"])
    grad = torch.randn_like(got)
    params = list(block.parameters())
    for g, w in zip(torch.autograd.grad(got, [*leaves, *params], grad),
                    torch.autograd.grad(want["out"], [*leaves, *params], grad), strict=True):
        torch.testing.assert_close(g, w)
    with torch.no_grad():
        maps = block.attention_map(query_feats, key_feats, QUERIES)
    assert maps.shape == (3, 3, *key_size)
    torch.testing.assert_close(maps.flatten(2), _expected_map(want["map"], QUERIES, 7).flatten(2))
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(3, 3, dtype=torch.float64))


def test_pyramid_key_attention_map_gives_the_querys_context():
    """sum_p map_p v_p over the key map's positions is the query's context before ``out``."""
    block = randomize(PyramidKeyAttention(4, 6, 5, key_channels=3), 0.5).double().eval()
    torch.nn.init.eye_(block.out.weight.view(5, 3)[:3])
    block.out.weight.data[3:] = 0
    block.out.bias.data.zero_()
    query_feats, key_feats = torch.randn(2, 6, 5, 7, dtype=torch.float64), torch.randn(2, 4, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        maps = block.attention_map(query_feats, key_feats, QUERIES)
        context = torch.einsum("bqhw,bchw->bcq", maps, block.value(key_feats))
        got = block(query_feats, key_feats)[:, :3, QUERIES[:, 0], QUERIES[:, 1]]
    torch.testing.assert_close(got, context)


@pytest.mark.parametrize("low_size", [(6, 5), (12, 10)])
def test_afnb_matches_the_plain_reference(low_size):
    fusion = randomize(AsymmetricFusion(4, 6, key_channels=3, pool_scales=(1, 3)), 0.5).double()
    low = torch.randn(2, 4, *low_size, dtype=torch.float64, requires_grad=True)
    high = torch.randn(2, 6, 6, 5, dtype=torch.float64, requires_grad=True)
    leaves = [low, high, *fusion.parameters()]
    want = reference.asymmetric_fusion(low, high, fusion)
    got = fusion(low, high)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(got)
    for g, w in zip(torch.autograd.grad(got, leaves, grad), torch.autograd.grad(want, leaves, grad), strict=True):
        torch.testing.assert_close(g, w)


def test_apnb_matches_the_plain_reference():
    pyramid = AsymmetricPyramid(6, key_channels=3, pool_scales=(1, 2, 6))
    _check_forward_and_backward(pyramid, (3, 6, 6, 5), reference.asymmetric_pyramid)


def test_asymmetric_blocks_start_without_attention_context():
    block = PyramidKeyAttention(4, 6, 5, key_channels=3)
    assert torch.equal(block(torch.randn(2, 6, 5, 7), torch.randn(2, 4, 8, 8)), torch.zeros(2, 5, 5, 7))
    with pytest.raises(ValueError, match="pool_scales"):
        PyramidKeyAttention(4, 4, 4, key_channels=2, pool_scales=(0, 2))
    with pytest.raises(ValueError, match="shared key/query"):
        PyramidKeyAttention(4, 6, 4, key_channels=2, share_key_query=True)


# --- Hamburger: NMF ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("one_step_gradient", [True, False])
def test_nmf_matches_the_multiplicative_updates(one_step_gradient, shape):
    block = NMF2d(shape[1], rank=3, steps=4, one_step_gradient=one_step_gradient).double()
    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)  # non-negative, as after the lower bread
    x_ref = x.detach().clone().requires_grad_(True)
    want = reference.nmf(x_ref, block)
    got = block(x)
    torch.testing.assert_close(got, want["out"])
    grad = torch.randn_like(got)
    (g,), (w,) = torch.autograd.grad(got, [x], grad), torch.autograd.grad(want["out"], [x_ref], grad)
    torch.testing.assert_close(g, w)
    maps = block.attention_map(x.detach(), QUERIES if shape[2] > 3 else QUERIES[:2])
    queries = QUERIES if shape[2] > 3 else QUERIES[:2]
    torch.testing.assert_close(maps.flatten(2), _expected_map(want["map"], queries, shape[3]))


def test_nmf_one_step_gradient_differs_from_the_full_one_and_both_reach_the_input():
    x = torch.rand(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    grads = {}
    for one_step in (True, False):
        torch.manual_seed(0)
        block = NMF2d(6, rank=3, steps=5, one_step_gradient=one_step).double()
        (grads[one_step],) = torch.autograd.grad(block(x).square().sum(), [x])
    assert grads[True].abs().sum() > 0 and not torch.allclose(grads[True], grads[False])


def test_nmf_reconstruction_improves_with_steps_and_stays_non_negative():
    torch.manual_seed(0)
    x = torch.rand(1, 8, 6, 6, dtype=torch.float64)
    errors = []
    for steps in (0, 2, 8):
        block = NMF2d(8, rank=4, steps=steps).double()
        with torch.no_grad():
            out = block(x)
        assert (out >= 0).all()
        errors.append(float((out - x).norm()))
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_hamburger_matches_the_plain_reference(norm):
    block = Hamburger(8, rank=3, steps=3, norm=norm)
    _check_forward_and_backward(block, (2, 8, 5, 7), reference.hamburger, std=0.3)
# --- OCR: spatial gather and object attention ------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("regions", [1, 4])
def test_spatial_gather_matches_plain_formula(regions, shape):
    logits = torch.randn(shape[0], regions, *shape[2:]) * 2
    _check_inputs_against_reference(SpatialGather(), [torch.randn(shape), logits],
                                    lambda x, lg, block: reference.spatial_gather(x, lg))


def test_spatial_gather_of_a_sharp_region_is_the_mean_over_it():
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    inside = torch.zeros(6, 7, dtype=torch.bool)
    inside[1:4, 2:6] = True
    logits = torch.where(inside, 0.0, -1e4).to(torch.float64).expand(2, 1, 6, 7)
    region = SpatialGather()(x, logits)
    assert region.shape == (2, 5, 1, 1)
    torch.testing.assert_close(region[:, :, 0, 0], x[:, :, inside].mean(dim=-1))
    with pytest.raises(ValueError, match="share batch and size"):
        SpatialGather()(x, logits[..., :5])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("regions", [3, 19])
def test_object_attention_matches_plain_formula(regions, shape):
    block = ObjectAttention(shape[1], key_channels=4)
    _check_inputs_against_reference(block, [torch.randn(shape), torch.randn(shape[0], shape[1], regions, 1)],
                                    reference.object_attention, std=0.3)


def test_object_attention_relation_is_the_reference_map():
    block = randomize(ObjectAttention(8, key_channels=4), 0.3).double()
    x, regions = torch.randn(2, 8, 5, 7, dtype=torch.float64), torch.randn(2, 8, 6, 1, dtype=torch.float64)
    _, full = reference.object_attention(x, regions, block, return_map=True)
    relation = block.relation(x, regions)
    assert relation.shape == (2, 35, 6)
    torch.testing.assert_close(relation, full)
    torch.testing.assert_close(relation.sum(-1), torch.ones(2, 35, dtype=torch.float64))


# --- ISA: interlaced sparse self-attention ------------------------------------------------------

ISA_CASES = [
    ((2, 8, 5, 7), (2, 3)),  # padded in both axes (6 x 9), 3 x 3 blocks
    ((3, 6, 6, 4), (3, 2)),  # no padding, 2 x 2 blocks, batch 3
    ((2, 8, 8, 6), (4, 3)),  # no padding, H != W
    ((2, 6, 6, 7), (8, 8)),  # one block larger than the map: long range trivial, all padding
]


@pytest.mark.parametrize(("shape", "down_factor"), ISA_CASES)
def test_interlaced_sparse_attention_matches_plain_formula(shape, down_factor):
    block = InterlacedSparseAttention(shape[1], key_channels=4, down_factor=down_factor)
    _check_forward_and_backward(block, shape, reference.interlaced_sparse_attention, std=0.3)


@pytest.mark.parametrize(("shape", "down_factor"), ISA_CASES)
def test_interlaced_sparse_attention_maps_are_rows_of_the_dense_matrices(shape, down_factor):
    block = randomize(InterlacedSparseAttention(shape[1], key_channels=4, down_factor=down_factor), 0.3).double()
    height, width = shape[2:]
    x = torch.randn(shape, dtype=torch.float64)
    _, long_map, short_map, (top, left) = reference.interlaced_sparse_attention(x, block, return_maps=True)
    queries = torch.tensor([[0, 0], [height - 1, width - 1], [height // 2, width // 3], [1, width - 2]])
    maps = block.attention_maps(x, queries)
    padded_h, padded_w = -(-height // down_factor[0]) * down_factor[0], -(-width // down_factor[1]) * down_factor[1]
    rows = (queries[:, 0] + top) * padded_w + queries[:, 1] + left

    def at_image(matrix):
        return matrix[:, rows].view(shape[0], len(queries), padded_h, padded_w)[:, :, top:top + height,
                                                                                 left:left + width]

    torch.testing.assert_close(maps["long_range"], at_image(long_map))
    torch.testing.assert_close(maps["short_range"], at_image(short_map))
    torch.testing.assert_close(maps["composed"], at_image(short_map @ long_map))
    assert (maps["composed"] > 0).all(), "two steps reach every position"
    padded = (padded_h, padded_w) != (height, width)
    sums = maps["composed"].sum(dim=(-2, -1))
    assert (sums < 1 - 1e-6).all() if padded else torch.allclose(sums, torch.ones_like(sums))


def test_interlaced_sparse_attention_rejects_bad_queries_and_block_sizes():
    block = InterlacedSparseAttention(8, key_channels=4, down_factor=(2, 3))
    for queries in BAD_QUERIES:
        with pytest.raises(ValueError, match="queries"):
            block.attention_maps(torch.randn(1, 8, 5, 7), queries)
    for bad in ((8,), (0, 8), (8, 8, 8)):
        with pytest.raises(ValueError, match="down_factor"):
            InterlacedSparseAttention(8, key_channels=4, down_factor=bad)


# --- criss-cross attention map ---------------------------------------------------------------


def test_criss_cross_attention_map_places_row_and_column_weights():
    block = randomize(CrissCrossAttention(8, reduction=2)).double()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    column, row = block.attention(x)
    maps = block.attention_map(x, QUERIES)
    assert maps.shape == (2, 3, 5, 7)
    for q, (i, j) in enumerate(QUERIES.tolist()):
        want = torch.zeros(2, 5, 7, dtype=torch.float64)
        want[:, :, j] = column[:, i, j, :]
        want[:, i, :] += row[:, i, j, :]
        torch.testing.assert_close(maps[:, q], want)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 3, dtype=torch.float64))


BAD_QUERIES = [torch.tensor([[5, 0]]), torch.tensor([[0, -1]]), torch.tensor([0, 1]), torch.tensor([[0.0, 1.0]])]


@pytest.mark.parametrize("queries", BAD_QUERIES)
def test_attention_map_rejects_bad_queries(queries):
    x = torch.randn(1, 8, 5, 7)
    for block in (NonLocal2d(8), SelfAttention2d(8, key_channels=4, value_channels=4), PositionAttention(8),
                  CrissCrossAttention(8)):
        with pytest.raises(ValueError, match="queries"):
            block.attention_map(x, queries)


# --- the memory-lean kernels -----------------------------------------------------------------


@pytest.mark.parametrize(("d", "e"), [(3, 5), (4, 4), (6, 2)])
def test_softmax_attention_matches_plain_formula_over_several_blocks(monkeypatch, d, e):
    # Blocks of 4 query rows over N = 11 rows (a ragged last block) in the chunked kernel.
    monkeypatch.setattr(functional, "CHUNK_ELEMENTS", 8)
    monkeypatch.setattr(functional, "MIN_ROWS", 4)
    q = torch.randn(2, d, 11, dtype=torch.float64, requires_grad=True)  # channel-first (B, d, N)
    k = torch.randn(2, d, 9, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, e, 9, dtype=torch.float64, requires_grad=True)
    out = functional.softmax_attention(q, k, v, 0.7)
    want = v @ torch.softmax(0.7 * q.transpose(1, 2) @ k, dim=-1).transpose(1, 2)
    torch.testing.assert_close(out, want)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [q, k, v], grad)
    wanted = torch.autograd.grad(want, [q, k, v], grad)
    for g, w in zip(got, wanted, strict=True):
        torch.testing.assert_close(g, w)


class _LargestTensor(TorchDispatchMode):
    """Records the op names and the largest tensor any op creates (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.__name__.split(".")[0])
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


LEAN = {
    "non_local_embedded_gaussian": (16, lambda: NonLocal2d(16)),
    "non_local_gaussian": (16, lambda: NonLocal2d(16, mode="gaussian")),
    "non_local_dot_product": (16, lambda: NonLocal2d(16, mode="dot_product")),
    "non_local_concatenation": (64, lambda: NonLocal2d(64, mode="concatenation")),
    "self_attention": (16, lambda: SelfAttention2d(16, key_channels=8, value_channels=8)),
    "self_attention_uneven": (16, lambda: SelfAttention2d(16, key_channels=4, value_channels=16)),
    "position_attention": (16, lambda: PositionAttention(16)),
    "expectation_maximization": (16, lambda: ExpectationMaximizationAttention(16)),
    "asymmetric_pyramid": (16, lambda: AsymmetricPyramid(16, key_channels=8)),
    "hamburger": (16, lambda: Hamburger(16)),
    # Sparse by construction: (B * 64, 64, 64) matrices for 8 x 8 blocks, B * N * 64 elements in all.
    "interlaced_sparse_attention": (16, lambda: InterlacedSparseAttention(16, key_channels=8)),
}


@pytest.fixture
def one_thread():
    # The chunked kernel runs a few hundred small ops here; on a shared 2-core machine each
    # 2-thread op can wait a scheduler slice for the busy core (10x slower). Memory is the point.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", LEAN)
def test_dense_operators_never_build_the_n_by_n_matrix(name, one_thread):
    batch, size = 2, 64
    n = size * size
    channels, make = LEAN[name]
    block = randomize(make())
    x = torch.randn(batch, channels, size, size, requires_grad=True)
    with _LargestTensor() as mode:
        block(x).square().mean().backward()
    # The (B, N, N) matrix would be batch * n * n = 33.5 M elements; linear memory stays far below.
    assert mode.largest <= batch * n * n // 16, (name, mode.largest)
    if name in ("non_local_embedded_gaussian", "self_attention"):
        assert "_scaled_dot_product_flash_attention_for_cpu" in mode.ops, mode.ops
        assert "_scaled_dot_product_flash_attention_for_cpu_backward" in mode.ops, mode.ops


@pytest.mark.parametrize(
    "make",
    [
        lambda: NonLocal2d(8, mode="embedded_gaussian", sub_sample=True),
        lambda: NonLocal2d(8, mode="concatenation"),
        lambda: NonLocal2d(8, mode="gaussian"),
        lambda: SelfAttention2d(8, key_channels=4, value_channels=6, scale=2),
        lambda: PositionAttention(8, reduction=2),
        lambda: ChannelAttention(),
        lambda: GlobalContextBlock(16, fusion=("add", "mul")),
        lambda: ExpectationMaximizationAttention(8, num_bases=4),
        lambda: AsymmetricPyramid(8, key_channels=4),
        lambda: Hamburger(8, rank=4),
        lambda: InterlacedSparseAttention(8, key_channels=4, down_factor=(4, 3)),
    ],
)
def test_operators_run_in_bfloat16(make):
    block = randomize(make(), 0.1).to(torch.bfloat16)
    channels = 16 if isinstance(block, GlobalContextBlock) else 8
    out = block(torch.randn(2, channels, 6, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert out.shape[0] == 2 and out.shape[-2:] == (6, 5)
