"""How much a head's attention depends on the query: the mean cosine distance between the attention
maps of different query positions (GCNet, Cao et al. 2019, found the non-local maps of different
queries nearly identical).

    value = query_dependence(module.model, [image0, image1])   # float, or None for FCN / PSP / ASPP

It sits beside :mod:`lit_seg.inference.visualize`, not in :mod:`lit_seg.study`: like the maps it draws, it
is a measurement on a model through :meth:`DecodeHead.attention_maps`, and ``RunSummary``
(:mod:`lit_seg.api.callbacks`) takes it at the end of every fit; :mod:`lit_seg.study` holds the
research commands that read the results, which the core does not import.
"""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seg.inference.visualize import EvalMode, check_image
from lit_seg.models.encoder_decoder import EncoderDecoder

# The one map of each head that is measured, by the names the heads give their maps (first found).
# DNL's ("pairwise" + "unary") and Pyramid-OC's ("pyramid_<s>") are picked in query_map.
SINGLE_MAPS = ("nonlocal", "oc", "pam", "composed", "gc", "ema", "apnb", "ham", "ocr")


def query_map(maps: Mapping[str, Tensor]) -> Tensor | None:
    """The map :func:`query_dependence` measures among a head's named maps (B, Q, h', w').

    - non-local: ``nonlocal``; OCNet base-OC and ASP-OC: ``oc``; DANet: ``pam`` (the channel
      attention has no query positions; a CAM-only head has no map); GCNet: ``gc``.
    - CCNet: ``composed``, the rollout over the R steps (for R=1 it is ``step1``); ISA:
      ``composed``, the rollout over its long- and short-range steps.
    - OCR: ``ocr``, each query's pixel-region weights composed back to image positions through
      the soft object regions (its keys are the K regions, not positions).
    - EMANet: ``ema``, the weights of the query's EM reconstruction over the positions; Hamburger:
      ``ham``, the query's NMF coefficients through the bases.
    - ANN: ``apnb``, the self-attention over the head's own features (as the other heads' maps);
      ``afnb``, the high-level queries over the low-level map, is not measured.
    - DNL: ``pairwise + unary``: the block adds ``W(pairwise context) + W(unary context)`` with
      one ``W``, so that sum is the weight each position gets in the query's context.
    - Pyramid-OC: the coarsest grid's map, ``pyramid_<min(sizes)>`` (``pyramid_1`` by default:
      one region, the whole image); finer grids confine each query to its own region.

    None when ``maps`` is empty (a head without attention); ValueError for maps it has no rule for.
    """
    if "pairwise" in maps:
        return maps["pairwise"] + maps["unary"]
    for name in SINGLE_MAPS:
        if name in maps:
            return maps[name]
    pyramid = sorted((int(name.removeprefix("pyramid_")), name) for name in maps if name.startswith("pyramid_"))
    if pyramid:
        return maps[pyramid[0][1]]
    if maps:
        raise ValueError(f"query_dependence: no rule for which of the maps {sorted(maps)} to measure")
    return None


def query_grid(size: tuple[int, int], max_queries: int = 256) -> Tensor:
    """(Q, 2) long (row, col): every cell of an (h, w) map, or every s-th row and column with the
    smallest stride s that gives at most ``max_queries`` cells, the grid centred in the map."""
    height, width = size
    stride = 1
    while -(-height // stride) * -(-width // stride) > max_queries:
        stride += 1

    def axis(length: int) -> Tensor:
        count = -(-length // stride)
        return torch.arange(count) * stride + (length - 1 - (count - 1) * stride) // 2

    rows, cols = torch.meshgrid(axis(height), axis(width), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=1)


def mean_cosine_distance(maps: Tensor) -> float:
    """Mean of ``1 - cos(m_i, m_j)`` over the pairs i != j of the rows of ``maps`` (Q, N), in float64.

    Equal rows are at distance exactly 0 (computed, ``1 - cos`` of two equal maps rounds to about
    1e-16): a query-independent map (GCNet's) gives 0, not rounding noise. A row of zeros is at
    distance 1 from every other row.
    """
    count = maps.shape[0]
    if count < 2:
        raise ValueError(f"query_dependence needs at least 2 query positions, got {count}")
    unique, counts = torch.unique(maps.double(), dim=0, return_counts=True)
    unit = F.normalize(unique, dim=1)
    distance = (1 - unit @ unit.T).clamp_min(0).fill_diagonal_(0)
    counts = counts.double()
    return float(counts @ distance @ counts) / (count * (count - 1))


def query_dependence(model: EncoderDecoder, images: Sequence[Tensor] | Tensor, max_queries: int = 256) -> float | None:
    """Mean over ``images`` of the mean pairwise cosine distance between the attention maps of
    different query positions, or None for a head without attention maps (FCN, PSP, ASPP, DANet's
    CAM alone).

    ``images``: normalised images (3, H, W) (or a (B, 3, H, W) batch) on the model's device, each
    run through the encoder on its own (sizes may differ). The queries are the cells of the head's
    input resolution (``head.query_size``), subsampled to at most ``max_queries``
    (:func:`query_grid`, deterministic); each query's map is :func:`query_map`'s choice among
    ``head.attention_maps``, flattened over its keys. 0 means every query attends alike (GCNet's
    one pooling map: exactly 0), 1 that the maps of different queries share no position; at most
    1 for non-negative maps (every head's but non-local's ``dot_product`` weights, which can be
    negative: up to 2).

    CCNet with R=1: the ``composed`` map is the criss-cross map, zero off the query's row and
    column, so the maps of two queries that share neither overlap in two cells only (each one's
    row crossing the other's column): the value is high by construction, whatever the head
    learnt, and not comparable with the other heads'. From R=2 on every map covers the whole image.
    ASP-OC's maps (keys max-pooled by ``scale``) and non-local's with ``sub_sample`` are over keys
    coarser than the queries; the distance is taken over the keys all the same.

    Eval mode and ``no_grad`` inside (the model's mode is restored afterwards).
    """
    if len(images) == 0:
        raise ValueError("query_dependence needs at least one image")
    head = model.head
    distances = []
    with EvalMode(model):
        for image in images:
            check_image(image)
            x = head.select_inputs(model.encoder(image[None]))
            queries = query_grid(head.query_size(x), max_queries).to(image.device)
            maps = query_map(head.attention_maps(x, queries))
            if maps is None:
                return None
            distances.append(mean_cosine_distance(maps[0].flatten(1)))
    return sum(distances) / len(distances)
