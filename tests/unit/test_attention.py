import pytest
import torch

from lit_seg.models.attention import CrissCrossAttention
from tests import reference
from tests.conftest import randomize

SHAPES = [(2, 16, 5, 7), (3, 8, 6, 4), (1, 16, 1, 5)]


@pytest.mark.parametrize("shape", SHAPES)
def test_criss_cross_matches_seed_formula_forward_and_backward(shape):
    block = randomize(CrissCrossAttention(shape[1], reduction=4)).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)

    out = block(x)
    ref = reference.criss_cross_attention(x_ref, block.query, block.key, block.value, block.gamma)
    torch.testing.assert_close(out, ref)

    grad = torch.randn_like(out)
    params = list(block.parameters())
    got = torch.autograd.grad(out, [x, *params], grad)
    want = torch.autograd.grad(ref, [x_ref, *params], grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_criss_cross_starts_as_identity():
    block = CrissCrossAttention(16)
    x = torch.randn(2, 16, 5, 6)
    assert torch.equal(block(x), x)


def test_criss_cross_weights_are_a_distribution_over_row_and_column():
    block = randomize(CrissCrossAttention(16))
    column, row = block.attention(torch.randn(2, 16, 5, 6))
    assert column.shape == (2, 5, 6, 5) and row.shape == (2, 5, 6, 6)
    torch.testing.assert_close(column.sum(-1) + row.sum(-1), torch.ones(2, 5, 6))
    # The centre is counted once, in its row: its column weight is exactly zero.
    diagonal = column.diagonal(dim1=1, dim2=3)
    assert torch.all(diagonal == 0)


def _reach(block, recurrence, shape=(1, 8, 7, 9), query=(2, 3)):
    x = torch.randn(shape, requires_grad=True)
    y = x
    for _ in range(recurrence):
        y = block(y)
    y[0, :, query[0], query[1]].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def test_criss_cross_recurrence_one_sees_only_row_and_column():
    block = randomize(CrissCrossAttention(8, reduction=2))
    reached = _reach(block, 1)
    expected = torch.zeros(7, 9, dtype=torch.bool)
    expected[2, :] = True
    expected[:, 3] = True
    assert torch.equal(reached, expected)


def test_criss_cross_recurrence_two_sees_every_position():
    block = randomize(CrissCrossAttention(8, reduction=2))
    assert _reach(block, 2).all()


def test_criss_cross_is_device_and_dtype_agnostic():
    block = randomize(CrissCrossAttention(8, reduction=2)).to(torch.bfloat16)
    out = block(torch.randn(1, 8, 4, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 8, 4, 5)
