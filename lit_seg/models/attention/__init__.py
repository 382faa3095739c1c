"""Context operators: plain ``nn.Module``s mapping (B, C, H, W) features to context features."""

from lit_seg.models.attention.criss_cross import CrissCrossAttention

__all__ = ["CrissCrossAttention"]
