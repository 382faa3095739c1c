"""lit-seg: context (self-attention) decoders for semantic segmentation, compared fairly."""

__version__ = "0.1.0"


def load(path, device: str = "cpu", **eval_settings):
    """A run folder or checkpoint -> :class:`lit_seg.inference.Segmenter` (``lit_seg.load(run)(image)``).

    Imported on use: ``import lit_seg`` stays free of torch."""
    from lit_seg.inference import load as _load

    return _load(path, device, **eval_settings)
