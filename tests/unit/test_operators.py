"""The context operators against plain references written from the seeds' formulas."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lit_seg.models.attention import (
    ChannelAttention,
    CrissCrossAttention,
    GlobalContextBlock,
    InterlacedSparseAttention,
    NonLocal2d,
    ObjectAttention,
    PositionAttention,
    SelfAttention2d,
    SpatialGather,
    functional,
)
from lit_seg.models.attention.non_local import _relu_pair_sum
from tests import reference
from tests.conftest import randomize

SHAPES = [(2, 8, 5, 7), (3, 6, 6, 4)]
MODES = ["gaussian", "embedded_gaussian", "dot_product", "concatenation"]
QUERIES = torch.tensor([[0, 0], [1, 2], [3, 3]])


def _check_forward_and_backward(block, shape, ref_fn, std=0.5):
    """Forward and the gradients of the input and every parameter match the reference (float64)."""
    block = randomize(block, std).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = block(x)
    ref = ref_fn(x_ref, block)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    params = list(block.parameters())
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
        lambda: InterlacedSparseAttention(8, key_channels=4, down_factor=(4, 3)),
    ],
)
def test_operators_run_in_bfloat16(make):
    block = randomize(make(), 0.1).to(torch.bfloat16)
    channels = 16 if isinstance(block, GlobalContextBlock) else 8
    out = block(torch.randn(2, channels, 6, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert out.shape[0] == 2 and out.shape[-2:] == (6, 5)
