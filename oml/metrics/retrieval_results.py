"""``RetrievalResults``: every query's nearest gallery items and all that is needed to score them.

One object serves every evaluation protocol, exactly and in bounded memory (no query x gallery matrix):

* one table with ``is_query`` / ``is_gallery`` flags (OML 0.4.4's protocol): ``from_embeddings``;
* separate query and gallery sets (catalogue vs user photos, text vs image): ``from_embeddings_qg``;
* the results of a ``SearchIndex`` (``oml.retrieval.index``): ``from_search``;
* queries without any relevant gallery item (distractors, new products): scored as misses (0 for every
  metric), counted in ``n_queries_without_match`` and reported with a warning, never dropped;
* sequences (re-id: the query's own camera / tracklet): gallery items of the query's sequence are ignored
  like the query itself.

``EmbeddingMetrics`` builds one per epoch (``EmbeddingMetrics.retrieval_results``), as OML 4.0 does.
The results hold each query's first ``W`` retrieved items, ``W = max(asked k, largest R)`` when the ranking
metrics (MAP@R, R-precision, MRR) are wanted, ``R`` being a query's number of relevant gallery items; the
retrieval runs in query chunks when ``Q x W`` would be large, and only the first ``max(k)`` columns are kept.

In a process group (``EmbeddingMetricsDDP``), pass ``shard=Shard.current()``: each process searches its
contiguous share of the queries against the whole gallery, the per-query results are gathered, and FNMR@FMR's
passes are split the same way; every process ends with the one-process results, bit for bit (the distances are
exact, so they do not depend on how the work is split).
"""

import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from oml.ddp.sharding import Shard
from oml.ddp.utils import process_locally
from oml.functional.clustering import CLUSTERING_METRICS, calc_clustering_metrics
from oml.functional.knn import exact_knn, exclusion_keys
from oml.functional.metrics import (
    RANKING_METRICS,
    TMetricsDict,
    calc_fnmr_at_fmr_by_embeddings,
    calc_map_at_r,
    calc_mrr,
    calc_r_precision,
    calc_retrieval_metrics_on_topk,
    calc_topological_metrics,
    reduce_metrics,
    warn_about_queries_without_match,
)
from oml.metrics.plotting import plot_retrieval_rows
from oml.utils.checks import check_bool_vector, check_embeddings, check_in_range, check_ints
from oml.utils.labels import encode_labels
from oml.utils.misc_torch import crc32_of_tensors

RETRIEVAL_BUDGET = 2**24  # (query, neighbour) slots retrieved at once; larger jobs run in query chunks
OVERALL = "OVERALL"
N_WITHOUT_MATCH_KEY = "n_queries_without_match"

#: ``search(query_positions, k) -> (distances [q, k], gallery positions [q, k])``
TSearch = Callable[[Tensor, int], Tuple[Tensor, Tensor]]
#: ``rerank(query_positions, distances, gallery_positions) -> (distances, gallery_positions)``
TRerank = Callable[[Tensor, Tensor, Tensor], Tuple[Tensor, Tensor]]


def _as_vector(values: Any, name: str, n: int) -> Any:
    if values is None:
        return None
    length = len(values)
    if length != n:
        raise ValueError(f"{name} has {length} values, expected {n} (one per sample).")
    return values


@dataclass(eq=False)
class RetrievalResults:
    """Nearest galleries of every query (exact, ties by gallery index) with their relevance.

    Build it with ``from_embeddings``, ``from_embeddings_qg`` or ``from_search``; get metrics with ``metrics``.

    Attributes:
        distances: ``[Q, W]`` distances of the retrieved items, ascending (after re-ranking, if any).
        retrieved: ``[Q, W]`` positions of the retrieved items among the galleries.
        gt_tops: ``[Q, W]`` whether each retrieved item is relevant (same label, not excluded).
        n_gt: ``[Q]`` number of relevant gallery items of each query (0 for a distractor).
        ranking: per-query MAP@R / R-precision / MRR (``[Q]`` tensors), computed at build time.
        queries: ``[Q, D]`` query embeddings.
        galleries: ``[G, D]`` gallery embeddings.
        query_labels: ``[Q]`` label codes of the queries (shared with the galleries).
        gallery_labels: ``[G]`` label codes of the galleries.
        query_keys: ``[Q]`` exclusion keys (same sample / same sequence) or None.
        gallery_keys: ``[G]`` exclusion keys or None.
        query_ids: ``[Q]`` ids of the queries in the caller's data (e.g. dataset rows).
        gallery_ids: ``[G]`` ids of the galleries in the caller's data.
        query_categories: ``[Q]`` categories of the queries, or None.
        samples: embeddings of all samples of one table (for PCF; None for separate sets, whose PCF is taken on
            queries and galleries together), and ``sample_categories`` their categories.
    """

    distances: Tensor
    retrieved: Tensor
    gt_tops: Tensor
    n_gt: Tensor
    queries: Tensor
    galleries: Tensor
    query_labels: Tensor
    gallery_labels: Tensor
    query_keys: Optional[Tensor]
    gallery_keys: Optional[Tensor]
    query_ids: Tensor
    gallery_ids: Tensor
    ranking: Dict[str, Tensor] = field(default_factory=dict)
    query_categories: Optional[np.ndarray] = None
    samples: Optional[Tensor] = None
    sample_categories: Optional[np.ndarray] = None
    width: int = 0

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def from_embeddings(
        cls,
        embeddings: Tensor,
        labels: Sequence[Any],
        is_query: Union[Tensor, Sequence[bool]],
        is_gallery: Union[Tensor, Sequence[bool]],
        top_k: int = 5,
        sequences: Optional[Sequence[Any]] = None,
        categories: Optional[Sequence[Any]] = None,
        ranking_metrics: Sequence[str] = RANKING_METRICS,
        rerank: Optional[TRerank] = None,
        search: Optional[TSearch] = None,
        shard: Optional[Shard] = None,
    ) -> "RetrievalResults":
        """Results of a table of samples flagged as queries and / or galleries (OML's validation protocol).

        A sample that is both a query and a gallery item is never retrieved for itself; with ``sequences``,
        no gallery item of the query's sequence is.

        Args:
            embeddings: ``[N, D]`` embeddings of all samples.
            labels: ``[N]`` labels (any hashable values).
            is_query: ``[N]`` bool flags.
            is_gallery: ``[N]`` bool flags.
            top_k: items kept per query (the largest k of the metrics you want).
            sequences: optional ``[N]`` sequence ids (None / NaN: no sequence).
            categories: optional ``[N]`` categories (metrics per category of the queries).
            ranking_metrics: which of MAP@R, R-precision, MRR to prepare (they widen the retrieval to R).
            rerank: optional re-ranking of each query block (``EmbeddingMetrics`` passes its postprocessor).
            search: optional replacement of the exact search (query positions, k) -> (distances, positions).
            shard: in a process group, every process passes ``Shard.current()`` (``oml.ddp.sharding``) and the
                same inputs: each searches (and re-ranks) its share of the queries against the whole gallery and
                the per-query results are gathered, so every process gets the one-process results bit for bit.

        >>> emb = torch.tensor([[0.0], [0.1], [1.0], [1.2]])
        >>> rr = RetrievalResults.from_embeddings(emb, [0, 1, 0, 1], [True] * 4, [True] * 4, top_k=1)
        >>> rr.metrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(), ranking_metrics=())
        {'OVERALL': {'cmc': {1: tensor(0.)}}}
        """
        embeddings = check_embeddings(embeddings, "embeddings")
        n = len(embeddings)
        is_query = check_bool_vector(is_query, "is_query", n)
        is_gallery = check_bool_vector(is_gallery, "is_gallery", n)
        _, (codes,) = encode_labels(_as_vector(labels, "labels", n))
        query_rows, gallery_rows = is_query.nonzero().flatten(), is_gallery.nonzero().flatten()
        if len(query_rows) == 0 or len(gallery_rows) == 0:
            raise ValueError(
                f"Empty query or gallery set: {len(query_rows)} queries and {len(gallery_rows)} gallery items "
                f"among {n} samples (check is_query and is_gallery)."
            )
        keys = exclusion_keys(torch.arange(n), _as_vector(sequences, "sequences", n))
        same_set = torch.equal(is_query, is_gallery)
        if same_set:  # one tensor object for both sides: the kernel computes half of the distances
            queries = galleries = embeddings if len(query_rows) == n else embeddings[query_rows]
            query_keys = gallery_keys = keys[query_rows]
        else:
            queries, galleries = embeddings[query_rows], embeddings[gallery_rows]
            query_keys, gallery_keys = keys[query_rows], keys[gallery_rows]
        categories = None if categories is None else np.asarray(_as_vector(categories, "categories", n))
        return cls._build(
            queries=queries,
            galleries=galleries,
            query_labels=codes[query_rows],
            gallery_labels=codes[gallery_rows],
            query_keys=query_keys,
            gallery_keys=gallery_keys,
            query_ids=query_rows,
            gallery_ids=gallery_rows,
            top_k=top_k,
            ranking_metrics=ranking_metrics,
            query_categories=None if categories is None else categories[query_rows.numpy()],
            samples=embeddings,
            sample_categories=categories,
            rerank=rerank,
            search=search,
            shard=shard,
        )

    @classmethod
    def from_embeddings_qg(
        cls,
        query_embeddings: Tensor,
        gallery_embeddings: Tensor,
        query_labels: Sequence[Any],
        gallery_labels: Sequence[Any],
        top_k: int = 5,
        query_ids: Optional[Sequence[int]] = None,
        gallery_ids: Optional[Sequence[int]] = None,
        query_sequences: Optional[Sequence[Any]] = None,
        gallery_sequences: Optional[Sequence[Any]] = None,
        query_categories: Optional[Sequence[Any]] = None,
        ranking_metrics: Sequence[str] = RANKING_METRICS,
        shard: Optional[Shard] = None,
    ) -> "RetrievalResults":
        """Results of separate query and gallery sets (e.g. user photos against a catalogue).

        Args:
            query_embeddings: ``[Q, D]``.
            gallery_embeddings: ``[G, D]``.
            query_labels: ``[Q]`` labels (any hashable values, compared with the gallery labels).
            gallery_labels: ``[G]`` labels.
            top_k: items kept per query.
            query_ids: optional ``[Q]`` integer sample ids; a gallery item with the same id is the same sample
                and is not retrieved for it (default: the two sets share no sample).
            gallery_ids: optional ``[G]`` integer sample ids (given together with ``query_ids``).
            query_sequences: optional ``[Q]`` sequence ids (gallery items of the query's sequence are ignored).
            gallery_sequences: optional ``[G]`` sequence ids.
            query_categories: optional ``[Q]`` categories (metrics per category).
            ranking_metrics: which of MAP@R, R-precision, MRR to prepare.
            shard: split the search over a process group (see ``from_embeddings``).

        >>> rr = RetrievalResults.from_embeddings_qg(
        ...     torch.tensor([[0.0], [1.0]]), torch.tensor([[0.1], [0.9], [5.0]]), ["a", "b"], ["a", "b", "a"], top_k=2
        ... )
        >>> rr.retrieved.tolist(), rr.n_gt.tolist()
        ([[0, 1], [1, 0]], [2, 1])
        """
        queries = check_embeddings(query_embeddings, "query_embeddings")
        galleries = check_embeddings(gallery_embeddings, "gallery_embeddings", dim=queries.shape[1])
        n_q, n_g = len(queries), len(galleries)
        if n_q == 0 or n_g == 0:
            raise ValueError(f"Empty query or gallery set: {n_q} queries and {n_g} gallery items.")
        _, (q_codes, g_codes) = encode_labels(
            _as_vector(query_labels, "query_labels", n_q), _as_vector(gallery_labels, "gallery_labels", n_g)
        )
        if (query_ids is None) != (gallery_ids is None):
            raise ValueError("query_ids and gallery_ids must be given together.")
        if query_ids is None:
            q_ids, g_ids = torch.arange(n_q), torch.arange(n_g)
            sample_ids = torch.arange(n_q + n_g)
        else:
            q_ids = torch.as_tensor(_as_vector(query_ids, "query_ids", n_q)).long()
            g_ids = torch.as_tensor(_as_vector(gallery_ids, "gallery_ids", n_g)).long()
            sample_ids = torch.cat([q_ids, g_ids])
        sequences = None
        if query_sequences is not None or gallery_sequences is not None:
            q_seq = (
                [None] * n_q if query_sequences is None else list(_as_vector(query_sequences, "query_sequences", n_q))
            )
            g_seq = (
                [None] * n_g
                if gallery_sequences is None
                else list(_as_vector(gallery_sequences, "gallery_sequences", n_g))
            )
            sequences = q_seq + g_seq
        keys = exclusion_keys(sample_ids, sequences)
        query_categories = None if query_categories is None else np.asarray(query_categories)
        _as_vector(query_categories, "query_categories", n_q)
        return cls._build(
            queries=queries,
            galleries=galleries,
            query_labels=q_codes,
            gallery_labels=g_codes,
            query_keys=keys[:n_q],
            gallery_keys=keys[n_q:],
            query_ids=q_ids,
            gallery_ids=g_ids,
            top_k=top_k,
            ranking_metrics=ranking_metrics,
            query_categories=query_categories,
            samples=None,  # both sets, concatenated only if PCF asks for them
            sample_categories=None,
            shard=shard,
        )

    @classmethod
    def from_search(
        cls,
        index: Any,
        queries: Tensor,
        query_labels: Sequence[Any],
        top_k: int = 5,
        query_categories: Optional[Sequence[Any]] = None,
        ranking_metrics: Sequence[str] = RANKING_METRICS,
    ) -> "RetrievalResults":
        """Results of ``index.search`` (a labelled ``oml.retrieval.index.SearchIndex``) for labelled queries.

        The index's backend does the search (exact by default; a Faiss backend gives its approximate
        neighbours, re-scored exactly), so the metrics measure what users of that index will get.
        """
        if getattr(index, "labels", None) is None:
            raise ValueError("from_search needs an index with labels: SearchIndex(embeddings, labels=...).")
        queries = check_embeddings(queries, "queries", dim=index.dim, dim_owner="the index")

        def search(positions: Tensor, k: int) -> Tuple[Tensor, Tensor]:
            result = index.search(queries[positions], k)
            return result.distances, result.indices

        _, (q_codes, g_codes) = encode_labels(_as_vector(query_labels, "query_labels", len(queries)), index.labels)
        query_categories = None if query_categories is None else np.asarray(query_categories)
        _as_vector(query_categories, "query_categories", len(queries))
        return cls._build(
            queries=queries,
            galleries=index.embeddings,
            query_labels=q_codes,
            gallery_labels=g_codes,
            query_keys=None,
            gallery_keys=None,
            query_ids=torch.arange(len(queries)),
            gallery_ids=torch.arange(len(index)),
            top_k=top_k,
            ranking_metrics=ranking_metrics,
            query_categories=query_categories,
            samples=None,
            sample_categories=None,
            search=search,
        )

    @classmethod
    def _build(
        cls,
        queries: Tensor,
        galleries: Tensor,
        query_labels: Tensor,
        gallery_labels: Tensor,
        query_keys: Optional[Tensor],
        gallery_keys: Optional[Tensor],
        query_ids: Tensor,
        gallery_ids: Tensor,
        top_k: int,
        ranking_metrics: Sequence[str],
        query_categories: Optional[np.ndarray],
        samples: Optional[Tensor],
        sample_categories: Optional[np.ndarray],
        rerank: Optional[TRerank] = None,
        search: Optional[TSearch] = None,
        shard: Optional[Shard] = None,
    ) -> "RetrievalResults":
        check_ints(top_k, "top_k", minimum=0)
        unknown = set(ranking_metrics) - set(RANKING_METRICS)
        if unknown:
            raise ValueError(f"Unknown ranking metrics {sorted(unknown)}; choose from {RANKING_METRICS}.")
        n_queries, n_galleries = len(queries), len(galleries)
        n_gt = count_relevant(query_labels, gallery_labels, query_keys, gallery_keys)
        keep = min(int(top_k), n_galleries)
        width = max(keep, int(n_gt.max()) if ranking_metrics and n_queries else 0)
        width = min(width, n_galleries)

        shard = shard or Shard()
        if not shard.is_single:
            sides = (
                (queries, query_labels) if queries is galleries else (queries, galleries, query_labels, gallery_labels)
            )
            _check_same_inputs(shard, *sides)
        start, stop = shard.bounds(n_queries)
        # the same decision on every process (it may start a collective): the largest share fits in one chunk
        one_chunk = -(-n_queries // shard.world_size) * max(width, 1) <= RETRIEVAL_BUDGET
        # without a re-ranker only the relevance of the columns after the kept ones matters (see exact_knn)
        relevance = (query_labels, gallery_labels) if rerank is None else None
        if search is None and width and one_chunk and not shard.is_single and queries is galleries:
            # one table: the processes share the tiles of the symmetric mode (half of the distances)
            found = exact_knn(
                queries,
                galleries,
                width,
                query_keys,
                gallery_keys,
                shard=shard,
                n_exact_distances=keep,
                relevance=relevance,
            )
            search = _precomputed(found, start)
        elif search is None:
            search = _exact_search(queries, galleries, query_keys, gallery_keys, keep, relevance)
        distances = torch.zeros(
            n_queries, keep, dtype=torch.float64 if queries.dtype == torch.float64 else torch.float32
        )
        retrieved = torch.zeros(n_queries, keep, dtype=torch.long)
        gt_tops = torch.zeros(n_queries, keep, dtype=torch.bool)
        ranking = {name: torch.zeros(n_queries) for name in RANKING_METRICS if name in ranking_metrics}
        step = stop - start if one_chunk else RETRIEVAL_BUDGET // max(width, 1)
        for q0 in range(start, stop, max(step, 1)):
            positions = torch.arange(q0, min(stop, q0 + step))
            if width:
                d, i = search(positions, width)
                d, i = d.cpu(), i.cpu()
                if rerank is not None:
                    # a sharded rerank scores its own queries: a DDP-aware postprocessor must not split them again
                    with nullcontext() if shard.is_single else process_locally():
                        d, i = rerank(positions, d, i)
            else:
                d, i = torch.zeros(len(positions), 0), torch.zeros(len(positions), 0, dtype=torch.long)
            relevant = _relevance(i, positions, query_labels, gallery_labels, query_keys, gallery_keys)
            distances[positions], retrieved[positions], gt_tops[positions] = (
                d[:, :keep],
                i[:, :keep],
                relevant[:, :keep],
            )
            block_n_gt = n_gt[positions]
            for name in ranking:
                if name == "mrr":
                    ranking[name][positions] = calc_mrr(relevant)
                else:
                    function = calc_map_at_r if name == "map@r" else calc_r_precision
                    ranking[name][positions] = function(relevant, block_n_gt)
        if not shard.is_single:  # every rank filled its share: gather the shares in rank (= query) order
            share = slice(start, stop)
            parts = shard.gather(
                (distances[share], retrieved[share], gt_tops[share], {n: v[share] for n, v in ranking.items()})
            )
            distances, retrieved, gt_tops = (torch.cat([part[i] for part in parts]) for i in range(3))
            ranking = {name: torch.cat([part[3][name] for part in parts]) for name in ranking}
        return cls(
            distances=distances,
            retrieved=retrieved,
            gt_tops=gt_tops,
            n_gt=n_gt,
            queries=queries,
            galleries=galleries,
            query_labels=query_labels,
            gallery_labels=gallery_labels,
            query_keys=query_keys,
            gallery_keys=gallery_keys,
            query_ids=query_ids,
            gallery_ids=gallery_ids,
            ranking=ranking,
            query_categories=query_categories,
            samples=samples,
            sample_categories=sample_categories,
            width=width,
        )

    # ------------------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self.queries)

    @property
    def n_galleries(self) -> int:
        return len(self.galleries)

    @property
    def n_queries_without_match(self) -> int:
        """Queries without any relevant gallery item (distractors)."""
        return int((self.n_gt == 0).sum())

    def _groups(self, by_category: bool) -> List[Tuple[Any, Tensor, Optional[Tensor]]]:
        """``(name, query mask, sample mask)`` for OVERALL and, if asked, every query category."""
        groups: List[Tuple[Any, Tensor, Optional[Tensor]]] = [(OVERALL, torch.ones(len(self), dtype=torch.bool), None)]
        if by_category and self.query_categories is not None:
            for category in np.unique(self.query_categories):
                key = category.item() if isinstance(category, np.generic) else category
                in_samples = None
                if self.sample_categories is not None:
                    in_samples = torch.from_numpy(np.asarray(self.sample_categories == category))
                groups.append((key, torch.from_numpy(np.asarray(self.query_categories == category)), in_samples))
        return groups

    # ------------------------------------------------------------------------------------------- metrics
    def metrics(
        self,
        cmc_top_k: Sequence[int] = (5,),
        precision_top_k: Sequence[int] = (5,),
        map_top_k: Sequence[int] = (5,),
        ranking_metrics: Optional[Sequence[str]] = None,
        fmr_vals: Sequence[float] = (),
        pcf_variance: Sequence[float] = (),
        clustering_metrics: Sequence[str] = (),
        by_category: bool = True,
        reduce: bool = True,
        seed: int = 0,
        shard: Optional[Shard] = None,
    ) -> Dict[Any, TMetricsDict]:
        """Every metric we have, overall (``"OVERALL"``) and per query category.

        Args:
            cmc_top_k: values of k for CMC@k (at most the ``top_k`` the results were built with).
            precision_top_k: values of k for precision@k.
            map_top_k: values of k for MAP@k.
            ranking_metrics: any of ``"map@r"``, ``"r_precision"``, ``"mrr"`` prepared at build time (default: all
                of those prepared).
            fmr_vals: false match rates for FNMR@FMR (over all query-gallery pairs, bounded memory).
            pcf_variance: shares of variance for the PCF topological metric (on all samples).
            clustering_metrics: any of ``"nmi"``, ``"ami"``: k-means of the queries into as many clusters as
                labels, compared with the labels (opt-in: k-means costs several passes).
            by_category: also per category of the queries.
            reduce: average over queries (else per-query ``[Q]`` tensors for the per-query metrics).
            seed: seed of the k-means initialisation.
            shard: split FNMR@FMR's passes over a process group: every process calls ``metrics`` with
                ``Shard.current()`` (``oml.ddp.sharding``); the results are those of one process, bit for bit.

        Returns:
            ``{"OVERALL": {"cmc": {k: v}, ..., "map@r": v, ...}, <category>: {...}}``; a group with queries
            without any relevant item also has ``"n_queries_without_match"``.
        """
        for name, top_k in (("cmc_top_k", cmc_top_k), ("precision_top_k", precision_top_k), ("map_top_k", map_top_k)):
            ks = check_ints(tuple(top_k), name, allow_empty=True)
            too_wide = [k for k in ks if k > self.gt_tops.shape[1] and self.gt_tops.shape[1] < self.n_galleries]
            if too_wide:
                raise ValueError(
                    f"{name}={tuple(top_k)} asks for more than the {self.gt_tops.shape[1]} items kept per query; "
                    f"build the results with top_k >= {max(too_wide)}."
                )
        ranking_metrics = tuple(self.ranking) if ranking_metrics is None else tuple(ranking_metrics)
        missing = set(ranking_metrics) - set(self.ranking)
        if missing:
            raise ValueError(
                f"{sorted(missing)} were not prepared: build the results with ranking_metrics including them."
            )
        if fmr_vals:
            check_in_range(tuple(fmr_vals), 0, 1, "fmr_vals")
        unknown = set(clustering_metrics) - set(CLUSTERING_METRICS)
        if unknown:
            raise ValueError(f"Unknown clustering metrics {sorted(unknown)}; choose from {CLUSTERING_METRICS}.")
        warn_about_queries_without_match(self.n_gt)

        result: Dict[Any, TMetricsDict] = {}
        for name, in_queries, in_samples in self._groups(by_category):
            with warnings.catch_warnings():
                if name != OVERALL:  # the clipping warning is given once, for OVERALL
                    warnings.filterwarnings("ignore", message=".*clipped to.*")
                group = calc_retrieval_metrics_on_topk(
                    self.gt_tops[in_queries],
                    self.n_gt[in_queries],
                    tuple(cmc_top_k),
                    tuple(precision_top_k),
                    tuple(map_top_k),
                    n_galleries=self.n_galleries,
                    reduce=False,
                )
            for metric in RANKING_METRICS:
                if metric in ranking_metrics:
                    group[metric] = self.ranking[metric][in_queries]  # type: ignore[assignment]
            if fmr_vals:
                group["fnmr@fmr"] = dict(zip(fmr_vals, self._fnmr(in_queries, tuple(fmr_vals), shard)))
            if pcf_variance:
                samples = self._samples(in_queries, in_samples)
                group.update(calc_topological_metrics(samples, tuple(pcf_variance)))
            if clustering_metrics:
                group.update(
                    calc_clustering_metrics(
                        self.queries[in_queries], self.query_labels[in_queries], clustering_metrics, seed=seed
                    )
                )
            n_without = int((self.n_gt[in_queries] == 0).sum())
            if n_without:
                group[N_WITHOUT_MATCH_KEY] = n_without  # type: ignore[assignment]
            result[name] = group
        return reduce_metrics(result) if reduce else result

    def _samples(self, in_queries: Tensor, in_samples: Optional[Tensor]) -> Tensor:
        if in_samples is not None and self.samples is not None:
            return self.samples[in_samples]
        if bool(in_queries.all()):
            if self.samples is not None:
                return self.samples
            return torch.cat([self.queries, self.galleries.to(self.queries.dtype)])  # separate query / gallery sets
        return self.queries[in_queries]

    def _fnmr(self, in_queries: Tensor, fmr_vals: Tuple[float, ...], shard: Optional[Shard]) -> Tensor:
        if bool(in_queries.all()):
            queries, query_keys = self.queries, self.query_keys
        else:
            queries = self.queries[in_queries]
            query_keys = None if self.query_keys is None else self.query_keys[in_queries]
        return calc_fnmr_at_fmr_by_embeddings(
            queries,
            self.galleries,
            self.query_labels[in_queries],
            self.gallery_labels,
            fmr_vals,
            query_ids=query_keys,
            gallery_ids=self.gallery_keys,
            shard=shard,
        )

    # ------------------------------------------------------------------------------------------- viewing
    def plot(
        self,
        query_positions: Sequence[int],
        query_paths: Sequence[Any],
        gallery_paths: Sequence[Any],
        n_instances: int = 5,
        n_gt_to_show: int = 2,
    ) -> Figure:
        """A figure with a row per query: the query, its first ``n_instances`` results (green: relevant, red: not)
        and up to ``n_gt_to_show`` relevant gallery items (the ground truth)."""
        if len(query_paths) != len(self) or len(gallery_paths) != self.n_galleries:
            raise ValueError(
                f"Expected {len(self)} query paths and {self.n_galleries} gallery paths, "
                f"got {len(query_paths)} and {len(gallery_paths)}."
            )
        queries, retrieved, ground_truth = [], [], []
        for position in query_positions:
            if not 0 <= position < len(self):
                raise ValueError(f"query_positions must be in [0, {len(self)}), got {position}.")
            queries.append((query_paths[position], None))
            row = []
            for j in range(min(n_instances, self.retrieved.shape[1])):
                g = int(self.retrieved[position, j])
                row.append(
                    (gallery_paths[g], None, bool(self.gt_tops[position, j]), float(self.distances[position, j]))
                )
            retrieved.append(row)
            relevant = (self.gallery_labels == self.query_labels[position]).nonzero().flatten()
            if self.query_keys is not None:
                relevant = relevant[self.gallery_keys[relevant] != self.query_keys[position]]
            ground_truth.append([(gallery_paths[int(g)], None) for g in relevant[:n_gt_to_show]])
        return plot_retrieval_rows(queries, retrieved, ground_truth, n_instances, n_gt_to_show)


def count_relevant(
    query_labels: Tensor, gallery_labels: Tensor, query_keys: Optional[Tensor], gallery_keys: Optional[Tensor]
) -> Tensor:
    """``[Q]`` number of gallery items with the query's label and another exclusion key (no Q x G matrix)."""
    n_codes = int(max(query_labels.max(), gallery_labels.max())) + 1 if len(query_labels) and len(gallery_labels) else 1
    per_label = torch.bincount(gallery_labels, minlength=n_codes)
    n_gt = per_label[query_labels] if len(query_labels) else torch.zeros(0, dtype=torch.long)
    if query_keys is None:
        return n_gt
    # subtract the galleries that share the query's label and key: count the galleries' (label, key) pairs
    n_keys = int(max(query_keys.max(), gallery_keys.max())) + 1
    _, (gallery_pairs, query_pairs) = encode_labels(
        gallery_labels * n_keys + gallery_keys, query_labels * n_keys + query_keys
    )
    pair_counts = torch.bincount(gallery_pairs, minlength=int(torch.cat([gallery_pairs, query_pairs]).max()) + 1)
    return n_gt - pair_counts[query_pairs]


def _relevance(
    retrieved: Tensor,
    positions: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    query_keys: Optional[Tensor],
    gallery_keys: Optional[Tensor],
) -> Tensor:
    valid = retrieved >= 0
    safe = retrieved.clamp_min(0)
    relevant = (gallery_labels[safe] == query_labels[positions][:, None]) & valid
    if query_keys is not None:
        relevant &= gallery_keys[safe] != query_keys[positions][:, None]
    return relevant


def _check_same_inputs(shard: Shard, *tensors: Tensor) -> None:
    """Every process of a sharded build must hold the same inputs (one collective: shapes and a CRC-32)."""
    fingerprints = shard.gather((tuple(tuple(t.shape) for t in tensors), crc32_of_tensors(*tensors)))
    if len(set(fingerprints)) > 1:
        raise RuntimeError(
            f"The processes hold different inputs (shapes and CRC-32 per rank: {fingerprints}). A sharded "
            f"evaluation needs the same queries, galleries and labels on every process: gather them first "
            f"(EmbeddingMetricsDDP.sync() does)."
        )


def _precomputed(found: Tuple[Tensor, Tensor], start: int) -> TSearch:
    """The search of the query positions ``start, start + 1, ...`` already done (``found``: distances, indices)."""

    def search(positions: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        rows = positions - start
        return found[0][rows, :k], found[1][rows, :k]

    return search


def _exact_search(
    queries: Tensor,
    galleries: Tensor,
    query_keys: Optional[Tensor],
    gallery_keys: Optional[Tensor],
    n_exact: Optional[int] = None,
    relevance: Optional[Tuple[Tensor, Tensor]] = None,
) -> TSearch:
    """``n_exact``: the leading columns whose distances are kept (the later ones are only ranked);
    ``relevance``: ``(query_labels, gallery_labels)`` when the later columns matter only by relevance."""

    def search(positions: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        if len(positions) == len(queries):  # all queries: keeps the symmetric mode when the sets are one
            subset, keys, labels = queries, query_keys, relevance
        else:
            subset, keys = queries[positions], None if query_keys is None else query_keys[positions]
            labels = None if relevance is None else (relevance[0][positions], relevance[1])
        found = exact_knn(subset, galleries, k, keys, gallery_keys, relevance=labels, n_exact_distances=n_exact)
        return found.distances, found.indices

    return search


__all__ = ["RetrievalResults", "count_relevant", "RETRIEVAL_BUDGET", "N_WITHOUT_MATCH_KEY"]
