"""Retrieval metrics of embeddings accumulated over an epoch (CMC, precision, MAP, FNMR@FMR, PCF) and their plots.

Unlike OML 0.4.4, the dense query x gallery distance matrix is never built on the default path: the exact
top-k of every query comes from ``oml.functional.knn.exact_knn`` (memory ``O(tile + Q x k)``), the number of
relevant galleries of every query is counted from the labels, and FNMR@FMR is computed in bounded memory.
The results are the same as with the dense matrix (ties are broken by the smaller gallery index).
OML's dense attributes ``distance_matrix`` and ``mask_gt`` are kept as lazy properties for compatibility:
they are built (O(Q x G) memory) only if you read them.
"""

import warnings
from pprint import pprint
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from oml.const import (
    EMBEDDINGS_KEY,
    INDEX_KEY,
    IS_GALLERY_KEY,
    IS_QUERY_KEY,
    LABELS_KEY,
    LOG_TOPK_IMAGES_PER_ROW,
    LOG_TOPK_ROWS_PER_METRIC,
    N_GT_SHOW_EMBEDDING_METRICS,
    OVERALL_CATEGORIES_KEY,
    PATHS_KEY,
    X1_KEY,
    X2_KEY,
    Y1_KEY,
    Y2_KEY,
)
from oml.ddp.sharding import Shard
from oml.ddp.utils import is_main_process
from oml.functional.clustering import CLUSTERING_METRICS
from oml.functional.distances import exact_cdist
from oml.functional.knn import exact_knn, exclusion_keys
from oml.functional.metrics import RANKING_METRICS, TMetricsDict, reduce_metrics
from oml.functional.ordering import sort_by_value_then_index, topk_stable
from oml.interfaces.metrics import IMetricDDP, IMetricVisualisable
from oml.interfaces.retrieval import IDistancesPostprocessor
from oml.metrics.accumulation import Accumulator
from oml.metrics.plotting import plot_retrieval_rows
from oml.metrics.retrieval_results import RetrievalResults
from oml.utils.checks import check_bool_vector, check_embeddings, check_in_range, check_ints
from oml.utils.misc import flatten_dict
from oml.utils.misc_torch import drop_duplicates_by_ids

TMetricsDict_ByLabels = Dict[Union[str, int], TMetricsDict]
BBOXES_KEYS = (X1_KEY, Y1_KEY, X2_KEY, Y2_KEY)


def validate_dataset(mask_gt: Tensor, mask_to_ignore: Tensor) -> None:
    """Dense check (OML API): every query needs a relevant gallery item that is not ignored."""
    lonely = ((mask_gt & ~mask_to_ignore).sum(dim=1) == 0).nonzero().flatten()
    if len(lonely):
        raise ValueError(
            f"There are queries without available correct answers in the gallery: {len(lonely)} of "
            f"{len(mask_gt)} (query rows {lonely[:10].tolist()})."
        )


def _as_tensor(values: Any, name: str) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().cpu()
    array = np.asarray(values)
    if array.dtype == object:
        raise TypeError(f"{name} must be numeric, got values like {array.ravel()[:3].tolist()}.")
    return torch.from_numpy(array)


class EmbeddingMetrics(IMetricVisualisable):
    """Accumulates embeddings (with labels and the query/gallery flags) over an epoch and computes retrieval metrics.

    Args:
        embeddings_key: key of the ``[B, D]`` embeddings in the batches.
        labels_key: key of the labels.
        is_query_key: key of the bool flags "the sample is a query".
        is_gallery_key: key of the bool flags "the sample is a gallery item".
        extra_keys: more keys to accumulate (e.g. ``("paths",)`` for the plots, bbox keys).
        cmc_top_k: values of k for CMC@k.
        precision_top_k: values of k for precision@k.
        map_top_k: values of k for MAP@k.
        fmr_vals: false match rates in ``[0, 1]`` for FNMR@FMR (computed in bounded memory; costs three more
            passes over the distances).
        pfc_variance: shares of variance for the PCF topological metric.
        categories_key: if given, the metrics are also computed per category of the queries.
        postprocessor: re-ranks the retrieval results; with ``top_n`` + ``process_top_n`` only each query's top-n
            block is processed, otherwise the dense ``process_by_dict`` is used (O(Q x G) memory).
        metrics_to_exclude_from_visualization: metric names (substrings) not to plot.
        return_only_main_category: return only the ``"OVERALL"`` metrics.
        visualize_only_main_category: plot only the ``"OVERALL"`` metrics.
        verbose: print the metrics (main process only).
        sequence_key: if given, the key of sequence ids: gallery items of the query's sequence are ignored for it,
            like the query itself (re-id protocols; OML 4.0's ``sequence`` column).
        ranking_metrics: any of ``"map@r"``, ``"r_precision"``, ``"mrr"`` (all by default; they widen the
            retrieval to each query's number of relevant items R, computed in bounded memory).
        clustering_metrics: any of ``"nmi"``, ``"ami"`` (opt-in: k-means of the queries, see
            ``oml.functional.clustering``).
        raise_on_queries_without_match: raise if a query has no relevant gallery item (OML 0.4.4's behaviour).
            By default such queries (distractors) are scored as misses: 0 for every retrieval metric, counted in
            ``"n_queries_without_match"`` of the results and reported with a warning.

    After ``compute_metrics``, ``retrieval_results`` holds the ``RetrievalResults`` of the epoch.

    >>> metric = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(2,), pfc_variance=(), verbose=False)
    >>> metric.setup(num_samples=4)
    >>> metric.update_data({
    ...     "embeddings": torch.tensor([[0.0], [0.1], [1.0], [1.2]]),
    ...     "labels": torch.tensor([0, 1, 0, 1]),
    ...     "is_query": torch.tensor([True, True, False, False]),
    ...     "is_gallery": torch.tensor([False, False, True, True]),
    ... })
    >>> metric.compute_metrics()
    {'OVERALL': {'cmc': {1: tensor(0.5000)}, 'map': {2: tensor(0.7500)},
                 'map@r': tensor(0.5000), 'r_precision': tensor(0.5000), 'mrr': tensor(0.7500)}}
    """

    metric_name = ""

    def __init__(
        self,
        embeddings_key: str = EMBEDDINGS_KEY,
        labels_key: str = LABELS_KEY,
        is_query_key: str = IS_QUERY_KEY,
        is_gallery_key: str = IS_GALLERY_KEY,
        extra_keys: Tuple[str, ...] = (),
        cmc_top_k: Tuple[int, ...] = (5,),
        precision_top_k: Tuple[int, ...] = (5,),
        map_top_k: Tuple[int, ...] = (5,),
        fmr_vals: Tuple[float, ...] = (),
        pfc_variance: Tuple[float, ...] = (0.5,),
        categories_key: Optional[str] = None,
        postprocessor: Optional[IDistancesPostprocessor] = None,
        metrics_to_exclude_from_visualization: Iterable[str] = (),
        return_only_main_category: bool = False,
        visualize_only_main_category: bool = True,
        verbose: bool = True,
        sequence_key: Optional[str] = None,
        ranking_metrics: Sequence[str] = RANKING_METRICS,
        clustering_metrics: Sequence[str] = (),
        raise_on_queries_without_match: bool = False,
    ):
        for name, top_k in (("cmc_top_k", cmc_top_k), ("precision_top_k", precision_top_k), ("map_top_k", map_top_k)):
            check_ints(tuple(top_k), name, allow_empty=True)
        if fmr_vals:
            check_in_range(tuple(fmr_vals), 0, 1, "fmr_vals")
        if pfc_variance:
            check_in_range(tuple(pfc_variance), 0, 1, "pfc_variance")
        unknown = (set(ranking_metrics) - set(RANKING_METRICS)) | (set(clustering_metrics) - set(CLUSTERING_METRICS))
        if unknown:
            raise ValueError(
                f"Unknown metrics {sorted(unknown)}: ranking_metrics take {RANKING_METRICS}, "
                f"clustering_metrics take {CLUSTERING_METRICS}."
            )
        if postprocessor is not None and not isinstance(postprocessor, IDistancesPostprocessor):
            raise TypeError(f"postprocessor must be an IDistancesPostprocessor, got {type(postprocessor)}.")

        # the keys of the batches
        self.embeddings_key, self.labels_key = embeddings_key, labels_key
        self.is_query_key, self.is_gallery_key = is_query_key, is_gallery_key
        self.categories_key, self.sequence_key = categories_key, sequence_key
        self.extra_keys = tuple(extra_keys)
        # what to compute
        self.cmc_top_k, self.precision_top_k, self.map_top_k = (
            tuple(cmc_top_k),
            tuple(precision_top_k),
            tuple(map_top_k),
        )
        self.fmr_vals, self.pfc_variance = tuple(fmr_vals), tuple(pfc_variance)
        self.ranking_metrics, self.clustering_metrics = tuple(ranking_metrics), tuple(clustering_metrics)
        self.postprocessor = postprocessor
        # per-query ranking metrics are not plotted by default: the same number of figures as OML 0.4.4
        self.metrics_to_exclude_from_visualization = [
            "fnmr@fmr",
            "pcf",
            *RANKING_METRICS,
            *CLUSTERING_METRICS,
            *metrics_to_exclude_from_visualization,
        ]
        # what to show and how strict to be
        self.return_only_main_category = return_only_main_category
        self.visualize_only_main_category = visualize_only_main_category
        self.verbose, self.raise_on_queries_without_match = verbose, raise_on_queries_without_match

        keys = [embeddings_key, is_query_key, is_gallery_key, labels_key]
        if categories_key is not None:
            keys.append(categories_key)
        if sequence_key is not None:
            keys.append(sequence_key)
        keys += list(self.extra_keys)
        if postprocessor is not None:
            keys += list(postprocessor.needed_keys)
        self.keys_to_accumulate = list(dict.fromkeys(keys))
        self.acc = Accumulator(keys_to_accumulate=self.keys_to_accumulate)
        self._reset_results()

    def _reset_results(self) -> None:
        self.metrics: Optional[TMetricsDict_ByLabels] = None
        self.metrics_unreduced: Optional[TMetricsDict_ByLabels] = None
        self.retrieval_results: Optional[RetrievalResults] = None
        self._dense_distances: Optional[Tensor] = None

    # ------------------------------------------------------------------------------------------- life cycle
    def setup(self, num_samples: int) -> None:  # type: ignore[override]
        """Start a new epoch expecting ``num_samples`` samples."""
        self._reset_results()
        self.acc.refresh(num_samples=num_samples)

    def update_data(self, data_dict: Dict[str, Any]) -> None:  # type: ignore[override]
        """Add a batch (a dict with all ``keys_to_accumulate``)."""
        self.acc.update_data(data_dict=data_dict)

    def _collected(self) -> Dict[str, Any]:
        """The accumulated storage, after checking that every expected sample arrived."""
        if not self.acc.is_storage_full():
            if self.acc.num_samples is None:
                raise ValueError("No data: call setup(num_samples) and update_data(batch) before compute_metrics.")
            raise ValueError(
                f"Metrics can be computed only when all the expected {self.acc.num_samples} samples are collected, "
                f"got {self.acc.collected_samples}: {self.acc.num_samples - self.acc.collected_samples} samples are "
                f"missing (or pass the right num_samples to setup)."
            )
        return self.acc.storage

    def _retrieval_width(self, n_galleries: int) -> int:
        widths = [*self.cmc_top_k, *self.precision_top_k, *self.map_top_k]
        if widths and self.ready_to_visualize():
            widths.append(LOG_TOPK_IMAGES_PER_ROW)
        if widths and self.postprocessor is not None and self.postprocessor.supports_top_n():
            widths.append(int(self.postprocessor.top_n))  # type: ignore[arg-type]
        return min(max(widths), n_galleries) if widths else 0

    def _build_results(self) -> RetrievalResults:
        storage = self._collected()
        embeddings = check_embeddings(_as_tensor(storage[self.embeddings_key], self.embeddings_key), "embeddings")
        n = len(embeddings)
        is_query = check_bool_vector(storage[self.is_query_key], self.is_query_key, n)
        is_gallery = check_bool_vector(storage[self.is_gallery_key], self.is_gallery_key, n)
        labels = storage[self.labels_key]
        labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).ravel()
        if len(labels) != n:
            raise ValueError(f"{self.labels_key!r} has {len(labels)} values, expected {n}.")
        sequences = None if self.sequence_key is None else _category_values(storage[self.sequence_key])
        categories = None if self.categories_key is None else _category_values(storage[self.categories_key])
        query_rows, gallery_rows = is_query.nonzero().flatten(), is_gallery.nonzero().flatten()
        pp = self.postprocessor
        rerank = search = None
        if pp is not None and pp.supports_top_n():
            rerank = self._top_n_reranker(query_rows, gallery_rows)
        elif pp is not None:
            keys = exclusion_keys(torch.arange(n), sequences)  # the pairs the dense path must exclude too
            search = self._dense_search(embeddings, query_rows, gallery_rows, keys[query_rows], keys[gallery_rows])
        results = RetrievalResults.from_embeddings(
            embeddings,
            labels,
            is_query,
            is_gallery,
            top_k=self._retrieval_width(len(gallery_rows)),
            sequences=sequences,
            categories=categories,
            ranking_metrics=self.ranking_metrics,
            rerank=rerank,
            search=search,
            shard=self._shard(),
        )
        lonely = (results.n_gt == 0).nonzero().flatten()
        if len(lonely) and self.raise_on_queries_without_match:
            rows = query_rows[lonely[:10]]
            raise ValueError(
                f"There are queries without available correct answers in the gallery: {len(lonely)} of "
                f"{len(query_rows)} queries have no other gallery item with their label (samples {rows.tolist()}, "
                f"labels {labels[rows.numpy()].tolist()}). Mark them is_query=False or add gallery items "
                f"(or let them be scored as misses: raise_on_queries_without_match=False)."
            )
        return results

    def _shard(self) -> Optional[Shard]:
        """The share of the queries this process searches (None: all of them)."""
        return None

    def _top_n_reranker(self, query_rows: Tensor, gallery_rows: Tensor) -> Any:
        pp = self.postprocessor

        def rerank(positions: Tensor, distances: Tensor, indices: Tensor) -> Tuple[Tensor, Tensor]:
            n = min(int(pp.top_n), distances.shape[1])  # type: ignore[union-attr, arg-type]
            block = distances[:, :n].clone()
            new = pp.process_top_n(block, query_rows[positions], gallery_rows[indices[:, :n]], self.acc.storage)  # type: ignore[union-attr]
            new = torch.as_tensor(new)
            if new.shape != (len(distances), n) or torch.isnan(new).any():
                raise ValueError(
                    f"{type(pp).__name__}.process_top_n must return [{len(distances)}, {n}] distances without NaN, "
                    f"got shape {tuple(new.shape)}."
                )
            # re-sort each block by (new distance, gallery index); the items after the block keep their order
            new_d, new_i = sort_by_value_then_index(new.to(distances.dtype), indices[:, :n])
            distances, indices = distances.clone(), indices.clone()
            distances[:, :n], indices[:, :n] = new_d, new_i
            return distances, indices

        return rerank

    def _dense_search(
        self, embeddings: Tensor, query_rows: Tensor, gallery_rows: Tensor, query_keys: Tensor, gallery_keys: Tensor
    ) -> Any:
        """OML's dense path for postprocessors without ``process_top_n``: O(Q x G) memory."""

        def search(positions: Tensor, k: int) -> Tuple[Tensor, Tensor]:
            if self._dense_distances is None:
                warnings.warn(
                    f"{type(self.postprocessor).__name__} has no top_n/process_top_n: the dense [Q, G] distance "
                    f"matrix is built for it.",
                    stacklevel=5,
                )
                distances = _mask_same(
                    exact_cdist(embeddings[query_rows], embeddings[gallery_rows]), query_keys, gallery_keys
                )
                processed = self.postprocessor.process_by_dict(distances.clone(), data=self.acc.storage)  # type: ignore[union-attr]
                if processed.shape != distances.shape:
                    raise ValueError(
                        f"process_by_dict returned shape {tuple(processed.shape)}, expected {tuple(distances.shape)}."
                    )
                self._dense_distances = _mask_same(processed, query_keys, gallery_keys)
            rows = self._dense_distances[positions]
            order = topk_stable(rows, k)
            return rows.gather(1, order), order

        return search

    def compute_metrics(self) -> TMetricsDict_ByLabels:  # type: ignore[override]
        """Compute the metrics on the accumulated data; fills ``metrics``, ``metrics_unreduced`` and
        ``retrieval_results``."""
        self._reset_results()
        results = self._build_results()
        if self.fmr_vals and self.postprocessor is not None:
            warnings.warn("FNMR@FMR is computed on the embedding distances, without the postprocessor.", stacklevel=2)
        unreduced = results.metrics(
            self.cmc_top_k,
            self.precision_top_k,
            self.map_top_k,
            ranking_metrics=self.ranking_metrics,
            fmr_vals=self.fmr_vals,
            pcf_variance=self.pfc_variance,
            clustering_metrics=self.clustering_metrics,
            by_category=self.categories_key is not None,
            reduce=False,
            shard=self._shard(),
        )
        positions: Dict[Any, Tensor] = {OVERALL_CATEGORIES_KEY: torch.arange(len(results))}
        for key, in_queries, _ in results._groups(by_category=self.categories_key is not None)[1:]:
            positions[key] = in_queries.nonzero().flatten()
        self.retrieval_results = results
        self._positions = positions
        self.metrics_unreduced = unreduced
        self.metrics = reduce_metrics(unreduced)
        if self.return_only_main_category:
            result = {OVERALL_CATEGORIES_KEY: self.metrics[OVERALL_CATEGORIES_KEY]}
        else:
            result = self.metrics
        if self.verbose and is_main_process():
            print("\nMetrics:")
            pprint(result)
        return result

    # ------------------------------------------------------------------------------------------- dense compat
    def _require_results(self) -> RetrievalResults:
        if self.retrieval_results is None:
            raise RuntimeError("Call compute_metrics() first.")
        return self.retrieval_results

    @property
    def distance_matrix(self) -> Optional[Tensor]:
        """Dense ``[Q, G]`` distances, excluded pairs ``inf`` (lazy, O(Q x G) memory; OML compatibility)."""
        if self.retrieval_results is None:
            return None
        if self._dense_distances is None:
            rr = self.retrieval_results
            self._dense_distances = _mask_same(exact_cdist(rr.queries, rr.galleries), rr.query_keys, rr.gallery_keys)
        return self._dense_distances

    @property
    def mask_gt(self) -> Optional[Tensor]:
        """Dense bool ``[Q, G]``: same label and not excluded (lazy, O(Q x G) memory; OML compatibility)."""
        if self.retrieval_results is None:
            return None
        rr = self.retrieval_results
        same = rr.query_labels[:, None] == rr.gallery_labels[None, :]
        return same & (rr.query_keys[:, None] != rr.gallery_keys[None, :])  # type: ignore[index]

    # ------------------------------------------------------------------------------------------- visualisation
    def ready_to_visualize(self) -> bool:
        return PATHS_KEY in self.extra_keys

    def get_worst_queries_ids(self, metric_name: str, n_queries: int) -> List[int]:
        """Positions (in the query list) of the ``n_queries`` queries with the lowest per-query ``metric_name``.

        ``metric_name`` is like ``"OVERALL/cmc/1"``. For a category (``"<category>/cmc/1"``) the positions are
        also in the whole query list (OML returned positions within the category, which plotted wrong queries).
        Ties are broken by the query position.
        """
        if self.metrics_unreduced is None:
            raise RuntimeError("Call compute_metrics() first.")
        flat = flatten_dict(self.metrics_unreduced)
        if metric_name not in flat:
            per_query = [k for k, v in flat.items() if isinstance(v, Tensor) and v.ndim == 1]
            raise KeyError(f"Unknown metric {metric_name!r}; per-query metrics are {per_query}.")
        values = flat[metric_name]
        if not isinstance(values, Tensor) or values.ndim != 1:
            raise ValueError(f"{metric_name!r} is not a per-query metric (e.g. fnmr@fmr and pcf are not).")
        category = next(c for c in self._positions if metric_name.startswith(f"{c}/"))
        order = torch.argsort(values, stable=True)[:n_queries]
        return self._positions[category][order].tolist()

    def get_plot_for_worst_queries(
        self, metric_name: str, n_queries: int, n_instances: int, verbose: bool = False
    ) -> Figure:
        """Plot the worst queries by ``metric_name`` (see ``get_worst_queries_ids``)."""
        query_ids = self.get_worst_queries_ids(metric_name=metric_name, n_queries=n_queries)
        return self.get_plot_for_queries(query_ids=query_ids, n_instances=n_instances, verbose=verbose)

    def _retrieved_for_plot(self, position: int, n_instances: int) -> Tuple[List[int], List[float]]:
        rr = self._require_results()
        indices, distances = rr.retrieved[position].tolist(), rr.distances[position].tolist()
        if n_instances > len(indices):
            keys = None if rr.query_keys is None else rr.query_keys[position : position + 1]
            more = exact_knn(
                rr.queries[position : position + 1],
                rr.galleries,
                min(n_instances, rr.n_galleries),
                keys,
                rr.gallery_keys,
            )
            for i, d in zip(more.indices[0].tolist(), more.distances[0].tolist()):
                if i not in indices:
                    indices.append(i)
                    distances.append(d)
        return indices[:n_instances], distances[:n_instances]

    def get_plot_for_queries(self, query_ids: List[int], n_instances: int, verbose: bool = True) -> Figure:
        """Plot queries (positions in the query list) with their ``n_instances`` nearest galleries and GT items."""
        rr = self._require_results()
        storage = self.acc.storage
        if PATHS_KEY not in storage:
            raise KeyError(f"Plots need the image paths: create the metric with extra_keys=({PATHS_KEY!r}, ...).")
        present = [k in storage for k in BBOXES_KEYS]
        if any(present) and not all(present):
            raise KeyError(
                f"Either all or none of the bbox keys {BBOXES_KEYS} must be accumulated, got {list(storage)}."
            )
        paths = storage[PATHS_KEY]

        def item(row: int) -> Tuple[Any, Optional[List[float]]]:
            bbox = [float(storage[k][row]) for k in BBOXES_KEYS] if all(present) else None
            return paths[row], bbox

        bad = [q for q in query_ids if not 0 <= q < len(rr)]
        if bad:
            raise ValueError(f"query_ids must be positions in [0, {len(rr)}), got {bad}.")
        if verbose:
            print(f"Plotting {len(query_ids)} queries with {n_instances} retrieved items each.")
        queries, retrieved, ground_truth = [], [], []
        for position in query_ids:
            queries.append(item(int(rr.query_ids[position])))
            is_relevant = (rr.gallery_labels == rr.query_labels[position]) & (
                rr.gallery_keys != rr.query_keys[position]  # type: ignore[index]
            )
            indices, distances = self._retrieved_for_plot(position, n_instances)
            retrieved.append(
                [(*item(int(rr.gallery_ids[i])), bool(is_relevant[i]), d) for i, d in zip(indices, distances)]
            )
            gt_positions = is_relevant.nonzero().flatten()[:N_GT_SHOW_EMBEDDING_METRICS].tolist()
            ground_truth.append([item(int(rr.gallery_ids[g])) for g in gt_positions])
        return plot_retrieval_rows(queries, retrieved, ground_truth, n_instances, N_GT_SHOW_EMBEDDING_METRICS)

    def visualize(self) -> Tuple[List[Figure], List[str]]:
        """Figures of the worst queries for every per-query metric (only OVERALL by default)."""
        if self.metrics_unreduced is None:
            raise RuntimeError("Call compute_metrics() first.")
        figures, titles = [], []
        for metric_name, values in flatten_dict(self.metrics_unreduced).items():
            if not isinstance(values, Tensor) or values.ndim != 1:
                continue
            if self.visualize_only_main_category and not metric_name.startswith(f"{OVERALL_CATEGORIES_KEY}/"):
                continue
            if any(excluded in metric_name for excluded in self.metrics_to_exclude_from_visualization):
                continue
            figures.append(
                self.get_plot_for_worst_queries(metric_name, LOG_TOPK_ROWS_PER_METRIC, LOG_TOPK_IMAGES_PER_ROW)
            )
            titles.append(f"top {LOG_TOPK_ROWS_PER_METRIC} worst by {metric_name}".replace("/", "_"))
        return figures, titles


def _mask_same(distances: Tensor, query_keys: Tensor, gallery_keys: Tensor) -> Tensor:
    """``inf`` (in place) where the query and the gallery item share an exclusion key (same sample or sequence)."""
    distances[query_keys[:, None] == gallery_keys[None, :]] = float("inf")
    return distances


def _category_values(values: Any) -> Any:
    if isinstance(values, Tensor):
        return values.cpu().numpy()
    return values


class EmbeddingMetricsDDP(EmbeddingMetrics, IMetricDDP):
    """``EmbeddingMetrics`` for DDP: ``sync()`` gathers the accumulated data of all processes, then the work is split.

    When the dataset index (``idx``) is among the ``extra_keys`` (the pipelines add it), the gathered samples are
    put back in dataset order and samples duplicated by DDP padding are dropped, so the metrics equal those of one
    process exactly. Without it, duplicates stay in the data, as in OML 0.4.4.

    ``compute_metrics`` must then be called by every process (the callbacks do). With ``shard_queries`` (the
    default), each process searches and re-ranks only its contiguous share of the queries against the whole
    gallery and runs FNMR@FMR's passes on that share; the per-query results are gathered, so every process gets
    the metrics of one process bit for bit (the distances are exact). In OML 0.4.4 every process computed
    everything: W processes did W times the work of one. The gallery itself is all-gathered (every process holds
    all embeddings): the per-sample storage is gathered anyway for the postprocessors, PCF, clustering metrics
    and plots, and a validation set's embeddings fit in memory (50k x 384 float32: 77 MB). Clustering metrics
    and PCF are not split (each process computes them; they are cheap next to the search).

    Args:
        shard_queries: split the search over the processes (else every process computes everything).
        *args, **kwargs: those of ``EmbeddingMetrics``.
    """

    index_key = INDEX_KEY

    def __init__(self, *args: Any, shard_queries: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.shard_queries = shard_queries
        self._synced = False

    def setup(self, num_samples: int) -> None:  # type: ignore[override]
        super().setup(num_samples)
        self._synced = False

    def _shard(self) -> Optional[Shard]:
        # before sync() every process holds only its own samples: nothing to split
        return Shard.current() if self.shard_queries and self._synced else None

    def sync(self) -> None:
        synced = self.acc.sync()
        if self.index_key in synced.storage:
            ids = synced.storage[self.index_key]
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
            _, positions = drop_duplicates_by_ids(ids, list(range(len(ids))), sort=True)
            synced = synced.take(positions)
        self.acc = synced
        self._synced = True


__all__ = ["EmbeddingMetrics", "EmbeddingMetricsDDP", "TMetricsDict_ByLabels", "validate_dataset"]
