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
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

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
from oml.ddp.utils import is_main_process
from oml.functional.distances import exact_cdist
from oml.functional.knn import exact_knn
from oml.functional.metrics import (
    TMetricsDict,
    calc_fnmr_at_fmr_by_embeddings,
    calc_retrieval_metrics_on_topk,
    calc_topological_metrics,
    reduce_metrics,
)
from oml.functional.ordering import topk_stable
from oml.interfaces.metrics import IMetricDDP, IMetricVisualisable
from oml.interfaces.retrieval import IDistancesPostprocessor
from oml.metrics.accumulation import Accumulator
from oml.metrics.plotting import plot_retrieval_rows
from oml.utils.checks import check_embeddings, check_in_range, check_ints
from oml.utils.labels import encode_labels
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


def _as_bool_vector(values: Any, name: str, n: int) -> Tensor:
    mask = _as_tensor(values, name).flatten()
    if len(mask) != n:
        raise ValueError(f"{name} has {len(mask)} values, expected {n} (one per sample).")
    if mask.dtype != torch.bool:
        if not torch.isin(mask, torch.tensor([0, 1], dtype=mask.dtype)).all():
            raise ValueError(f"{name} must contain only bools or 0/1, got values like {mask.unique()[:5].tolist()}.")
        mask = mask.bool()
    return mask


def _python_key(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


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

    >>> metric = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(2,), pfc_variance=(), verbose=False)
    >>> metric.setup(num_samples=4)
    >>> metric.update_data({
    ...     "embeddings": torch.tensor([[0.0], [0.1], [1.0], [1.2]]),
    ...     "labels": torch.tensor([0, 1, 0, 1]),
    ...     "is_query": torch.tensor([True, True, False, False]),
    ...     "is_gallery": torch.tensor([False, False, True, True]),
    ... })
    >>> metric.compute_metrics()
    {'OVERALL': {'cmc': {1: tensor(0.5000)}, 'map': {2: tensor(0.7500)}}}
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
    ):
        for name, top_k in (("cmc_top_k", cmc_top_k), ("precision_top_k", precision_top_k), ("map_top_k", map_top_k)):
            check_ints(tuple(top_k), name, allow_empty=True)
        if fmr_vals:
            check_in_range(tuple(fmr_vals), 0, 1, "fmr_vals")
        if pfc_variance:
            check_in_range(tuple(pfc_variance), 0, 1, "pfc_variance")
        if postprocessor is not None and not isinstance(postprocessor, IDistancesPostprocessor):
            raise TypeError(f"postprocessor must be an IDistancesPostprocessor, got {type(postprocessor)}.")

        self.embeddings_key = embeddings_key
        self.labels_key = labels_key
        self.is_query_key = is_query_key
        self.is_gallery_key = is_gallery_key
        self.extra_keys = tuple(extra_keys)
        self.cmc_top_k = tuple(cmc_top_k)
        self.precision_top_k = tuple(precision_top_k)
        self.map_top_k = tuple(map_top_k)
        self.fmr_vals = tuple(fmr_vals)
        self.pfc_variance = tuple(pfc_variance)
        self.categories_key = categories_key
        self.postprocessor = postprocessor
        self.metrics_to_exclude_from_visualization = ["fnmr@fmr", "pcf", *metrics_to_exclude_from_visualization]
        self.return_only_main_category = return_only_main_category
        self.visualize_only_main_category = visualize_only_main_category
        self.verbose = verbose

        keys = [embeddings_key, is_query_key, is_gallery_key, labels_key]
        if categories_key is not None:
            keys.append(categories_key)
        keys += list(self.extra_keys)
        if postprocessor is not None:
            keys += list(postprocessor.needed_keys)
        self.keys_to_accumulate = list(dict.fromkeys(keys))
        self.acc = Accumulator(keys_to_accumulate=self.keys_to_accumulate)
        self._reset_results()

    def _reset_results(self) -> None:
        self.metrics: Optional[TMetricsDict_ByLabels] = None
        self.metrics_unreduced: Optional[TMetricsDict_ByLabels] = None
        self._state: Optional[Dict[str, Any]] = None
        self._dense_distances: Optional[Tensor] = None

    # ------------------------------------------------------------------------------------------- life cycle
    def setup(self, num_samples: int) -> None:  # type: ignore[override]
        """Start a new epoch expecting ``num_samples`` samples."""
        self._reset_results()
        self.acc.refresh(num_samples=num_samples)

    def update_data(self, data_dict: Dict[str, Any]) -> None:  # type: ignore[override]
        """Add a batch (a dict with all ``keys_to_accumulate``)."""
        self.acc.update_data(data_dict=data_dict)

    def _prepare(self) -> Dict[str, Any]:
        """Validate the accumulated data; return embeddings, label codes, query and gallery rows."""
        if not self.acc.is_storage_full():
            if self.acc.num_samples is None:
                raise ValueError("No data: call setup(num_samples) and update_data(batch) before compute_metrics.")
            raise ValueError(
                f"Metrics can be computed only when all the expected {self.acc.num_samples} samples are collected, "
                f"got {self.acc.collected_samples}: {self.acc.num_samples - self.acc.collected_samples} samples are "
                f"missing (or pass the right num_samples to setup)."
            )
        storage = self.acc.storage
        embeddings = check_embeddings(_as_tensor(storage[self.embeddings_key], self.embeddings_key), "embeddings")
        n = len(embeddings)
        is_query = _as_bool_vector(storage[self.is_query_key], self.is_query_key, n)
        is_gallery = _as_bool_vector(storage[self.is_gallery_key], self.is_gallery_key, n)
        labels = storage[self.labels_key]
        labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).ravel()
        if len(labels) != n:
            raise ValueError(f"{self.labels_key!r} has {len(labels)} values, expected {n}.")
        _, (codes,) = encode_labels(labels)

        query_rows, gallery_rows = is_query.nonzero().flatten(), is_gallery.nonzero().flatten()
        if len(query_rows) == 0 or len(gallery_rows) == 0:
            raise ValueError(
                f"Empty query or gallery set: {len(query_rows)} queries and {len(gallery_rows)} gallery items "
                f"among {n} samples (check {self.is_query_key!r} and {self.is_gallery_key!r})."
            )
        gallery_counts = torch.bincount(codes[gallery_rows], minlength=int(codes.max()) + 1)
        n_gt = gallery_counts[codes[query_rows]] - is_gallery[query_rows].long()
        lonely = (n_gt == 0).nonzero().flatten()
        if len(lonely):
            rows = query_rows[lonely[:10]]
            raise ValueError(
                f"There are queries without available correct answers in the gallery: {len(lonely)} of "
                f"{len(query_rows)} queries have no other gallery item with their label (samples {rows.tolist()}, "
                f"labels {labels[rows.numpy()].tolist()}). Mark them is_query=False or add gallery items."
            )
        same_set = torch.equal(is_query, is_gallery)
        if same_set and len(query_rows) == n:
            queries = galleries = embeddings
            query_ids = gallery_ids = query_rows
        elif same_set:
            queries = galleries = embeddings[query_rows]
            query_ids = gallery_ids = query_rows
        else:
            queries, galleries = embeddings[query_rows], embeddings[gallery_rows]
            query_ids, gallery_ids = query_rows, gallery_rows
        return {
            "embeddings": embeddings,
            "codes": codes,
            "query_rows": query_rows,
            "gallery_rows": gallery_rows,
            "queries": queries,
            "galleries": galleries,
            "query_ids": query_ids,
            "gallery_ids": gallery_ids,
            "n_gt": n_gt,
        }

    def _retrieval_width(self, n_galleries: int) -> int:
        widths = [*self.cmc_top_k, *self.precision_top_k, *self.map_top_k]
        if widths and self.ready_to_visualize():
            widths.append(LOG_TOPK_IMAGES_PER_ROW)
        if widths and self.postprocessor is not None and self.postprocessor.supports_top_n():
            widths.append(int(self.postprocessor.top_n))  # type: ignore[arg-type]
        return min(max(widths), n_galleries) if widths else 0

    def _retrieve(self, state: Dict[str, Any]) -> Tuple[Tensor, Tensor]:
        """Distances ``[Q, w]`` and gallery positions ``[Q, w]`` of every query's nearest galleries (post-processed)."""
        width = self._retrieval_width(len(state["gallery_rows"]))
        pp = self.postprocessor
        if pp is not None and not pp.supports_top_n():
            return self._retrieve_dense(state, width)
        if width == 0:
            empty = torch.zeros(len(state["query_rows"]), 0)
            return empty, empty.long()
        distances, indices = exact_knn(
            state["queries"], state["galleries"], width, state["query_ids"], state["gallery_ids"]
        )
        if pp is not None:
            n = min(int(pp.top_n), width)  # type: ignore[arg-type]
            block = distances[:, :n].clone()
            new = pp.process_top_n(block, state["query_rows"], state["gallery_rows"][indices[:, :n]], self.acc.storage)
            new = torch.as_tensor(new)
            if new.shape != (len(distances), n) or torch.isnan(new).any():
                raise ValueError(
                    f"{type(pp).__name__}.process_top_n must return [{len(distances)}, {n}] distances without NaN, "
                    f"got shape {tuple(new.shape)}."
                )
            # re-sort each block by (new distance, gallery index); the items after the block keep their order
            by_index = torch.sort(indices[:, :n], dim=1)
            new = new.to(distances.dtype).gather(1, by_index.indices)
            order = topk_stable(new, n)
            distances[:, :n], indices[:, :n] = new.gather(1, order), by_index.values.gather(1, order)
        return distances, indices

    def _retrieve_dense(self, state: Dict[str, Any], width: int) -> Tuple[Tensor, Tensor]:
        """OML's dense path for postprocessors without ``process_top_n``: O(Q x G) memory."""
        warnings.warn(
            f"{type(self.postprocessor).__name__} has no top_n/process_top_n: the dense [Q, G] distance matrix is "
            f"built for it.",
            stacklevel=3,
        )
        distances = self._dense_raw_distances(state)
        processed = self.postprocessor.process_by_dict(distances.clone(), data=self.acc.storage)  # type: ignore[union-attr]
        if processed.shape != distances.shape:
            raise ValueError(
                f"process_by_dict returned shape {tuple(processed.shape)}, expected {tuple(distances.shape)}."
            )
        processed[state["query_ids"][:, None] == state["gallery_ids"][None, :]] = float("inf")
        self._dense_distances = processed
        if width == 0:
            return processed[:, :0], torch.zeros(len(processed), 0, dtype=torch.long)
        order = topk_stable(processed, width)
        return processed.gather(1, order), order

    def _dense_raw_distances(self, state: Dict[str, Any]) -> Tensor:
        queries, galleries = state["queries"], state["galleries"]
        distances = exact_cdist(queries, galleries)
        distances[state["query_ids"][:, None] == state["gallery_ids"][None, :]] = float("inf")
        return distances

    def compute_metrics(self) -> TMetricsDict_ByLabels:  # type: ignore[override]
        """Compute the metrics on the accumulated data; fills ``metrics`` and ``metrics_unreduced``."""
        self._reset_results()
        state = self._prepare()
        n_galleries = len(state["gallery_rows"])
        distances, indices = self._retrieve(state)
        state["distances"], state["indices"] = distances, indices
        query_rows, codes = state["query_rows"], state["codes"]
        retrieved_rows = state["gallery_rows"][indices]
        gt_tops = (codes[retrieved_rows] == codes[query_rows][:, None]) & (retrieved_rows != query_rows[:, None])

        unreduced: TMetricsDict_ByLabels = {}
        positions: Dict[Any, Tensor] = {OVERALL_CATEGORIES_KEY: torch.arange(len(query_rows))}
        overall = calc_retrieval_metrics_on_topk(
            gt_tops,
            state["n_gt"],
            self.cmc_top_k,
            self.precision_top_k,
            self.map_top_k,
            n_galleries=n_galleries,
            reduce=False,
        )
        unreduced[OVERALL_CATEGORIES_KEY] = overall
        groups: List[Tuple[Any, Tensor, Tensor]] = [
            (
                OVERALL_CATEGORIES_KEY,
                torch.ones(len(query_rows), dtype=torch.bool),
                torch.ones(len(codes), dtype=torch.bool),
            )
        ]
        if self.categories_key is not None:
            categories = np.asarray(_category_values(self.acc.storage[self.categories_key]))
            if len(categories) != len(codes):
                raise ValueError(f"{self.categories_key!r} has {len(categories)} values, expected {len(codes)}.")
            query_categories = categories[query_rows.numpy()]
            for category in np.unique(query_categories):
                key = _python_key(category)
                in_queries = torch.from_numpy(query_categories == category)
                positions[key] = in_queries.nonzero().flatten()
                unreduced[key] = {
                    metric: {k: v[in_queries] for k, v in values.items()} for metric, values in overall.items()
                }
                groups.append((key, in_queries, torch.from_numpy(categories == category)))

        for key, in_queries, in_samples in groups:
            if self.fmr_vals:
                unreduced[key]["fnmr@fmr"] = self._fnmr(state, in_queries)
            unreduced[key].update(calc_topological_metrics(state["embeddings"][in_samples], self.pfc_variance))

        self._state = state
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

    def _fnmr(self, state: Dict[str, Any], in_queries: Tensor) -> Dict[float, Tensor]:
        if self.postprocessor is not None:
            warnings.warn("FNMR@FMR is computed on the embedding distances, without the postprocessor.", stacklevel=3)
        codes = state["codes"]
        query_rows = state["query_rows"][in_queries]
        if bool(in_queries.all()):
            queries, query_ids = state["queries"], state["query_ids"]
        else:
            queries, query_ids = state["embeddings"][query_rows], query_rows
        values = calc_fnmr_at_fmr_by_embeddings(
            queries,
            state["galleries"],
            codes[query_rows],
            codes[state["gallery_rows"]],
            self.fmr_vals,
            query_ids=query_ids,
            gallery_ids=state["gallery_ids"],
        )
        return dict(zip(self.fmr_vals, values))

    # ------------------------------------------------------------------------------------------- dense compat
    def _require_state(self) -> Dict[str, Any]:
        if self._state is None:
            raise RuntimeError("Call compute_metrics() first.")
        return self._state

    @property
    def distance_matrix(self) -> Optional[Tensor]:
        """Dense ``[Q, G]`` distances, same-sample pairs ``inf`` (lazy, O(Q x G) memory; OML compatibility)."""
        if self._state is None:
            return None
        if self._dense_distances is None:
            self._dense_distances = self._dense_raw_distances(self._state)
        return self._dense_distances

    @property
    def mask_gt(self) -> Optional[Tensor]:
        """Dense bool ``[Q, G]``: same label and not the same sample (lazy, O(Q x G) memory; OML compatibility)."""
        if self._state is None:
            return None
        state = self._state
        q, g = state["query_rows"], state["gallery_rows"]
        return (state["codes"][q][:, None] == state["codes"][g][None, :]) & (q[:, None] != g[None, :])

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
        state = self._require_state()
        indices, distances = state["indices"][position].tolist(), state["distances"][position].tolist()
        n_galleries = len(state["gallery_rows"])
        if n_instances > len(indices):
            row = state["query_rows"][position : position + 1]
            more = exact_knn(
                state["embeddings"][row], state["galleries"], min(n_instances, n_galleries), row, state["gallery_ids"]
            )
            for i, d in zip(more.indices[0].tolist(), more.distances[0].tolist()):
                if i not in indices:
                    indices.append(i)
                    distances.append(d)
        return indices[:n_instances], distances[:n_instances]

    def get_plot_for_queries(self, query_ids: List[int], n_instances: int, verbose: bool = True) -> Figure:
        """Plot queries (positions in the query list) with their ``n_instances`` nearest galleries and GT items."""
        state = self._require_state()
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

        n_queries = len(state["query_rows"])
        bad = [q for q in query_ids if not 0 <= q < n_queries]
        if bad:
            raise ValueError(f"query_ids must be positions in [0, {n_queries}), got {bad}.")
        if verbose:
            print(f"Plotting {len(query_ids)} queries with {n_instances} retrieved items each.")
        codes, gallery_rows = state["codes"], state["gallery_rows"]
        queries, retrieved, ground_truth = [], [], []
        for position in query_ids:
            row = int(state["query_rows"][position])
            queries.append(item(row))
            indices, distances = self._retrieved_for_plot(position, n_instances)
            items = []
            for i, d in zip(indices, distances):
                g_row = int(gallery_rows[i])
                items.append((*item(g_row), bool(codes[g_row] == codes[row]) and g_row != row, d))
            retrieved.append(items)
            gt_mask = (codes[gallery_rows] == codes[row]) & (gallery_rows != row)
            gt_rows = gallery_rows[gt_mask][:N_GT_SHOW_EMBEDDING_METRICS].tolist()
            ground_truth.append([item(r) for r in gt_rows])
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


def _category_values(values: Any) -> Any:
    if isinstance(values, Tensor):
        return values.cpu().numpy()
    return values


class EmbeddingMetricsDDP(EmbeddingMetrics, IMetricDDP):
    """``EmbeddingMetrics`` for DDP: ``sync()`` gathers the accumulated data of all processes before computing.

    Every process then computes the same metrics. When the dataset index (``idx``) is among the
    ``extra_keys`` (the pipelines add it), the gathered samples are put back in dataset order and
    samples duplicated by DDP padding are dropped, so the metrics equal those of one process exactly.
    Without it, duplicates stay in the data, as in OML 0.4.4.
    """

    index_key = INDEX_KEY

    def sync(self) -> None:
        synced = self.acc.sync()
        if self.index_key in synced.storage:
            ids = synced.storage[self.index_key]
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
            _, positions = drop_duplicates_by_ids(ids, list(range(len(ids))), sort=True)
            synced = synced.take(positions)
        self.acc = synced


__all__ = ["EmbeddingMetrics", "EmbeddingMetricsDDP", "TMetricsDict_ByLabels", "validate_dataset"]
