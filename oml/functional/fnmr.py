"""FNMR@FMR over all query-gallery pairs in bounded memory: the distance matrix is never built.

``calc_fnmr_at_fmr_by_embeddings`` equals ``calc_fnmr_at_fmr(pos, neg, fmr_vals)`` (numpy's linear quantile of
the negative distances as the threshold, ``pos >= threshold`` counted as non-matches) on the exact (correctly
rounded float32) distances of all positive and negative pairs, excluded pairs (equal ids) left out. It makes
three passes over the GEMM distance tiles of ``oml.functional.knn.QueryGalleryDistances``:

1. ``_count_pass``: count the positive and negative pairs and histogram the upper 16 bits of the negatives'
   GEMM squared distances (non-negative float32 bits sort like the values);
2. ``_low_bits_pass``: histogram the lower 16 bits inside the bins that hold the needed ranks: the order
   statistics of the GEMM values are then known exactly;
3. ``_exact_pass``: the exact order statistic lies within the GEMM error bound ``delta`` of the GEMM one, so
   the pairs whose GEMM value is within ``2 delta`` of it are recomputed exactly and the pairs below it are
   counted; the positives near each threshold are recomputed the same way.

**Accuracy.** The result is exact whenever the pairs recomputed in pass 3 fit into ``buffer_size`` (always the
case unless tens of millions of pairs lie within ``2 delta`` of a threshold). Otherwise the value computed
from the GEMM distances is returned with a warning; then the squared threshold is within ``delta`` of the
exact one and the FNMR lies between the exact FNMR at the squared thresholds ``t^2 + 2 delta`` and
``t^2 - 2 delta``, where ``delta = max_q gamma_{D+2} (|q| + max |g|)^2`` (``~1e-4`` for unit vectors, D=384).
"""

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from oml.ddp.sharding import Shard
from oml.functional.knn import MAX_TILE_WIDTH, QueryGalleryDistances
from oml.utils.checks import check_in_range
from oml.utils.labels import encode_labels

FNMR_BUFFER_SIZE = 2**22  # exact squared distances held at once (32 MB)
FNMR_TILE_ELEMENTS = 2**22  # smaller tiles than the kNN's: each pass makes several integer copies of a tile
_N_TOP = 1 << 15  # bins of the upper 16 bits of a non-negative float32
_RELATIVE_MARGIN = 2.0**-20

#: ``(query rows, first gallery, squared distances, positive mask, negative mask)`` of one tile
TTile = Tuple[Tensor, int, Tensor, Tensor, Tensor]


def numpy_linear_quantile(values_at: Any, n: int, fmr: float) -> float:
    """``np.quantile(x, fmr)`` ("linear") of ``n`` sorted values, reading only the 1-2 needed order statistics.

    ``values_at(rank)`` returns the float32 order statistic of ``rank``. The interpolation itself is done by
    numpy on the two neighbours, which reproduces ``np.quantile`` on the full array bit for bit.

    >>> numpy_linear_quantile(lambda r: np.float32([1, 2, 4][r]), 3, 0.75)
    3.0
    """
    virtual = (n - 1) * np.asarray([fmr], dtype=np.float64)
    if virtual[0] >= n - 1:
        last = values_at(n - 1)
        return float(np.quantile(np.array([last, last], dtype=np.float32), [0.0])[0])
    previous = int(np.floor(virtual[0]))
    gamma = float(virtual[0] - previous)
    pair = np.array([values_at(previous), values_at(previous + 1)], dtype=np.float32)
    return float(np.quantile(pair, [gamma])[0])


def needed_ranks(n: int, fmr: float) -> List[int]:
    """Ranks (0-based) of the order statistics that ``np.quantile(x, fmr)`` reads from ``n`` values."""
    virtual = (n - 1) * float(np.float64(fmr))
    if virtual >= n - 1:
        return [n - 1]
    previous = int(math.floor(virtual))
    return [previous, previous + 1]


def _f32_down(x: float) -> float:
    return float(np.nextafter(np.float32(x), np.float32(-np.inf))) if np.float32(x) > x else float(np.float32(x))


def _f32_up(x: float) -> float:
    return float(np.nextafter(np.float32(x), np.float32(np.inf))) if np.float32(x) < x else float(np.float32(x))


class _BoundedBuffer:
    """Collects float64 values until ``capacity``; then it only remembers that it overflowed."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.parts, self.overflow = capacity, 0, [], False

    def add(self, values: Tensor) -> None:
        if self.overflow or not len(values):
            return
        if self.size + len(values) > self.capacity:
            self.overflow, self.parts = True, []
            return
        self.parts.append(values.cpu())
        self.size += len(values)

    def values(self) -> Tensor:
        return torch.cat(self.parts) if self.parts else torch.empty(0, dtype=torch.float64)


def _gathered_buffers(shard: Shard, buffers: List[_BoundedBuffer]) -> List[_BoundedBuffer]:
    """The buffers of all ranks merged position by position (one collective call). A merged buffer overflows when
    the ranks' values together exceed its capacity, as one process's buffer would."""
    per_rank = shard.gather([None if b.overflow else b.values() for b in buffers])
    merged = []
    for i, buffer in enumerate(buffers):
        out = _BoundedBuffer(buffer.capacity)
        for rank_values in per_rank:
            if rank_values[i] is None:
                out.overflow, out.parts = True, []
            else:
                out.add(rank_values[i])
        merged.append(out)
    return merged


@dataclass
class _Counts:
    """What pass 1 learns: pair counts and the histogram of the negatives' upper bits."""

    n_pos: int = 0
    n_neg: int = 0
    hist_top: Tensor = field(default_factory=lambda: torch.zeros(_N_TOP + 1, dtype=torch.long))


class _FnmrEngine:
    """The state shared by the three passes (tiles, labels, error bound).

    With a ``shard``, this process scans only its share of the queries; the counts and histograms of the
    passes are summed over the ranks and the exact values near the thresholds gathered, so every rank ends
    with the numbers one process would have (integer counts and the same exact values: bit-identical).
    """

    def __init__(
        self,
        dists: QueryGalleryDistances,
        query_labels: Tensor,
        gallery_labels: Tensor,
        tile: Optional[int],
        shard: Shard,
    ):
        self.dists, self.shard = dists, shard
        self.query_labels, self.gallery_labels = query_labels.to(dists.device), gallery_labels.to(dists.device)
        self.width = tile or max(1, min(dists.n_galleries, MAX_TILE_WIDTH))
        self.height = tile or max(1, FNMR_TILE_ELEMENTS // self.width)
        self.rows = torch.arange(*shard.bounds(dists.n_queries), device=dists.device)
        # the bound of all queries, not of the shard: every rank must use the same bands
        self.delta = float(dists.error_bound.max()) if dists.n_queries else 0.0

    def tiles(self) -> Iterator[TTile]:
        for _, rows, c0, tile in self.dists.tiles(self.rows, self.height, self.width):
            same = self.query_labels[rows][:, None] == self.gallery_labels[c0 : c0 + tile.shape[1]][None, :]
            valid = torch.isfinite(tile)
            yield rows, c0, tile.clamp_(min=0), same & valid, ~same & valid

    # ------------------------------------------------------------------------------------------- pass 1
    def count_pass(self) -> _Counts:
        counts = _Counts()
        for _, _, tile, pos, neg in self.tiles():
            counts.n_pos += int(torch.count_nonzero(pos))
            counts.n_neg += int(torch.count_nonzero(neg))
            top = torch.where(neg, tile.view(torch.int32) >> 16, _N_TOP)
            counts.hist_top += torch.bincount(top.flatten(), minlength=_N_TOP + 1).cpu()
        counts.n_pos, counts.n_neg = self.shard.sum(torch.tensor([counts.n_pos, counts.n_neg])).tolist()
        counts.hist_top = self.shard.sum(counts.hist_top)
        return counts

    # ------------------------------------------------------------------------------------------- pass 2
    def low_bits_pass(self, counts: _Counts, ranks: List[int]) -> Dict[int, float]:
        """The exact GEMM squared distance of every rank among the negatives."""
        cumulative = counts.hist_top[:-1].cumsum(0)
        top_bin = {r: int(torch.searchsorted(cumulative, r, right=True)) for r in ranks}
        slots = sorted(set(top_bin.values()))
        lut = torch.full((_N_TOP + 1,), -1, dtype=torch.int32, device=self.dists.device)
        lut[torch.tensor(slots, dtype=torch.long)] = torch.arange(len(slots), dtype=torch.int32, device=lut.device)
        hist_low = torch.zeros(len(slots) << 16, dtype=torch.long)
        for _, _, tile, _, neg in self.tiles():
            bits = tile.view(torch.int32)
            slot = lut[torch.where(neg, bits >> 16, _N_TOP)]  # int32 throughout: no int64 copies of the tile
            selected = slot >= 0
            keys = (slot[selected] << 16) | (bits[selected] & 0xFFFF)
            hist_low += torch.bincount(keys, minlength=len(slots) << 16).cpu()
        hist_low = self.shard.sum(hist_low)
        approx = {}
        for r in ranks:
            b = top_bin[r]
            below = int(cumulative[b - 1]) if b > 0 else 0
            block = hist_low[slots.index(b) << 16 :][: 1 << 16].cumsum(0)
            low = int(torch.searchsorted(block, r - below, right=True))
            approx[r] = float(torch.tensor([(b << 16) | low], dtype=torch.int32).view(torch.float32))
        return approx

    # ------------------------------------------------------------------------------------------- pass 3
    def exact_pass(
        self, counts: _Counts, approx: Dict[int, float], fmr_vals: Tuple[float, ...], buffer_size: int
    ) -> List[float]:
        """FNMR per FMR from the exact order statistics and the exact positives near each threshold."""
        delta, n_neg = self.delta, counts.n_neg
        ranks = sorted(approx)
        approx_thresholds = [
            numpy_linear_quantile(lambda r: np.float32(math.sqrt(approx[r])), n_neg, f) for f in fmr_vals
        ]
        capacity = max(1, buffer_size // (len(ranks) + len(fmr_vals)))
        neg_below = dict.fromkeys(ranks, 0)
        neg_band = {r: _BoundedBuffer(capacity) for r in ranks}
        neg_bounds = {r: (_f32_down(approx[r] - 2 * delta), _f32_up(approx[r] + 2 * delta)) for r in ranks}
        pos_above, pos_approx = [0] * len(fmr_vals), [0] * len(fmr_vals)
        pos_band = [_BoundedBuffer(capacity) for _ in fmr_vals]
        pos_bounds = []
        for f in fmr_vals:
            r_lo, r_hi = needed_ranks(n_neg, f)[0], needed_ranks(n_neg, f)[-1]
            lo = (approx[r_lo] - delta) * (1 - _RELATIVE_MARGIN) - delta
            hi = (approx[r_hi] + delta) * (1 + _RELATIVE_MARGIN) + delta
            pos_bounds.append((_f32_down(lo), _f32_up(hi)))

        for rows, c0, tile, pos, neg in self.tiles():
            for r in ranks:
                lo, hi = neg_bounds[r]
                neg_below[r] += _count(neg, tile < lo)
                band_r, band_c = _band(tile, neg, lo, hi)
                neg_band[r].add(self.dists.exact_sq_distances(rows[band_r], band_c + c0))
            for i, (lo, hi) in enumerate(pos_bounds):
                pos_approx[i] += _count(pos, tile >= _f32_up(approx_thresholds[i] ** 2))
                pos_above[i] += _count(pos, tile > hi)
                band_r, band_c = _band(tile, pos, lo, hi)
                pos_band[i].add(self.dists.exact_sq_distances(rows[band_r], band_c + c0))
        summed = self.shard.sum(torch.tensor([*(neg_below[r] for r in ranks), *pos_above, *pos_approx])).tolist()
        neg_below = dict(zip(ranks, summed[: len(ranks)]))
        pos_above, pos_approx = summed[len(ranks) :][: len(fmr_vals)], summed[len(ranks) + len(fmr_vals) :]
        bands = _gathered_buffers(self.shard, [*(neg_band[r] for r in ranks), *pos_band])
        neg_band, pos_band = dict(zip(ranks, bands[: len(ranks)])), bands[len(ranks) :]

        exact_stats = {r: _resolve_rank(r, approx[r], delta, neg_below[r], neg_band[r]) for r in ranks}
        fnmr = []
        for i, f in enumerate(fmr_vals):
            needed = needed_ranks(n_neg, f)
            if all(exact_stats[r] is not None for r in needed) and not pos_band[i].overflow:
                threshold = numpy_linear_quantile(lambda r: exact_stats[r], n_neg, f)
                near = pos_band[i].values().sqrt().float().double()
                n_ge = pos_above[i] + int((near >= threshold).sum())
            else:
                warnings.warn(
                    f"FNMR@FMR={f}: too many pairs lie within the GEMM error bound ({delta:.2e} in squared distance) "
                    f"of the threshold to resolve them exactly with buffer_size={buffer_size}; returning the value "
                    f"computed from the GEMM distances (see the accuracy note of oml.functional.fnmr).",
                    stacklevel=3,
                )
                n_ge = pos_approx[i]
            fnmr.append(n_ge / counts.n_pos)
        return fnmr


def _count(mask: Tensor, condition: Tensor) -> int:
    return int(torch.count_nonzero(condition.logical_and_(mask)))


def _band(tile: Tensor, mask: Tensor, lo: float, hi: float) -> Tuple[Tensor, Tensor]:
    """Positions of the ``mask`` elements of ``tile`` within ``[lo, hi]``."""
    return (tile >= lo).logical_and_(tile <= hi).logical_and_(mask).nonzero(as_tuple=True)


def _resolve_rank(rank: int, approx: float, delta: float, n_below: int, band: _BoundedBuffer) -> Optional[np.float32]:
    """The exact float32 distance of ``rank`` from the exact squared distances near the GEMM value, or None."""
    if band.overflow:
        return None
    values = torch.sort(band.values()).values
    lo, hi = approx - delta, approx + delta
    n_below += int((values < lo).sum())
    middle = values[(values >= lo) & (values <= hi)]
    position = rank - n_below
    if not 0 <= position < len(middle):  # cannot happen if the error bound holds; fall back to the GEMM value
        return None
    return np.float32(torch.tensor(float(middle[position]), dtype=torch.float64).sqrt().float().item())


def _rescaled_by_a_power_of_two(queries: Tensor, galleries: Tensor) -> Tuple[Tensor, Tensor]:
    """Embeddings far from unit scale multiplied by a power of two that brings them near it.

    Multiplying by ``2^e`` is exact in floating point, so every distance, every order statistic and every
    comparison with a threshold scales exactly and the FNMR is unchanged; without it, float32 squared norms
    of embeddings around ``1e20`` overflow to ``inf`` and no pair could be scored.
    """
    largest = max(float(x.detach().abs().amax()) if x.numel() else 0.0 for x in (queries, galleries))
    if largest == 0.0 or 2.0**-40 <= largest <= 2.0**40:
        return queries, galleries
    factor = 2.0 ** -math.floor(math.log2(largest))
    scaled_queries = queries * factor
    return scaled_queries, scaled_queries if galleries is queries else galleries * factor


def calc_fnmr_at_fmr_by_embeddings(
    queries: Tensor,
    galleries: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    fmr_vals: Tuple[float, ...] = (0.1,),
    query_ids: Optional[Tensor] = None,
    gallery_ids: Optional[Tensor] = None,
    buffer_size: int = FNMR_BUFFER_SIZE,
    tile_size: Optional[int] = None,
    shard: Optional[Shard] = None,
) -> Tensor:
    """FNMR@FMR over all query-gallery pairs without materialising the distances (see the module docstring).

    Args:
        queries: ``[Q, D]`` embeddings.
        galleries: ``[G, D]`` embeddings.
        query_labels: ``[Q]`` labels.
        gallery_labels: ``[G]`` labels.
        fmr_vals: false match rates in ``[0, 1]``.
        query_ids: optional ``[Q]`` exclusion keys (pairs with equal keys are left out: the same sample, or the
            same sequence with ``oml.functional.knn.exclusion_keys``).
        gallery_ids: optional ``[G]`` exclusion keys.
        buffer_size: the most exact values held at once.
        tile_size: square distance tiles of this size (default: the kNN tiling).
        shard: in a process group, every process passes ``Shard.current()`` (``oml.ddp.sharding``) and the same
            inputs: each scans its share of the queries, and all get the one-process result (bit-identical).

    Returns:
        ``[len(fmr_vals)]`` FNMR values.

    >>> queries = torch.tensor([[0.0], [1.0], [5.0]])
    >>> labels = torch.tensor([0, 0, 1])
    >>> ids = torch.arange(3)
    >>> calc_fnmr_at_fmr_by_embeddings(queries, queries, labels, labels, (0.5,), ids, ids)
    tensor([0.])
    """
    check_in_range(fmr_vals, 0, 1, "fmr_vals")
    queries, galleries = _rescaled_by_a_power_of_two(queries, galleries)
    dists = QueryGalleryDistances(queries, galleries, query_ids, gallery_ids)
    _, (q_codes, g_codes) = encode_labels(query_labels, gallery_labels)
    if q_codes.shape != (dists.n_queries,) or g_codes.shape != (dists.n_galleries,):
        raise ValueError(
            f"Expected {dists.n_queries} query labels and {dists.n_galleries} gallery labels, "
            f"got {len(q_codes)} and {len(g_codes)}."
        )
    engine = _FnmrEngine(dists, q_codes, g_codes, tile_size, shard or Shard())
    counts = engine.count_pass()
    if counts.n_pos == 0 or counts.n_neg == 0:
        raise ValueError(f"FNMR@FMR needs positive and negative pairs, got {counts.n_pos} and {counts.n_neg}.")
    ranks = sorted({r for f in fmr_vals for r in needed_ranks(counts.n_neg, f)})
    approx = engine.low_bits_pass(counts, ranks)
    return torch.tensor(engine.exact_pass(counts, approx, tuple(fmr_vals), buffer_size), dtype=torch.float32)


__all__ = ["FNMR_BUFFER_SIZE", "calc_fnmr_at_fmr_by_embeddings", "needed_ranks", "numpy_linear_quantile"]
