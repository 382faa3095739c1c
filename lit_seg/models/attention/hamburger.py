"""The Hamburger block (Geng et al., "Is Attention Better Than Matrix Decomposition?", ICLR 2021,
arXiv:2109.04553): global context from a low-rank matrix decomposition (NMF) between two linear
"breads", as the authors' ResNet-D8 head (Enjoy-Hamburger ``seg_mm``) and mmseg's ``Hamburger`` build it."""

from torch import Tensor, nn
from torch.nn import functional as F

from lit_seg.models.attention.matrix_decomposition import NMF2d
from lit_seg.models.layers import Norm, norm_layer


class Hamburger(nn.Module):
    """``relu(x + norm(W_up NMF(relu(W_low x))))``. Input and output (B, C, H, W).

    The lower bread ``ham_in`` is a 1x1 conv C -> C with bias, then ReLU (NMF needs a
    non-negative input); the ham is :class:`~lit_seg.models.attention.matrix_decomposition.NMF2d`
    (rank R, its low-rank reconstruction is the global context); the upper bread ``ham_out`` a
    1x1 conv C -> C + ``norm`` (GroupNorm with 32 groups in the authors' ResNet-D8 config,
    BatchNorm in their first release), no activation; then the residual and ReLU. No
    zero initialisation: the method specifies none.
    """

    def __init__(self, channels: int, *, rank: int = 64, steps: int = 6, one_step_gradient: bool = True,
                 norm: Norm = "group") -> None:
        super().__init__()
        self.ham_in = nn.Conv2d(channels, channels, 1)
        self.ham = NMF2d(channels, rank=rank, steps=steps, one_step_gradient=one_step_gradient)
        # The conv bias before the norm would be cancelled by its mean subtraction: left out (as mmseg).
        self.ham_out = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), norm_layer(norm, channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.ham_out(self.ham(F.relu(self.ham_in(x)))))

    def attention_map(self, x: Tensor, queries: Tensor) -> Tensor:
        """The NMF's coefficient map of the queries (:meth:`NMF2d.attention_map`) on the lower bread's
        output: (B, Q, H, W)."""
        return self.ham.attention_map(F.relu(self.ham_in(x)), queries)
