"""Exact k-nearest-neighbour search between queries and galleries in bounded memory.

This is the engine behind ``EmbeddingMetrics``: the query x gallery distance matrix is never built.
Squared distances are computed tile by tile with one GEMM per tile, ``|q - g|^2 = |q|^2 + |g|^2 - 2 q.g``
(on data centred at the galleries' mean; the squared norms ride inside the GEMM as two extra columns), and
only ``kk = k + extra`` candidates per query are kept. Memory is ``O(tiles + Q x kk)``, a tile per worker thread
(on the CPU the tiles are spread over up to 4 threads, see ``_scan``). When every sample is
both a query and a gallery item, only the upper triangle of tiles is computed (half of the GEMM work) and
each tile serves its rows and, read by columns, its columns.

**Exactness.** A GEMM in float32 has a cancellation error, so the candidates' distances are recomputed
exactly (differences and sums in float64, one rounding at the end: the "exact distance" is the correctly
rounded Euclidean distance, the value of a float64 ``cdist`` cast to float32). For a query ``q`` every GEMM
value obeys ``|a_j - s_j| <= delta`` (``s_j`` the true squared distance), with
``delta = (gamma_{D+2} (1 + u) + u + 4 u_data) (|q'| + max_j |g'_j|)^2`` for the centred vectors ``x'``,
``gamma_n = n u / (1 - n u)`` and ``u`` the unit round-off of the GEMM under torch's float32 matmul
precision setting: the standard bound of a dot product, valid for any summation order. Let ``t`` be the
k-th smallest GEMM value of the query. The k items with the smallest GEMM values have ``s_j <= t + delta``,
so every item whose exact distance is at most the exact k-th one has ``a_j <= t + 2 delta`` (plus a relative
margin for the final rounding, which can merge values). The search checks that the largest kept GEMM value is
above this threshold: then all those items are candidates and the exact top-k of the candidates is the exact
top-k overall. A query that fails the check (near-ties around its k-th neighbour, e.g. duplicates) is searched
again with four times more candidates, finally against the whole gallery. Hence the result equals a dense
brute-force oracle bit for bit, with ties broken by the smaller gallery index.

**Guessed bounds.** The symmetric scan visits the samples in a seeded random order, so that each tile holds a
random subset of the gallery, and a query's first tile guesses a bound of its ``kk``-th value that holds with
probability at least ``1 - GUESS_FAILURES`` whatever the data (``first_tile_rank``). Values above the guess
are dropped, so the check above also requires the guess to exceed the threshold; a query whose guess fails it
is searched again without guessing. The results do not depend on the guesses.

**Ranking without distances** (``n_exact_distances < k``). The same argument orders two items without their
exact distances: if ``a_j - a_i > slack`` (``slack = 2 delta`` plus the rounding margin) then ``i`` comes
before ``j`` in the exact order (its rounded distance is strictly smaller, so the index plays no part). Sort a
query's candidates by GEMM value and cut the list wherever two neighbours are more than ``slack`` apart: every
item before a cut precedes every item after it (the values in between only grow), items outside the candidates
included (their GEMM values are at least the largest kept one). So the exact order is the order of these
groups, and inside each group the order of the exact distances. Exact distances are needed only for the items
of groups of several items that start within the top k (and only for those at most ``t + slack``, the others
cannot be in the top k), and for the first ``n_exact_distances`` columns; a lone item's place needs none.
"""

import math
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from oml.ddp.sharding import Shard
from oml.functional.distances import EXACT_BUDGET, distance_dtype, exact_sq_distances_of_pairs
from oml.functional.ordering import float_order_keys, sort_by_value_then_index
from oml.utils.checks import check_embeddings, check_int
from oml.utils.labels import encode_labels
from oml.utils.misc_torch import sparse_nonzero
from oml.utils.threads import cpu_workers, run_in_workers, torch_threads

TILE_ELEMENTS = 2**24  # values in a distance tile (64 MB in float32)
MAX_TILE_WIDTH = 2**15  # galleries in a tile: wide tiles amortise the per-row cost of the selection
SYMMETRIC_TILE_SIZE = 4096  # square tiles of the symmetric mode
SUB_BLOCK = 32  # the minima of sub-blocks of this size pre-select the candidates inside a tile (at most)
MIN_SUB_BLOCK = 4


def sub_block_size(kk: int, tile_width: int) -> int:
    """Sub-blocks small enough that a tile row has at least 2 kk of them (so that the ``kk``-th smallest of their
    minima bounds the first tile's candidates tightly), at most ``SUB_BLOCK``: a power of two.

    >>> sub_block_size(13, 4096), sub_block_size(61, 4096), sub_block_size(500, 4096)
    (32, 32, 4)
    """
    sub = SUB_BLOCK
    while sub > MIN_SUB_BLOCK and tile_width // sub < 2 * kk:
        sub //= 2
    return sub


GUESS_FAILURES = 1e-3  # the chance, for any query, that its first-tile guess is too tight (see first_tile_rank)
SCAN_SEED = 0  # the random order of the symmetric scan (a fixed seed: the same order in every process)


def first_tile_rank(kk: int, width: int, n_galleries: int, failures: Optional[float] = None) -> int:
    """The rank ``r <= kk`` of the first-tile guess of a query's ``kk``-th smallest GEMM value, in a random scan order.

    When the galleries of a tile of ``width`` columns are a uniformly random subset of the ``n_galleries`` (the
    symmetric scan runs in a random order), the number of a query's ``kk - 1`` best galleries that fall into
    the tile is hypergeometric, dominated in the upper tail by ``Binomial(kk - 1, width / n_galleries)``. If the
    tile holds fewer than ``r`` of them, its ``r``-th smallest value (or any larger value, such as the ``r``-th
    smallest sub-block minimum) has at least ``kk`` galleries at or below it: it bounds the ``kk``-th value.
    ``r`` is the smallest rank for which the opposite happens with probability at most ``failures`` (default:
    ``GUESS_FAILURES``); such a query is found by the certification and searched again. ``r = kk`` (a proven
    bound) when the tile holds every gallery.

    >>> first_tile_rank(61, 4096, 50_000), first_tile_rank(13, 4096, 50_000), first_tile_rank(13, 100, 100)
    (13, 6, 13)
    """
    failures = GUESS_FAILURES if failures is None else failures
    f, m = min(1.0, width / max(1, n_galleries)), kk - 1
    if f >= 1.0 or m <= 0:
        return kk
    log_f, log_rest, log_m = math.log(f), math.log1p(-f), math.lgamma(m + 1)
    tail = 0.0  # P(Binomial(m, f) >= r), accumulated from r = m down
    for r in range(m, 0, -1):
        # in logs: comb(m, r) * f^r overflows a float for kk of a thousand or more
        tail += math.exp(log_m - math.lgamma(r + 1) - math.lgamma(m - r + 1) + r * log_f + (m - r) * log_rest)
        if tail > failures:
            return min(kk, r + 1)
    return 1


def random_scan_order(n: int) -> Tensor:
    """The seeded random permutation of ``n`` positions in which the symmetric scan visits the samples."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(SCAN_SEED))


MIN_PARALLEL_PAIRS = 2**24  # below this many query-gallery pairs a scan runs in the calling thread only
FINALIZE_ROWS = 4096  # queries certified at once (several chunks: the workers share them)
CHUNK = 8192  # rows centred at once when the GEMM operands are prepared
MAX_MASK_MULTIPLICITY = 64  # above this many galleries per exclusion key, tiles compare keys instead of a table


class KNNResult(NamedTuple):
    """Nearest galleries of every query: ``distances`` ``[Q, k]`` (ascending) and ``indices`` ``[Q, k]`` (int64)."""

    distances: Tensor
    indices: Tensor


def matmul_unit_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    """Unit round-off of ``torch.mm`` for ``dtype`` on ``device`` under the current precision settings."""
    if dtype == torch.float64:
        return 2.0**-53
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":  # bfloat16 products may be used
        return 2.0**-8
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    if precision == "high" or tf32:
        return 2.0**-11
    return 2.0**-24


def _check_ids(ids: Optional[Tensor], n: int, name: str) -> Optional[Tensor]:
    if ids is None:
        return None
    ids = torch.as_tensor(ids)
    if ids.shape != (n,) or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of shape ({n},), got {ids.dtype} {tuple(ids.shape)}.")
    return ids.long().cpu()


SCREENING_ENV = "OML_KNN_SCREENING"
SCREENING_MIN_WORK = 2**30  # multiply-adds below which "auto" does not screen (the probe would cost more)
_FAST_LOW_PRECISION: Dict[str, bool] = {}


def _cpu_has_bf16_instructions() -> bool:
    """AMX or AVX512-BF16 (Linux: /proc/cpuinfo); without them torch emulates bfloat16 GEMMs, far slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown: let the timing decide
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


def _bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 GEMMs run at least 1.5x faster than float32 ones here (timed once per process)."""
    key = str(device)
    if key not in _FAST_LOW_PRECISION:
        if device.type == "cuda":
            _FAST_LOW_PRECISION[key] = True  # tensor cores
        elif not _cpu_has_bf16_instructions():
            _FAST_LOW_PRECISION[key] = False
        else:
            a = torch.randn(512, 384, device=device)
            b = torch.randn(384, 2048, device=device)
            times = {torch.float32: [], torch.bfloat16: []}
            for _ in range(3):
                for dtype in times:
                    x, y = a.to(dtype), b.to(dtype)
                    start = time.perf_counter()
                    torch.mm(x, y)
                    times[dtype].append(time.perf_counter() - start)
            _FAST_LOW_PRECISION[key] = min(times[torch.float32]) > 1.5 * min(times[torch.bfloat16])
    return _FAST_LOW_PRECISION[key]


def _screening_choice(screening: Union[None, bool, str]) -> str:
    """``"on"``, ``"off"`` or ``"auto"`` from the argument, else from ``$OML_KNN_SCREENING`` (default ``"auto"``)."""
    choice = os.environ.get(SCREENING_ENV, "auto") if screening is None else screening
    choice = ("on" if choice else "off") if isinstance(choice, bool) else str(choice).lower()
    if choice not in ("on", "off", "auto"):
        raise ValueError(f"screening must be True, False, 'on', 'off' or 'auto', got {choice!r} (${SCREENING_ENV}).")
    return choice


def screening_dtype(
    queries: Tensor, galleries: Tensor, screening: Union[None, bool, str] = None
) -> Optional[torch.dtype]:
    """The dtype of the screening GEMM for these inputs, or None for the float32 path.

    ``screening``: ``True``/``"on"``, ``False``/``"off"`` or ``"auto"`` (default: ``$OML_KNN_SCREENING``, else
    ``"auto"``). ``"auto"`` screens float32 inputs of at least ``SCREENING_MIN_WORK`` multiply-adds on CUDA and
    on CPUs whose bfloat16 GEMM is at least 1.5x faster than float32 (timed once per process).
    """
    choice = _screening_choice(screening)
    if choice == "off" or not all(isinstance(x, Tensor) and x.ndim == 2 for x in (queries, galleries)):
        return None  # the constructor of QueryGalleryDistances explains what is wrong with the inputs
    if distance_dtype(queries, galleries) != torch.float32:
        return None
    if choice == "auto":
        work = len(queries) * len(galleries) * queries.shape[1]
        if work < SCREENING_MIN_WORK or not _bf16_is_fast(queries.device):
            return None
    return torch.bfloat16


def screening_is_auto(screening: Union[None, bool, str]) -> bool:
    """Whether the screening choice is left to ``"auto"`` (explicitly or through the environment)."""
    return _screening_choice(screening) == "auto"


PROBE_QUERIES = 256  # queries screened by "auto" to see whether the low-precision bound certifies them
PROBE_MIN_CERTIFIED = 0.9


def _screening_certifies(dists: "QueryGalleryDistances", k: int, kk: int) -> bool:
    """Screen a spread sample of queries: does the low-precision bound certify almost all of them?

    The bound is proven for any data, but its width (``~3 * 2^-8 (|q'| + |g'|)^2``) only pays off when the
    k-th neighbour stands out by more than that; otherwise most queries would be screened twice.
    """
    n_probe = min(dists.n_queries, PROBE_QUERIES)
    rows = torch.linspace(0, dists.n_queries - 1, n_probe, device=dists.device).round().long().unique()
    values, cols = _scan(dists, rows, kk, max(1, len(rows)), min(dists.n_galleries, MAX_TILE_WIDTH))
    with _bookkeeping(1):
        _, _, certified = _finalize(dists, rows, values, cols, k, n_exact=0)
    return float(certified.float().mean()) >= PROBE_MIN_CERTIFIED


def screening_error_factor(screen_dtype: torch.dtype, n_terms: int) -> float:
    """``c`` such that a low-precision GEMM value is within ``c * (|q'| + |g'|)^2`` of the exact one.

    The operands are rounded to ``screen_dtype`` (unit round-off ``u``), the products are exact in float32,
    they are summed in float32 in any order (``gamma_n`` of ``2^-24``), and the result is rounded to
    ``screen_dtype`` again. For the augmented vectors ``sum_i |a_i b_i| <= (|q'| + |g'|)^2``, so the error is at
    most ``(2u + u^2 + gamma_n (1 + u)^2) (1 + u) + u`` times that (see the module docstring).
    """
    u = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[screen_dtype]
    u32 = 2.0**-24
    gamma = n_terms * u32 / (1 - n_terms * u32)
    inner = 2 * u + u * u + gamma * (1 + u) ** 2
    return inner + u * (1 + inner)


def exclusion_keys(sample_ids: Tensor, sequences: Optional[Any] = None) -> Tensor:
    """``[N]`` int64 keys for ``exact_knn``'s ids: equal for the same sample and for the same sequence.

    A query ignores every gallery item with its key: itself (a row that is both a query and a gallery item)
    and, when ``sequences`` are given, every item of its sequence (re-id protocols ignore the query's own
    camera / tracklet, OML 4.0's ``sequence`` column). Items whose sequence is missing (None / NaN) only
    exclude themselves.

    Args:
        sample_ids: ``[N]`` integer ids of the samples (equal ids: the same sample).
        sequences: optional ``[N]`` hashable sequence ids.

    >>> exclusion_keys(torch.arange(4), ["a", None, "a", "b"]).tolist()
    [4, 1, 4, 6]
    """
    sample_ids = torch.as_tensor(sample_ids).long().cpu().flatten()
    if sequences is None:
        return sample_ids
    _, (codes,) = encode_labels(sample_ids)
    n_codes = int(codes.max()) + 1 if len(codes) else 0
    values = sequences.detach().cpu().numpy() if isinstance(sequences, Tensor) else sequences
    missing = torch.from_numpy(np.array(pd.isna(pd.Series(list(values), dtype=object)), dtype=bool))
    if len(missing) != len(sample_ids):
        raise ValueError(f"sequences has {len(missing)} values, expected {len(sample_ids)} (one per sample).")
    _, (sequence_codes,) = encode_labels(values)
    return torch.where(missing, codes, n_codes + sequence_codes)


def _version_of(x: Tensor) -> Optional[int]:
    """The in-place change counter of ``x``; None for tensors made under ``torch.inference_mode`` (no counter)."""
    return None if x.is_inference() else x._version


class PreparedGallery:
    """The gallery operand of the kNN GEMM, built once and reused by every search against the same gallery.

    The GEMM runs on data centred at the galleries' mean (distances do not change, the error bound shrinks
    for embeddings far from the origin). Gallery side: ``[g', |g'|^2, 1]``; query side (built per tile):
    ``[-2 q', 1, |q'|^2]``, where ``x' = fl(x - centre)``. The centre is representable in the compute dtype, so
    ``x'`` is within ``u |x - centre|`` of ``x - centre``. Memory: ``G x (D + 2)`` values of ``tile_dtype``
    (about the size of the gallery in float32, half of it in bfloat16), plus ``G`` float64 squared norms.

    Args:
        galleries: ``[G, D]`` finite embeddings.
        screen_dtype: the low-precision dtype of a screening GEMM, or None (the gallery's own precision).
        compute_dtype: float32 or float64 (default: float64 for float64 galleries, else float32).
        order: optional permutation of the galleries: row ``i`` of the operand (and of ``sq_norms``) is then
            gallery ``order[i]`` (the random scan order of ``QueryGalleryDistances``); such an operand is not
            reused by other searches.
    """

    def __init__(
        self,
        galleries: Tensor,
        screen_dtype: Optional[torch.dtype] = None,
        compute_dtype: Optional[torch.dtype] = None,
        order: Optional[Tensor] = None,
    ):
        compute_dtype = compute_dtype or distance_dtype(galleries)
        if screen_dtype is not None and compute_dtype != torch.float32:
            raise ValueError(f"Screening needs float32 embeddings, got {compute_dtype}.")
        self.source = galleries
        # torch counts in-place changes of a tensor: a gallery edited after preparing is prepared again
        self.source_version = _version_of(galleries)
        self.compute_dtype = compute_dtype
        self.tile_dtype = screen_dtype or compute_dtype
        self.galleries = galleries.to(compute_dtype).contiguous()
        n, dim = self.galleries.shape
        device = self.galleries.device
        self.order = None if order is None else order.to(device)
        if n:
            self.center = self.galleries.mean(dim=0, dtype=torch.float64).to(compute_dtype)
        else:
            self.center = torch.zeros(dim, dtype=compute_dtype, device=device)
        # built chunk by chunk, so that a low-precision operand never has a full float32 copy beside it
        self.gallery_aug = torch.empty(n, dim + 2, dtype=self.tile_dtype, device=device)
        self.sq_norms = torch.empty(n, dtype=torch.float64, device=device)
        for i in range(0, n, CHUNK):
            rows = self.galleries[i : i + CHUNK] if self.order is None else self.galleries[self.order[i : i + CHUNK]]
            centred = rows - self.center
            self.sq_norms[i : i + CHUNK] = centred.double().square().sum(dim=1)
            self.gallery_aug[i : i + CHUNK, :dim] = centred
            self.gallery_aug[i : i + CHUNK, dim] = self.sq_norms[i : i + CHUNK].to(compute_dtype)
        self.gallery_aug[:, dim + 1] = 1

    @classmethod
    def from_parts(cls, galleries: Tensor, parts: Dict[str, Tensor]) -> "PreparedGallery":
        """The operand of ``galleries`` restored from the ``center``, ``gallery_aug`` and ``sq_norms`` of an earlier
        one (e.g. read from a file) instead of computed again; the caller checks that they belong to them."""
        prepared = cls.__new__(cls)
        prepared.source, prepared.source_version, prepared.order = galleries, _version_of(galleries), None
        prepared.compute_dtype, prepared.tile_dtype = parts["center"].dtype, parts["gallery_aug"].dtype
        prepared.galleries = galleries.to(prepared.compute_dtype).contiguous()
        device = prepared.galleries.device
        prepared.center, prepared.gallery_aug = parts["center"].to(device), parts["gallery_aug"].to(device)
        prepared.sq_norms = parts["sq_norms"].to(device)
        return prepared

    def fits(self, galleries: Tensor, compute_dtype: torch.dtype, tile_dtype: torch.dtype) -> bool:
        """Whether it was prepared from these very galleries (unchanged since), in these dtypes."""
        version = _version_of(galleries)
        same = galleries is self.source and version is not None and version == self.source_version
        return same and self.order is None and (compute_dtype, tile_dtype) == (self.compute_dtype, self.tile_dtype)


class QueryGalleryDistances:
    """Squared query-gallery distances served tile by tile, with a proven error bound and exact recomputation.

    Pairs whose ids are equal (``query_ids[i] == gallery_ids[j]``: the same sample on both sides, or the
    same sequence with keys from ``exclusion_keys``) are excluded: their tile values are ``+inf``.

    Args:
        queries: ``[Q, D]`` finite embeddings.
        galleries: ``[G, D]`` finite embeddings (pass the *same tensor object* as ``queries`` together with the
            same ids to enable the symmetric mode).
        query_ids: optional ``[Q]`` integer sample ids of the queries.
        gallery_ids: optional ``[G]`` integer sample ids of the galleries.
        screen_dtype: run the GEMM in this low precision (``torch.bfloat16``) for screening: the tiles are
            in that dtype and ``error_bound`` covers the rounding of the operands and of the results (see the
            module docstring). The exact recomputation is unchanged.
        prepared: the ``PreparedGallery`` of ``galleries`` from an earlier search (used when it fits).
        random_order: in the symmetric mode (ignored otherwise), the tiles visit the samples in the order
            ``random_scan_order``: each tile then holds a uniformly random subset of them, which lets
            ``exact_knn`` guess a query's bound from its first tile. The tile methods (``tiles``,
            ``symmetric_tiles``, ``gemm_tile``, ``mask_tile``) then take and give *scan positions* (position
            ``i`` is sample ``scan_order[i]``); the exact methods and ``error_bound`` stay indexed by sample.
    """

    def __init__(
        self,
        queries: Tensor,
        galleries: Tensor,
        query_ids: Optional[Tensor] = None,
        gallery_ids: Optional[Tensor] = None,
        screen_dtype: Optional[torch.dtype] = None,
        prepared: Optional[PreparedGallery] = None,
        random_order: bool = False,
    ):
        check_embeddings(queries, "queries")
        if galleries is not queries:
            check_embeddings(galleries, "galleries")
        if queries.shape[1] != galleries.shape[1]:
            raise ValueError(
                f"queries and galleries must have the same dimension, got {queries.shape[1]} and {galleries.shape[1]}."
            )
        if queries.device != galleries.device:
            raise ValueError(f"queries and galleries are on different devices: {queries.device}, {galleries.device}.")
        self.symmetric = queries is galleries and (query_ids is gallery_ids)
        compute_dtype = distance_dtype(queries, galleries)
        self.out_dtype = compute_dtype
        if screen_dtype is not None and compute_dtype != torch.float32:
            raise ValueError(f"Screening needs float32 embeddings, got {compute_dtype}.")
        self.tile_dtype = screen_dtype or compute_dtype
        self.queries = queries.to(compute_dtype).contiguous()
        #: symmetric mode with ``random_order``: the sample at each scan position (else None: the identity)
        self.scan_order: Optional[Tensor] = None
        self._scan_position: Optional[Tensor] = None
        if random_order and self.symmetric:
            self.scan_order = random_scan_order(len(queries)).to(queries.device)
            self._scan_position = torch.empty_like(self.scan_order)
            self._scan_position[self.scan_order] = torch.arange(len(queries), device=queries.device)
        if prepared is None or self.symmetric or not prepared.fits(galleries, compute_dtype, self.tile_dtype):
            source = self.queries if self.symmetric else galleries
            prepared = PreparedGallery(source, screen_dtype, compute_dtype, self.scan_order)
        #: the gallery side of the GEMM (reusable by later searches against the same gallery)
        self.prepared = prepared
        self.galleries = self.queries if self.symmetric else prepared.galleries
        self.n_queries, self.dim = self.queries.shape
        self.n_galleries = self.galleries.shape[0]
        self.device = self.queries.device
        self.query_ids = _check_ids(query_ids, self.n_queries, "query_ids")
        self.gallery_ids = _check_ids(gallery_ids, self.n_galleries, "gallery_ids")
        if (self.query_ids is None) != (self.gallery_ids is None):
            raise ValueError("query_ids and gallery_ids must be given together.")

        self.center, self.gallery_aug = prepared.center, prepared.gallery_aug
        self._masked = self._find_masked_pairs(self.to_scan(self.query_ids), self.to_scan(self.gallery_ids))
        # in the symmetric mode with unique ids the masked pairs are the diagonal
        self._diagonal_mask = (
            self.symmetric
            and self._masked is not None
            and self._masked.shape[1] == 1
            and bool((self._masked[:, 0] == torch.arange(self.n_queries, device=self.device)).all())
        )

        gallery_norms = prepared.sq_norms.to(compute_dtype).double().sqrt()  # in scan order
        if self.symmetric:
            query_norms = self.from_scan_rows(gallery_norms)
        else:
            query_norms = torch.cat(
                [
                    (self.queries[i : i + CHUNK] - self.center).double().norm(dim=1)
                    for i in range(0, self.n_queries, CHUNK)
                ]
                or [torch.zeros(0, dtype=torch.float64, device=self.device)]
            )
        max_gallery_norm = float(gallery_norms.max()) if self.n_galleries else 0.0
        u_data = 2.0**-24 if compute_dtype == torch.float32 else 2.0**-53
        scale = ((query_norms + max_gallery_norm) * (1 + 2 * u_data)) ** 2
        n_terms = self.dim + 2
        if screen_dtype is None:
            u = matmul_unit_roundoff(compute_dtype, self.device)
            if n_terms * u >= 0.5:
                raise ValueError(f"The GEMM precision (unit round-off {u}) is too low for dimension {self.dim}.")
            gamma = n_terms * u / (1 - n_terms * u)
            # the dot product (gamma), the rounding of the squared norms (u) and of the centred data (4 u_data)
            factor = gamma * (1 + u) + u + 4 * u_data
        else:
            # the float32 rounding of the squared norms (2^-24) comes before their low-precision rounding
            factor = screening_error_factor(screen_dtype, n_terms) + 2.0**-24 + 4 * u_data
        #: per query: |GEMM value - true squared distance| <= error_bound
        self.error_bound = (factor * scale).cpu()
        # the final rounding to out_dtype merges values that differ by a relative 2 u_data in distance
        self._rounding_margin = (8 * u_data + 1e-15) * scale.cpu()

    # ------------------------------------------------------------------ scan order
    def to_scan(self, by_sample: Optional[Tensor]) -> Optional[Tensor]:
        """Values per sample (``[N, ...]``, e.g. ids) in scan order (unchanged without a random order)."""
        if by_sample is None or self.scan_order is None:
            return by_sample
        return by_sample[self.scan_order.to(by_sample.device)]

    def from_scan_rows(self, by_position: Tensor) -> Tensor:
        """Values per scan position (``[N, ...]``) in sample order: the inverse of ``to_scan``."""
        if self.scan_order is None:
            return by_position
        return by_position[self._scan_position.to(by_position.device)]  # type: ignore[union-attr]

    def scan_positions(self, samples: Tensor) -> Tensor:
        """The scan positions of the samples (queries) ``samples``."""
        return samples if self._scan_position is None else self._scan_position[samples.to(self.device)]

    def samples_at(self, positions: Tensor) -> Tensor:
        """The samples (galleries) at the scan positions ``positions``; negative positions (padding) are kept."""
        if self.scan_order is None:
            return positions
        return torch.where(positions < 0, positions, self.scan_order[positions.clamp_min(0)])

    # ------------------------------------------------------------------ masks
    def _find_masked_pairs(self, query_ids: Optional[Tensor], gallery_ids: Optional[Tensor]) -> Optional[Tensor]:
        """``[Q, m]`` gallery positions with the same id as the query (``-1`` padded), or None.

        The ids are given in the order of the tiles (scan order). When that table would be large (long
        sequences: many galleries share a key), None is returned and ``mask_tile`` compares the keys of each
        tile instead (``_compare_keys``).
        """
        self._compare_keys = False
        if query_ids is None or gallery_ids is None:
            return None
        sorted_ids, order = torch.sort(gallery_ids)
        lo = torch.searchsorted(sorted_ids, query_ids, right=False)
        hi = torch.searchsorted(sorted_ids, query_ids, right=True)
        mult = int((hi - lo).max()) if self.n_queries else 0
        if mult == 0:
            return None
        if mult > MAX_MASK_MULTIPLICITY:
            self._compare_keys = True
            self._device_query_ids = query_ids.to(self.device)
            self._device_gallery_ids = gallery_ids.to(self.device)
            return None
        offsets = lo[:, None] + torch.arange(mult)[None, :]
        valid = offsets < hi[:, None]
        positions = order[offsets.clamp_max(self.n_galleries - 1)]
        return torch.where(valid, positions, torch.full_like(positions, -1)).to(self.device)

    def mask_tile(self, tile: Tensor, rows: Tensor, col_start: int, contiguous_rows: bool = False) -> None:
        """Set ``+inf`` where query ``rows[i]`` and gallery ``col_start + j`` are the same sample (in place).

        ``contiguous_rows``: ``rows`` is a range (enables a shortcut in the symmetric mode).
        """
        if self._compare_keys:
            keys = self._device_gallery_ids[col_start : col_start + tile.shape[1]]
            tile.masked_fill_(self._device_query_ids[rows.to(self.device)][:, None] == keys[None, :], float("inf"))
            return
        if self._masked is None:
            return
        if self._diagonal_mask and contiguous_rows:
            offset = int(rows[0]) - col_start
            if -tile.shape[0] < offset < tile.shape[1]:
                tile.diagonal(offset).fill_(float("inf"))
            return
        cols = self._masked[rows] - col_start
        hit = (cols >= 0) & (cols < tile.shape[1])
        if hit.any():
            r, m = hit.nonzero(as_tuple=True)
            tile[r, cols[r, m]] = float("inf")

    # ------------------------------------------------------------------ tiles
    def _query_aug(self, rows: Tensor) -> Tensor:
        """``[-2 q', 1, |q'|^2]`` of the queries ``rows`` (the left GEMM operand)."""
        if self.symmetric:
            g = self.gallery_aug[rows]
            return torch.cat([g[:, : self.dim] * -2, g[:, self.dim + 1 :], g[:, self.dim : self.dim + 1]], dim=1)
        q = self.queries[rows] - self.center
        ones = torch.ones(len(q), 1, dtype=q.dtype, device=q.device)
        aug = torch.cat([q * -2, ones, q.double().square().sum(dim=1).to(q.dtype)[:, None]], dim=1)
        return aug.to(self.tile_dtype)

    def gemm_tile(
        self, query_aug: Tensor, rows: Tensor, col_start: int, width: int, buffer: Tensor, contiguous_rows: bool = False
    ) -> Tensor:
        """The masked GEMM squared distances ``[len(rows), <= width]`` of the queries ``rows`` (whose left operand
        ``_query_aug(rows)`` is ``query_aug``) and the galleries from ``col_start``, written into ``buffer``."""
        g_aug = self.gallery_aug[col_start : col_start + width]
        tile = buffer[: len(rows) * len(g_aug)].view(len(rows), len(g_aug))
        with _float32_accumulation(self.tile_dtype, self.device):
            torch.mm(query_aug, g_aug.T, out=tile)
        self.mask_tile(tile, rows, col_start, contiguous_rows=contiguous_rows)
        return tile

    def tiles(self, rows: Tensor, height: int, width: int) -> Iterator[Tuple[int, Tensor, int, Tensor]]:
        """Yield ``(offset, query_rows, gallery_start, tile)`` with the GEMM squared distances (masked).

        ``query_rows = rows[offset : offset + height]`` and ``tile`` is ``[len(query_rows), <= width]`` for the
        galleries from ``gallery_start``. The buffer is reused: consume a tile before advancing the iterator.
        """
        rows = rows.to(self.device)
        height, width = max(1, min(height, len(rows))), max(1, min(width, self.n_galleries))
        space = _TileSpace(self, height * width)
        for r0 in range(0, len(rows), height):
            chunk = rows[r0 : r0 + height]
            for c0 in range(0, self.n_galleries, width):
                yield r0, chunk, c0, space.tile(chunk, r0, c0, width)

    def symmetric_pairs(self, side: int, shard: Optional[Shard] = None) -> List[Tuple[int, int]]:
        """Symmetric mode: the ``(row_start, col_start)`` of the square tiles of the upper triangle, diagonal first.

        With a ``shard``, only every ``world_size``-th tile from the ``rank``-th (the processes share the work).
        """
        if not self.symmetric:
            raise RuntimeError("symmetric tiles need queries and galleries to be the same tensor with the same ids.")
        starts = range(0, self.n_queries, side)
        pairs = [(r0, r0) for r0 in starts] + [(r0, c0) for r0 in starts for c0 in starts if c0 > r0]
        return pairs if shard is None else pairs[shard.rank :: shard.world_size]

    def symmetric_tiles(self, tile_size: int, shard: Optional[Shard] = None) -> Iterator[Tuple[int, int, Tensor]]:
        """Symmetric mode only: yield ``(row_start, col_start, tile)`` for the tiles of ``symmetric_pairs``.

        ``tile`` serves the queries ``row_start + i`` against the galleries ``col_start + j`` and, off the
        diagonal, also (read by columns) the queries ``col_start + j`` against the galleries ``row_start + i``:
        every pair is computed once. The buffer is reused.
        """
        side = max(1, min(self.n_queries, tile_size))
        space = _TileSpace(self, side * side)
        for r0, c0 in self.symmetric_pairs(side, shard):
            rows = torch.arange(r0, min(self.n_queries, r0 + side), device=self.device)
            yield r0, c0, space.tile(rows, r0, c0, side, contiguous_rows=True)

    # ------------------------------------------------------------------ exact values
    def exact_sq_distances(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Float64 squared distances of the pairs (query ``rows[p]``, gallery ``cols[p]``), both ``[P]``.

        Differences and sums in float64: the square root rounded to float32 is the correctly rounded distance.
        """
        return exact_sq_distances_of_pairs(self.queries, self.galleries, rows, cols)

    def exact_distances(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Exact distances (``out_dtype``) of the pairs of ``exact_sq_distances``; same-sample pairs are ``+inf``."""
        dist = self.exact_sq_distances(rows, cols).sqrt_().to(self.out_dtype)
        if self.query_ids is not None:
            same = self.query_ids[rows.cpu()] == self.gallery_ids[cols.cpu()]
            dist[same.to(dist.device)] = float("inf")
        return dist

    def candidate_slack(self, rows: Tensor) -> Tensor:
        """Float64 ``[n]``: GEMM values above ``t + slack`` cannot beat a candidate whose GEMM value is ``t``."""
        return 2 * self.error_bound[rows.cpu()] + self._rounding_margin[rows.cpu()]


# ---------------------------------------------------------------------- selection helpers
class _Candidates:
    """The ``kk`` best (smallest GEMM value) candidates of every query seen so far, updated tile by tile.

    For a tile row, a bound ``tau`` such that at least ``kk`` elements of the row (kept or in the tile) are
    ``<= tau`` is known without sorting the row: the query's current ``kk``-th best value or (while a query has
    fewer than ``kk`` finite candidates: its first tile) the ``kk``-th smallest minimum of fine sub-blocks. Only
    the elements ``<= tau`` can enter the top ``kk``; they are found through the sub-block minima (one cheap
    pass over the tile). The kept values of a query stay sorted, so the new ones are merged into them by rank
    (``searchsorted``) without sorting the kept ones again: after the first tiles only a few new candidates per
    query pass ``tau``.

    **Guesses** (``n_galleries`` given: the tiles hold random subsets of the galleries, see ``first_tile_rank``).
    The first tile's ``kk``-th value is a loose bound (the ``kk``-th of a few thousand values, not of the whole
    gallery), and with it most candidates of the early tiles are filtered and merged only to be dropped later.
    A query's first tile instead sets ``guess`` to the ``r``-th smallest sub-block minimum (``r`` from
    ``first_tile_rank``), and later tiles filter at ``min(kept kk-th value, guess)``. The guess is not proven: with
    probability at most ``GUESS_FAILURES`` fewer than ``kk`` galleries lie at or below it, and then values that
    belong to the top ``kk`` are dropped. Every dropped value is above ``guess`` or at least the kept ``kk``-th
    value, so ``_finalize`` certifies a query only if its guess is also above the threshold of the exact top-k;
    the others are searched again without guessing.
    """

    def __init__(
        self,
        n: int,
        kk: int,
        like: Tensor,
        sub: int = SUB_BLOCK,
        column_sub: Optional[int] = None,
        n_galleries: Optional[int] = None,
    ):
        self.kk, self.sub, self.column_sub, self.n_galleries = kk, sub, column_sub or sub, n_galleries
        self.values = torch.full((n, kk), float("inf"), dtype=like.dtype, device=like.device)
        self.cols = torch.full((n, kk), -1, dtype=torch.long, device=like.device)
        #: per query: every value dropped so far is above it or at least the kept kk-th value (inf: no guess)
        self.guess = torch.full((n,), float("inf"), dtype=like.dtype, device=like.device)

    def update(self, view: Tensor, block_mins: Optional[Tensor], row_start: int, col_start: int) -> None:
        """Merge ``view`` (``[r, w]``: queries ``row_start + i`` x galleries ``col_start + j``).

        ``block_mins`` is ``[r, w // sub]`` (minima of the full sub-blocks) or None to consider every element.
        """
        n_rows, width = view.shape
        tau = self._bound(slice(row_start, row_start + n_rows), block_mins, view)
        if block_mins is None:
            r, c = (view <= tau[:, None]).nonzero(as_tuple=True)
            self._merge(r + row_start, c + col_start, view[r, c])
            return
        sub, n_blocks = self.sub, block_mins.shape[1]
        passing = sparse_nonzero(block_mins <= tau[:, None])  # flat: row * n_blocks + block
        r = passing // n_blocks
        if view.is_contiguous() and width == n_blocks * sub:  # whole sub-blocks are rows of a 2D view
            values = view.view(n_rows * n_blocks, sub).index_select(0, passing)
        else:
            values = view[:, : n_blocks * sub].unflatten(1, (n_blocks, sub))[r, passing - r * n_blocks]
        hits = sparse_nonzero(values <= tau.index_select(0, r)[:, None])  # flat: passing block * sub + j
        block = hits // sub
        rows = r.index_select(0, block)
        cols = (passing.index_select(0, block) - rows * n_blocks) * sub + (hits - block * sub)
        values = values.view(-1).index_select(0, hits)
        if n_blocks * sub < width:
            tail = view[:, n_blocks * sub :]
            tr, tc = (tail <= tau[:, None]).nonzero(as_tuple=True)
            rows, cols = torch.cat([rows, tr]), torch.cat([cols, tc + n_blocks * sub])
            values = torch.cat([values, tail[tr, tc]])
        self._merge(rows + row_start, cols + col_start, values)

    def update_columns(self, tile: Tensor, block_mins: Optional[Tensor], query_start: int, gallery_start: int) -> None:
        """Merge ``tile`` read by columns: queries ``query_start + j`` x galleries ``gallery_start + i``.

        ``block_mins`` is ``[tile.shape[0] // sub, tile.shape[1]]`` (``_column_block_mins``) or None.

        Sub-blocks run along the tile's columns, so no transposed copy is needed; their elements are strided,
        which is cheap because only a few sub-blocks per query pass the bound (the queries already have
        candidates from their diagonal tile).
        """
        height, n_queries = tile.shape
        sub = self.column_sub
        n_blocks = tile.shape[0] // sub
        span = slice(query_start, query_start + n_queries)
        tau = self._bound(span, None if block_mins is None else block_mins.T, tile.T)
        if block_mins is None:
            g, q = (tile <= tau[None, :]).nonzero(as_tuple=True)
            self._merge(q + query_start, g + gallery_start, tile[g, q])
            return
        # by query, then block (the transposed mask is copied in that order): candidates come grouped by query
        passing = sparse_nonzero(block_mins.t() <= tau[:, None])  # flat: query * n_blocks + block
        q = passing // n_blocks
        b = passing - q * n_blocks
        # element (b * sub + j, q) of the tile, by flat position (cheaper than advanced indexing of a 3D view)
        starts = b * (sub * n_queries) + q
        steps = torch.arange(0, sub * n_queries, n_queries, device=tile.device)
        values = tile.reshape(-1).index_select(0, (starts[:, None] + steps).view(-1)).view(-1, sub)  # [P, sub]
        hits = sparse_nonzero(values <= tau.index_select(0, q)[:, None])  # flat: passing block * sub + j
        block = hits // sub
        queries = q.index_select(0, block)
        galleries = b.index_select(0, block) * sub + (hits - block * sub)
        values = values.view(-1).index_select(0, hits)
        if n_blocks * sub < height:
            tail = tile[n_blocks * sub :]
            tg, tq = (tail <= tau[None, :]).nonzero(as_tuple=True)
            queries, galleries = torch.cat([queries, tq]), torch.cat([galleries, tg + n_blocks * sub])
            values = torch.cat([values, tail[tg, tq]])
        self._merge(queries + query_start, galleries + gallery_start, values)

    def _bound(self, span: slice, block_mins: Optional[Tensor], rows: Tensor) -> Tensor:
        """The filter bound ``[r]`` of the queries ``span`` for a tile whose values of them are ``rows`` ``[r, w]``.

        The kept ``kk``-th value, or the guess if smaller. A query without either (its first tile) gets the
        ``kk``-th smallest minimum of disjoint sub-blocks of ``rows`` (at least ``kk`` elements of the row are at
        or below it, one per block; tight when the blocks are small), or with guessing the ``r``-th (recorded as
        its guess). ``block_mins`` ``[r, n_blocks]`` are the minima the filter uses anyway: with at least ``2 r``
        blocks the bound costs one ``kthvalue`` of them, no pass over the tile; with fewer (a narrow tile) the
        minima of finer sub-blocks are computed.
        """
        tau = torch.minimum(self.values[span, -1], self.guess[span])
        fresh = ~torch.isfinite(tau)
        if not fresh.any():
            return tau
        width = rows.shape[1]
        rank = self.kk if self.n_galleries is None else first_tile_rank(self.kk, width, self.n_galleries)
        every = bool(fresh.all())
        if block_mins is None or block_mins.shape[1] < 2 * rank:
            sub = sub_block_size(4 * rank, width)
            n_blocks = width // sub
            if n_blocks < rank:
                return tau
            rows = rows if every else rows[fresh]
            mins = rows[:, : n_blocks * sub].reshape(len(rows), n_blocks, sub).amin(dim=2)
        else:
            mins = block_mins if every else block_mins[fresh]
        tau = tau.clone()
        tau[fresh] = torch.kthvalue(mins.float(), rank, dim=1).values.to(tau.dtype)
        if rank < self.kk:
            self.guess[span] = torch.where(fresh, tau, self.guess[span])
        return tau

    def _merge(self, rows: Tensor, cols: Tensor, values: Tensor) -> None:
        """Merge the candidates ``(rows[p], cols[p], values[p])`` into the kept ones.

        The new candidates are laid out as a ``[touched, width]`` table (the filters give them grouped by query,
        ascending; other orders are grouped first) whose rows are sorted; a new value's rank in the merged row
        is its position plus the number of kept values at or below it, a kept value's rank its position plus
        the number of new values below it (ties: kept first). The ranks of a row are a permutation, and those
        below ``kk`` are written back: the kept rows stay sorted. A very uneven spread of new candidates over
        the queries (the table would be large) is merged by one sort instead.
        """
        if not len(rows):
            return
        kk = self.kk
        values = values.to(self.values.dtype)
        if len(rows) > 1 and not bool((rows[1:] >= rows[:-1]).all()):
            grouped = torch.argsort(rows, stable=True)
            rows, cols, values = rows[grouped], cols[grouped], values[grouped]
        touched, counts = torch.unique_consecutive(rows, return_counts=True)
        width = int(counts.max())
        if len(touched) * width > 4 * len(rows) + len(touched) * kk:
            self._merge_by_sort(touched, rows, cols, values)
            return
        n_touched, device = len(touched), rows.device
        slot = torch.arange(n_touched, device=device).repeat_interleave(counts)
        position = torch.arange(len(rows), device=device) - (torch.cumsum(counts, 0) - counts)[slot]
        new_values = torch.full((n_touched, width), float("inf"), dtype=values.dtype, device=device)
        new_cols = torch.full((n_touched, width), -1, dtype=torch.long, device=device)
        new_values[slot, position], new_cols[slot, position] = values, cols
        new_values, by_value = torch.sort(new_values, dim=1)  # a row sort of a narrow table: no global argsort
        new_cols = new_cols.gather(1, by_value)
        # all queries of a range touched (the usual case): views instead of gathers and scatters
        first = int(touched[0])
        span = slice(first, first + n_touched) if int(touched[-1]) - first + 1 == n_touched else touched
        kept_values, kept_cols = self.values[span], self.cols[span]
        # a new value's insertion point p = number of kept values at or below it; kept value i has the new
        # values with p <= i below it
        inserted = torch.searchsorted(kept_values, new_values, right=True)
        below = torch.zeros(n_touched, kk + 1, dtype=torch.long, device=device)
        below.scatter_add_(1, inserted, torch.ones_like(inserted)).cumsum_(dim=1)
        kept_rank = below[:, :kk] + torch.arange(kk, device=device)
        new_rank = inserted + torch.arange(width, device=device)
        merged_values = torch.empty(n_touched, kk + width, dtype=values.dtype, device=device)
        merged_cols = torch.empty(n_touched, kk + width, dtype=torch.long, device=device)
        merged_values.scatter_(1, kept_rank, kept_values).scatter_(1, new_rank, new_values)
        merged_cols.scatter_(1, kept_rank, kept_cols).scatter_(1, new_rank, new_cols)
        self.values[span], self.cols[span] = merged_values[:, :kk], merged_cols[:, :kk]

    def _merge_by_sort(self, touched: Tensor, rows: Tensor, cols: Tensor, values: Tensor) -> None:
        """``_merge`` by one sort of (query, value) keys over the kept and the new candidates of ``touched``."""
        kk = self.kk
        rows = torch.cat([touched.repeat_interleave(kk), rows])
        cols = torch.cat([self.cols[touched].flatten(), cols])
        values = torch.cat([self.values[touched].flatten(), values])
        order = torch.argsort((rows << 32) | (float_order_keys(values) + 2**31))
        rows, cols, values = rows[order], cols[order], values[order]
        rank = torch.arange(len(rows), device=rows.device) - torch.searchsorted(rows, rows)
        keep = rank < kk
        self.values[rows[keep], rank[keep]] = values[keep]
        self.cols[rows[keep], rank[keep]] = cols[keep]


def _row_block_mins(tile: Tensor, sub: int = SUB_BLOCK) -> Optional[Tensor]:
    """``[r, w // sub]`` minima of the full sub-blocks of the rows of ``tile`` (None if it has none)."""
    n_blocks = tile.shape[1] // sub
    if n_blocks == 0:
        return None
    return tile[:, : n_blocks * sub].view(tile.shape[0], n_blocks, sub).amin(dim=2)


def _column_block_mins(tile: Tensor, sub: int = SUB_BLOCK) -> Optional[Tensor]:
    """``[h // sub, w]`` minima of the full sub-blocks of the columns of ``tile`` (None if it has none)."""
    n_blocks = tile.shape[0] // sub
    if n_blocks == 0:
        return None
    return tile[: n_blocks * sub].view(n_blocks, sub, tile.shape[1]).amin(dim=1)


@contextmanager
def _float32_accumulation(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """On CUDA, low-precision GEMMs may reduce partial sums in low precision; the screening bound assumes
    float32 sums, so that option is switched off while the kernel's GEMM runs (and restored)."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        yield
        return
    matmul = torch.backends.cuda.matmul
    name = (
        "allow_bf16_reduced_precision_reduction"
        if dtype == torch.bfloat16
        else "allow_fp16_reduced_precision_reduction"
    )
    before = getattr(matmul, name)
    setattr(matmul, name, False)
    try:
        yield
    finally:
        setattr(matmul, name, before)


def _bookkeeping(n_workers: int) -> ContextManager[None]:
    """The thread setting of the small ops after a GEMM (selection, merges, certification): one thread.

    These ops are small: intra-op parallelism gains little for them, while on an oversubscribed machine every
    parallel region can stall for a scheduler time slice (measured: a merge 16x slower on 2 busy cores).
    In the calling thread (``n_workers == 1``) the count is set to one and restored afterwards (the GEMM and
    the passes over whole tiles keep all threads; NB: the count is process-wide); on worker threads
    (``run_in_workers``) every op already runs on one thread.
    """
    return torch_threads(1) if n_workers == 1 else nullcontext()


class _TileSpace:
    """A worker's tile buffer and the left GEMM operand of the last query rows it served."""

    def __init__(self, dists: QueryGalleryDistances, n_elements: int):
        self.dists = dists
        self.buffer = torch.empty(n_elements, dtype=dists.tile_dtype, device=dists.device)
        self._rows_start, self._query_aug = -1, torch.empty(0)

    def tile(self, rows: Tensor, rows_start: int, col_start: int, width: int, contiguous_rows: bool = False) -> Tensor:
        if rows_start != self._rows_start:
            self._query_aug, self._rows_start = self.dists._query_aug(rows), rows_start
        return self.dists.gemm_tile(self._query_aug, rows, col_start, width, self.buffer, contiguous_rows)


def _scan(dists: QueryGalleryDistances, rows: Tensor, kk: int, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """GEMM-based ``kk`` best candidates (values, gallery indices) of the queries ``rows``.

    On the CPU the tiles are spread over worker threads (``oml.utils.threads``); two tiles of the same queries
    never run at once. The candidates do not depend on the order of the tiles (see ``_Candidates``). No guesses:
    this scan also searches again the queries whose guess failed.
    """
    rows = dists.scan_positions(rows.to(dists.device))
    height, width = max(1, min(height, len(rows))), max(1, min(width, dists.n_galleries))
    sub = sub_block_size(kk, width)
    candidates = _Candidates(len(rows), kk, dists.gallery_aug, sub)
    tasks = [(r0, c0) for r0 in range(0, len(rows), height) for c0 in range(0, dists.n_galleries, width)]
    # tiles of one row block cannot run at once: a few queries against a large gallery (one row block) keep
    # the calling thread, where the GEMM has all threads
    n_row_blocks = -(-len(rows) // height)
    n_workers = cpu_workers(n_row_blocks, dists.device, len(rows) * dists.n_galleries, MIN_PARALLEL_PAIRS)

    def process(task: Tuple[int, int], space: _TileSpace) -> None:
        r0, c0 = task
        tile = space.tile(rows[r0 : r0 + height], r0, c0, width)
        block_mins = _row_block_mins(tile, sub)
        with _bookkeeping(n_workers):
            candidates.update(tile, block_mins, r0, c0)

    run_in_workers(tasks, process, n_workers, lambda: _TileSpace(dists, height * width), lambda task: task[:1])
    return candidates.values, dists.samples_at(candidates.cols)


def _scan_symmetric(
    dists: QueryGalleryDistances, kk: int, tile_size: int, shard: Optional[Shard] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """``_scan`` of all queries when queries and galleries are the same set: half of the GEMM work.

    A tile updates the queries of its rows and of its columns: two tiles sharing either never run at once.
    With a ``shard``: the candidates of every query among the galleries of this process's tiles only.
    Returns ``(values, cols, guess)`` by sample; in a random scan order (``dists.scan_order``) the first tile of a
    query guesses its bound (``_Candidates``), else ``guess`` is ``inf``.
    """
    n = dists.n_queries
    side = max(1, min(n, tile_size))
    sub = sub_block_size(kk, side)
    # read by columns, a passing sub-block is a strided gather (a cache miss per element): smaller ones there
    column_sub = sub_block_size(4 * kk, side)
    guessing = dists.n_galleries if dists.scan_order is not None else None
    candidates = _Candidates(n, kk, dists.gallery_aug, sub, column_sub, n_galleries=guessing)
    tasks = dists.symmetric_pairs(side, shard)
    n_workers = cpu_workers(len(tasks), dists.device, n * n / 2, MIN_PARALLEL_PAIRS)

    def process(task: Tuple[int, int], space: _TileSpace) -> None:
        r0, c0 = task
        tile = space.tile(torch.arange(r0, min(n, r0 + side), device=dists.device), r0, c0, side, True)
        row_mins = _row_block_mins(tile, sub)
        column_mins = _column_block_mins(tile, column_sub) if c0 != r0 else None
        with _bookkeeping(n_workers):
            candidates.update(tile, row_mins, r0, c0)
            if c0 != r0:
                candidates.update_columns(tile, column_mins, c0, r0)

    run_in_workers(tasks, process, n_workers, lambda: _TileSpace(dists, side * side), lambda task: task)
    values, cols = dists.from_scan_rows(candidates.values), dists.from_scan_rows(dists.samples_at(candidates.cols))
    return values, cols, dists.from_scan_rows(candidates.guess)


def _finalize(
    dists: QueryGalleryDistances,
    rows: Tensor,
    values: Tensor,
    cols: Tensor,
    k: int,
    n_exact: Optional[int] = None,
    relevance: Optional[Tuple[Tensor, Tensor]] = None,
    guess: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Certify the candidates and select the exact top-k. Returns (distances, indices, certified) for ``rows``.

    ``guess`` ``[n]``: galleries were also dropped for being above it (``_Candidates``); a query is certified only
    if they could not be in its exact top k either.

    ``values`` ``[n, kk]`` are sorted in every row (``_Candidates`` keeps them so). Only the candidates within
    the error slack of the k-th GEMM value are recomputed exactly; with ``n_exact < k`` (default ``k``) only
    those among them whose order is not settled by the GEMM values (gaps of at most the slack: "groups", see
    the module docstring) or that land in the first ``n_exact`` columns, whose distances are returned exact;
    the distances of the later columns are NaN. With ``relevance`` (``exact_knn``'s argument) a group that
    starts after the first ``n_exact`` columns is ordered exactly only if it mixes relevant and irrelevant items.
    """
    n_exact = k if n_exact is None else min(n_exact, k)
    n_galleries = dists.n_galleries
    values = values.double()
    t = values[:, k - 1]
    slack = dists.candidate_slack(rows).to(values.device)
    threshold = t + slack
    all_kept = values.shape[1] >= n_galleries
    certified = torch.isfinite(t) & ((values[:, -1] > threshold) | all_kept)
    if guess is not None:
        certified &= guess.to(values.device).double() >= threshold
    needed = (values <= threshold[:, None]) & (cols >= 0)
    group = None
    if n_exact < k:
        # a gap above the slack between neighbours in GEMM order settles their exact order
        gap = values[:, 1:] - values[:, :-1] > slack[:, None]
        starts = torch.cat([torch.ones_like(gap[:, :1]), gap], dim=1)  # [n, kk]: a group starts here
        ends = torch.cat([gap, torch.ones_like(gap[:, :1])], dim=1)
        position = torch.arange(values.shape[1], device=values.device).expand_as(values)
        group = starts.cumsum(dim=1)
        group_start = torch.where(starts, position, torch.zeros_like(position)).cummax(dim=1).values
        shared = ~(starts & ends) & (group_start < k)  # in a group of several items that reaches the top k
        if relevance is not None:
            shared &= (group_start < n_exact) | _mixed_groups(group, _relevant(relevance, rows, cols))
        needed &= shared | (position < n_exact)
    r, j = needed.nonzero(as_tuple=True)
    dist = torch.full(cols.shape, float("inf"), dtype=dists.out_dtype, device=cols.device)
    dist[r, j] = dists.exact_distances(rows[r], cols[r, j])
    cols = torch.where(cols < 0, torch.full_like(cols, n_galleries), cols)
    # groups in GEMM order, (exact distance, index) inside a group (without groups: the exact order)
    out_d, out_i = sort_by_value_then_index(dist, cols, k, group)
    out_d[:, n_exact:] = float("nan")
    return out_d, out_i, certified


def _relevant(relevance: Tuple[Tensor, Tensor], rows: Tensor, cols: Tensor) -> Tensor:
    """``[n, kk]``: gallery ``cols[i, j]`` has the label of query ``rows[i]`` (False for the ``-1`` padding)."""
    query_labels, gallery_labels = relevance
    same = gallery_labels[cols.clamp_min(0)] == query_labels[rows][:, None]
    return same & (cols >= 0)


def _mixed_groups(group: Tensor, relevant: Tensor) -> Tensor:
    """``[n, kk]``: the item's group (``group``: ids from 1, ascending in a row) holds relevant and irrelevant items."""
    n, width = group.shape
    ids = (group + torch.arange(n, device=group.device)[:, None] * (width + 1)).flatten()
    n_relevant = torch.zeros(n * (width + 1), dtype=torch.long, device=group.device)
    n_relevant.scatter_add_(0, ids, relevant.flatten().long())
    size = torch.bincount(ids, minlength=n * (width + 1))
    relevant_in_group = n_relevant.index_select(0, ids)
    return ((relevant_in_group > 0) & (relevant_in_group < size.index_select(0, ids))).view(n, width)


def _finalize_in_chunks(
    dists: QueryGalleryDistances,
    rows: Tensor,
    values: Tensor,
    cols: Tensor,
    k: int,
    n_exact: int,
    relevance: Optional[Tuple[Tensor, Tensor]] = None,
    guess: Optional[Tensor] = None,
) -> List[Tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``_finalize`` of the queries ``rows`` chunk by chunk, the chunks spread over worker threads on the CPU.

    Returns ``(rows, distances, indices, certified)`` per chunk, in order.
    """
    step = max(1, min(EXACT_BUDGET // max(1, values.shape[1]), FINALIZE_ROWS))
    starts = range(0, len(rows), step)
    n_workers = cpu_workers(len(starts), dists.device, values.numel(), MIN_PARALLEL_PAIRS // 64)

    def finalize(r0: int, _: None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        chunk = slice(r0, r0 + step)
        with _bookkeeping(n_workers):
            part = None if guess is None else guess[chunk]
            found = _finalize(dists, rows[chunk], values[chunk], cols[chunk], k, n_exact, relevance, part)
            return (rows[chunk], *found)

    return run_in_workers(starts, finalize, n_workers, lambda: None)


def _best_of_shards(
    shard: Shard, values: Tensor, cols: Tensor, guess: Tensor, start: int, stop: int, kk: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """The ``kk`` best candidates of the queries ``start:stop`` among those every process found in its tiles.

    Every pair lies in one tile only, so the processes' candidates of a query are distinct galleries, and the
    ``kk`` smallest GEMM values of their union are those of the whole gallery (ties at the last place may be
    cut either way: ``_finalize``'s check makes the excluded ones harmless). Each process guessed on its own
    first tiles: the smallest guess bounds what any of them dropped.
    """
    parts = shard.gather((values.cpu(), cols.cpu().int(), guess.cpu()))
    values = torch.cat([part[0][start:stop] for part in parts], dim=1).to(values.device)
    cols = torch.cat([part[1][start:stop] for part in parts], dim=1).to(cols.device).long()
    guess = torch.stack([part[2][start:stop] for part in parts]).amin(dim=0).to(guess.device)
    best = torch.topk(values, kk, dim=1, largest=False, sorted=True).indices  # ascending, as _finalize expects
    return values.gather(1, best), cols.gather(1, best), guess


def _brute_force(dists: QueryGalleryDistances, rows: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Exact top-k against the whole gallery (used for the rare queries that could not be certified)."""
    out_d, out_i = [], []
    step = max(1, EXACT_BUDGET // max(1, dists.n_galleries))
    all_cols = torch.arange(dists.n_galleries, device=dists.device)
    for r0 in range(0, len(rows), step):
        chunk = rows[r0 : r0 + step]
        cols = all_cols.expand(len(chunk), -1)
        r = chunk.repeat_interleave(dists.n_galleries)
        d, i = sort_by_value_then_index(dists.exact_distances(r, cols.reshape(-1)).view(cols.shape), cols, k)
        out_d.append(d)
        out_i.append(i)
    return torch.cat(out_d), torch.cat(out_i)


def exact_knn(
    queries: Tensor,
    galleries: Tensor,
    k: int,
    query_ids: Optional[Tensor] = None,
    gallery_ids: Optional[Tensor] = None,
    extra: Optional[int] = None,
    tile_size: Optional[int] = None,
    screening: Union[None, bool, str] = None,
    prepared: Optional[PreparedGallery] = None,
    shard: Optional[Shard] = None,
    n_exact_distances: Optional[int] = None,
    relevance: Optional[Tuple[Tensor, Tensor]] = None,
) -> KNNResult:
    """Exact ``k`` nearest galleries of every query (Euclidean), in bounded memory.

    Args:
        queries: ``[Q, D]`` embeddings.
        galleries: ``[G, D]`` embeddings. Passing the same tensor object as ``queries`` (and the same ids
            object) enables the symmetric mode that computes only half of the distances.
        k: the number of neighbours, ``1 <= k <= G``.
        query_ids: optional ``[Q]`` sample ids; a gallery item with the same id as the query is excluded
            (distance ``+inf``, placed after all real neighbours).
        gallery_ids: ``[G]`` sample ids of the galleries (required with ``query_ids``).
        extra: candidates kept beyond ``k`` for the exactness check (default ``max(8, k // 4)``).
        tile_size: square tiles of this size instead of the default tiling (``2^24`` values per tile, up to
            ``2^15`` galleries wide; ``4096 x 4096`` in the symmetric mode). Memory is about one tile per worker
            thread (on the CPU, one per torch thread, at most 4; 64 MB each by default).
        screening: screen the candidates with a bfloat16 GEMM (``True`` / ``"on"``), never (``False`` /
            ``"off"``), or ``"auto"``: where the device does bfloat16 GEMMs fast (see ``screening_dtype``).
            Default: the ``OML_KNN_SCREENING`` environment variable, else ``"auto"``. The results are the
            same bit for bit either way: only the time differs.
        prepared: a ``PreparedGallery(galleries, ...)`` kept between calls (``SearchIndex`` keeps one, chosen by
            ``prepared_gallery_for``), so that the gallery operand is not rebuilt by every search. Under
            ``"auto"`` screening its dtype decides (screened if it is a low-precision operand); with screening
            forced on or off it is ignored unless it was made from ``galleries`` in the dtypes forced.
        shard: split the work over the processes of a group (``oml.ddp.sharding.Shard.current()``; every process
            calls ``exact_knn`` with the same inputs): the results of the shard's share of the queries
            (``Shard.bounds(Q)``) are returned. In the symmetric mode the processes share the tiles of the
            upper triangle and exchange their candidates once (``[Q, k + extra]`` values and indices), so each
            computes ``1 / world_size`` of half of the distances; otherwise each searches its queries only.
            The results are those of one process bit for bit.
        n_exact_distances: return exact distances in the first ``n_exact_distances`` columns only (default: all
            ``k``); the later columns' distances are NaN. The indices are the same in every column either way
            (the exact order), but fewer distances are recomputed: most of the later items are ordered by their
            GEMM values alone (see the module docstring). For callers that need the exact ranking of many
            neighbours and the distances of a few (MAP@R with large R, for instance).
        relevance: ``(query_labels [Q], gallery_labels [G])`` for callers that need, after the first
            ``n_exact_distances`` columns, only which items are relevant (the query's label): there, items that
            the GEMM values cannot order (within its error of each other) are ordered exactly only if some are
            relevant and some not; otherwise they come by gallery index, and no exact distance is computed for
            them. The relevance of every column (hence MAP@R, R-precision, MRR, CMC, precision) is that of the
            exact order; the indices of such a column may be another item of the same relevance.

    Returns:
        ``KNNResult(distances [Q, k], indices [Q, k])``, sorted by distance, ties by gallery index.
        Distances are float32 (float64 if an input is float64) and exact (see the module docstring), NaN in the
        columns from ``n_exact_distances`` on.

    >>> g = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 1.0]])
    >>> exact_knn(torch.tensor([[0.0, 0.0]]), g, k=3)
    KNNResult(distances=tensor([[0., 1., 1.]]), indices=tensor([[0, 2, 3]]))
    >>> ids = torch.arange(4)
    >>> exact_knn(g, g, k=1, query_ids=ids, gallery_ids=ids).indices.flatten()  # the item itself is excluded
    tensor([2, 3, 0, 0])
    """
    compute_dtype = distance_dtype(queries, galleries)
    if (
        prepared is not None
        and screening_is_auto(screening)
        and prepared.fits(galleries, compute_dtype, prepared.tile_dtype)
    ):
        # whoever chose this operand (prepared_gallery_for) decided the screening: it is not decided again
        screen_dtype = None if prepared.tile_dtype == compute_dtype else prepared.tile_dtype
    else:
        screen_dtype = screening_dtype(queries, galleries, screening)

    def distances(screen: Optional[torch.dtype]) -> QueryGalleryDistances:
        # the symmetric scan visits the samples in a random order: its first tiles guess the bounds
        return QueryGalleryDistances(queries, galleries, query_ids, gallery_ids, screen, prepared, random_order=True)

    dists = distances(screen_dtype)
    n_galleries = dists.n_galleries
    if n_galleries == 0:
        raise ValueError("k must be at most the number of galleries, but the gallery is empty.")
    k = check_int(k, "k", minimum=1, maximum=n_galleries)
    if relevance is not None:
        if len(relevance) != 2 or len(relevance[0]) != dists.n_queries or len(relevance[1]) != n_galleries:
            raise ValueError(
                f"relevance must be (query_labels [{dists.n_queries}], gallery_labels [{n_galleries}]), got "
                f"lengths {[len(labels) for labels in relevance]}."
            )
        relevance = (relevance[0].to(dists.device), relevance[1].to(dists.device))
    n_exact = k if n_exact_distances is None else check_int(n_exact_distances, "n_exact_distances", minimum=0)
    if tile_size is not None and tile_size < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}.")
    width = tile_size or min(n_galleries, MAX_TILE_WIDTH)
    height = tile_size or max(1, TILE_ELEMENTS // width)
    extra = max(8, k // 4) if extra is None else extra
    kk = min(n_galleries, k + extra)
    if screen_dtype is not None and screening_is_auto(screening) and not _screening_certifies(dists, k, kk):
        dists = distances(None)
    shared_tiles = dists.symmetric and shard is not None and not shard.is_single
    if shared_tiles:
        # the processes' candidates are compared with each other: one GEMM precision for all (float32 if any
        # process does not screen; a process that does not screen has nothing to rebuild)
        screened = shard.gather(dists.tile_dtype != dists.out_dtype)  # type: ignore[union-attr]
        if screened[shard.rank] and not all(screened):  # type: ignore[union-attr]
            dists = distances(None)

    start, stop = (0, dists.n_queries) if shard is None else shard.bounds(dists.n_queries)
    out_d = torch.empty(stop - start, k, dtype=dists.out_dtype, device=dists.device)
    out_i = torch.empty(stop - start, k, dtype=torch.long, device=dists.device)
    pending = torch.arange(start, stop, device=dists.device)
    guess: Optional[Tensor] = None  # what the symmetric scan's guesses dropped (see _Candidates)
    if shared_tiles:
        values, cols, guess = _scan_symmetric(dists, kk, tile_size or SYMMETRIC_TILE_SIZE, shard)
        values, cols, guess = _best_of_shards(shard, values, cols, guess, start, stop, kk)  # type: ignore[arg-type]
    elif dists.symmetric and len(pending) == dists.n_queries:
        values, cols, guess = _scan_symmetric(dists, kk, tile_size or SYMMETRIC_TILE_SIZE)
    else:
        values, cols = _scan(dists, pending, kk, height, width)

    while len(pending):
        failed = []
        for rows, d, i, ok in _finalize_in_chunks(dists, pending, values, cols, k, n_exact, relevance, guess):
            out_d[rows[ok] - start], out_i[rows[ok] - start] = d[ok], i[ok]
            failed.append(rows[~ok])
        pending, guess = torch.cat(failed), None  # searched again without guesses
        if not len(pending):
            break
        if dists.tile_dtype != dists.out_dtype:
            # the low-precision bound was too loose for these queries: the float32 GEMM decides, same kk
            dists = distances(None)
            values, cols = _scan(dists, pending, kk, height, width)
            continue
        kk *= 4
        if kk >= n_galleries:
            out_d[pending - start], out_i[pending - start] = _brute_force(dists, pending, k)
            out_d[pending - start, n_exact:] = float("nan")
            break
        values, cols = _scan(dists, pending, kk, height, width)
    return KNNResult(out_d, out_i)


def prepared_gallery_for(
    queries: Tensor,
    galleries: Tensor,
    screening: Union[None, bool, str] = None,
    kept: Optional[PreparedGallery] = None,
    parts: Optional[Dict[str, Tensor]] = None,
) -> PreparedGallery:
    """The gallery operand that ``exact_knn(queries, galleries, screening=screening)`` starts with.

    The one place where a caller that keeps operands between searches (``SearchIndex``) learns which one a
    search needs: ``kept`` if it fits, else one restored from ``parts`` (the ``center``, ``gallery_aug`` and
    ``sq_norms`` of an earlier operand of these galleries, e.g. read from a file) if they are in the dtypes
    this search uses, else a new one. Pass the result to ``exact_knn(..., prepared=...)``. The parts are trusted
    to come from these galleries (the caller checks their shapes).
    """
    screen_dtype = screening_dtype(queries, galleries, screening)
    compute_dtype = distance_dtype(queries, galleries)
    tile_dtype = screen_dtype or compute_dtype
    if kept is not None and kept.fits(galleries, compute_dtype, tile_dtype):
        return kept
    if parts is None or parts["gallery_aug"].dtype != tile_dtype or parts["center"].dtype != compute_dtype:
        return PreparedGallery(galleries, screen_dtype, compute_dtype)
    return PreparedGallery.from_parts(galleries, parts)


__all__ = [
    "GUESS_FAILURES",
    "KNNResult",
    "PreparedGallery",
    "QueryGalleryDistances",
    "exact_knn",
    "exclusion_keys",
    "first_tile_rank",
    "matmul_unit_roundoff",
    "prepared_gallery_for",
    "random_scan_order",
    "screening_dtype",
    "screening_error_factor",
]
