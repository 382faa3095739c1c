"""lit-seg: context (self-attention) decoders for semantic segmentation, compared fairly."""

__version__ = "0.1.0"
