"""Using a trained model: the evaluation modes (whole, slide, multi-scale + flip), ``lit_seg.load``,
the prediction writer, export, attention maps and their query dependence."""

from lit_seg.inference.segmenter import Segmenter, load
from lit_seg.models.eval_modes import multiscale_flip_inference, segment, slide_inference, whole_inference

__all__ = ["Segmenter", "load", "multiscale_flip_inference", "segment", "slide_inference", "whole_inference"]
