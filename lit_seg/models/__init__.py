"""Models: encoders, context operators, decode heads and their composition."""

from lit_seg.models.encoder import build_encoder
from lit_seg.models.encoder_decoder import EncoderDecoder

__all__ = ["EncoderDecoder", "build_encoder"]
