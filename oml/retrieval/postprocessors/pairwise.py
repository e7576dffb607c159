"""Re-ranking of each query's top-n galleries with a pairwise model (on embeddings or on images).

A pairwise model scores ``(query, gallery)`` pairs; its scores replace the distances of each query's
``top_n`` nearest galleries, so the order inside that block may change, while the other galleries stay
behind the block in their old order. Two entry points:

- ``process(distances [Q, G], queries, galleries)``: OML's dense contract, returns new ``[Q, G]`` distances;
- ``process_top_n(distances [Q, n], query_ids, retrieved_ids, data)``: the hook of ``EmbeddingMetrics``
  that passes only the top-n block, so the dense matrix is never built.

Only ``Q x top_n`` pairs are ever scored.
"""

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from oml.const import (
    EMBEDDINGS_KEY,
    IS_GALLERY_KEY,
    IS_QUERY_KEY,
    PATHS_KEY,
    X1_KEY,
    X2_KEY,
    Y1_KEY,
    Y2_KEY,
)
from oml.inference.pairs import pairwise_inference_on_embeddings, pairwise_inference_on_images
from oml.interfaces.models import IPairwiseModel
from oml.interfaces.retrieval import IDistancesPostprocessor
from oml.transforms.images.utils import TTransforms

TBox = Optional[Tuple[int, int, int, int]]


def _check_top_n(top_n: Any) -> int:
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 2:
        raise ValueError(f"top_n must be an integer > 1 (the number of galleries to re-rank), got {top_n!r}.")
    return top_n


def _as_mask(values: Any, key: str, n: int) -> Tensor:
    mask = torch.as_tensor(values).flatten()
    if len(mask) != n:
        raise ValueError(f"data[{key!r}] has {len(mask)} values, expected {n}.")
    return mask.bool()


class PairwisePostprocessor(IDistancesPostprocessor, ABC):
    """Base of the re-rankers: subclasses only score pairs (``inference``) and say what data they need.

    Unlike OML 0.4.4, the caller's tensors are never modified (OML wrote the new distances into the
    given matrix), and the distances of the galleries outside the block are shifted only for the queries
    where it is needed to keep them behind the re-ranked block (OML shifted every row).
    """

    top_n: int

    def _set_up(
        self,
        top_n: int,
        pairwise_model: IPairwiseModel,
        inference_args: Tuple[int, int, bool, bool],
        is_query_key: str,
        is_gallery_key: str,
    ) -> None:
        """What every pairwise postprocessor keeps (its subclasses keep OML 0.4.4's explicit signatures)."""
        self.top_n = _check_top_n(top_n)
        self.model = pairwise_model
        self.num_workers, self.batch_size, self.verbose, self.use_fp16 = inference_args
        self.is_query_key, self.is_gallery_key = is_query_key, is_gallery_key

    @abstractmethod
    def inference(self, queries: Any, galleries: Any, ii_top: Tensor, top_n: int) -> Tensor:
        """Scores ``[Q, top_n]`` of the pairs ``(queries[i], galleries[ii_top[i, j]])`` (smaller = more similar)."""
        raise NotImplementedError

    @abstractmethod
    def _items(self, data: Dict[str, Any], rows: Tensor) -> Any:
        """The items (embeddings, paths, ...) of the given rows of the accumulated ``data``."""
        raise NotImplementedError

    def _score(self, queries: Any, galleries: Any, ii_top: Tensor) -> Tensor:
        top_n = ii_top.shape[1]
        new = torch.as_tensor(self.inference(queries, galleries, ii_top, top_n)).float()
        if new.shape != ii_top.shape:
            raise RuntimeError(f"inference returned shape {tuple(new.shape)}, expected {tuple(ii_top.shape)}.")
        if torch.isnan(new).any():
            raise ValueError(f"The pairwise model of {type(self).__name__} returned NaN scores.")
        return new

    def process(self, distances: Tensor, queries: Any, galleries: Any) -> Tensor:
        """New distances ``[Q, G]``: each query's ``top_n`` nearest galleries re-scored, the others behind them.

        ``top_n`` larger than the gallery means the whole gallery. The input tensor is not modified.
        """
        if distances.ndim != 2 or distances.shape[0] != len(queries) or distances.shape[1] != len(galleries):
            raise ValueError(
                f"distances must be [n_queries={len(queries)}, n_galleries={len(galleries)}], "
                f"got {tuple(distances.shape)}."
            )
        n_galleries = distances.shape[1]
        out = distances.clone()
        if n_galleries == 0 or len(queries) == 0:
            return out
        top_n = min(self.top_n, n_galleries)
        order = torch.argsort(distances, dim=1, stable=True)
        ii_top = order[:, :top_n]
        new = self._score(queries, galleries, ii_top).to(out.device)
        if top_n < n_galleries:
            next_old = distances.gather(1, order[:, top_n : top_n + 1]).squeeze(1).double()
            max_new = new.max(dim=1).values.double()
            margin = 1e-5 * (1 + max_new.abs())
            shift = torch.nan_to_num((max_new - next_old + margin).clamp_min(0), posinf=0.0)
            out = (out.double() + shift[:, None]).to(out.dtype)
        out.scatter_(1, ii_top, new.to(out.dtype))
        return out

    def process_by_dict(self, distances: Tensor, data: Dict[str, Any]) -> Tensor:
        """``process`` with the queries and galleries taken from ``data`` (the accumulated dataset)."""
        n = len(data[self.is_query_key])
        is_query = _as_mask(data[self.is_query_key], self.is_query_key, n)
        is_gallery = _as_mask(data[self.is_gallery_key], self.is_gallery_key, n)
        queries = self._items(data, is_query.nonzero().flatten())
        galleries = self._items(data, is_gallery.nonzero().flatten())
        return self.process(distances, queries, galleries)

    def process_top_n(
        self, distances: Tensor, query_ids: Tensor, retrieved_ids: Tensor, data: Dict[str, Any]
    ) -> Tensor:
        """New distances ``[Q, n]`` of the pairs ``(query_ids[i], retrieved_ids[i, j])`` (rows of ``data``)."""
        query_ids, retrieved_ids = torch.as_tensor(query_ids).long(), torch.as_tensor(retrieved_ids).long()
        if retrieved_ids.ndim != 2 or len(retrieved_ids) != len(query_ids) or distances.shape != retrieved_ids.shape:
            raise ValueError(
                f"Expected distances [Q, n], query_ids [Q] and retrieved_ids [Q, n], got {tuple(distances.shape)}, "
                f"{tuple(query_ids.shape)} and {tuple(retrieved_ids.shape)}."
            )
        if retrieved_ids.numel() == 0:
            return distances.clone()
        # galleries = only the rows that were retrieved, re-indexed
        rows, inverse = torch.unique(retrieved_ids.flatten(), return_inverse=True)
        queries = self._items(data, query_ids)
        galleries = self._items(data, rows)
        return self._score(queries, galleries, inverse.view_as(retrieved_ids)).to(distances.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(top_n={self.top_n}, model={type(self.model).__name__})"  # type: ignore


class PairwiseEmbeddingsPostprocessor(PairwisePostprocessor):
    """Re-ranks with a pairwise model on embeddings (e.g. ``LinearTrivialDistanceSiamese``).

    Args:
        top_n: how many nearest galleries of each query to re-rank (> 1).
        pairwise_model: the model; ``predict(embeddings1, embeddings2)`` gives distances.
        num_workers: DataLoader workers of the pair inference.
        batch_size: pairs per batch.
        verbose: progress bar.
        use_fp16: float16 autocast on CUDA; ignored on the CPU, as in OML.
        is_query_key, is_gallery_key, embeddings_key: keys of the accumulated data.

    >>> from oml.models.meta.siamese import LinearTrivialDistanceSiamese
    >>> model = LinearTrivialDistanceSiamese(feat_dim=1, identity_init=True)
    >>> model.proj.weight.data *= 10  # the same order, ten times larger distances
    >>> pp = PairwiseEmbeddingsPostprocessor(top_n=2, pairwise_model=model, num_workers=0, batch_size=4)
    >>> distances = torch.tensor([[0.1, 0.2, 0.3]])
    >>> out = pp.process(distances, queries=torch.tensor([[0.0]]), galleries=torch.tensor([[0.1], [0.2], [0.3]]))
    >>> out[0, :2]  # the re-scored top 2
    tensor([1., 2.])
    >>> bool(out[0, 2] > 2.0)  # the untouched gallery is shifted behind them
    True
    >>> distances  # not modified
    tensor([[0.1000, 0.2000, 0.3000]])
    """

    def __init__(
        self,
        top_n: int,
        pairwise_model: IPairwiseModel,
        num_workers: int,
        batch_size: int,
        verbose: bool = False,
        use_fp16: bool = False,
        is_query_key: str = IS_QUERY_KEY,
        is_gallery_key: str = IS_GALLERY_KEY,
        embeddings_key: str = EMBEDDINGS_KEY,
    ):
        self._set_up(top_n, pairwise_model, (num_workers, batch_size, verbose, use_fp16), is_query_key, is_gallery_key)
        self.embeddings_key = embeddings_key

    def inference(self, queries: Tensor, galleries: Tensor, ii_top: Tensor, top_n: int) -> Tensor:
        if not isinstance(queries, Tensor) or not isinstance(galleries, Tensor):
            raise TypeError("queries and galleries must be tensors of embeddings.")
        n_queries = len(queries)
        embeddings1 = queries.repeat_interleave(top_n, dim=0)
        embeddings2 = galleries[ii_top.reshape(-1).to(galleries.device)]
        scores = pairwise_inference_on_embeddings(
            model=self.model,
            embeddings1=embeddings1,
            embeddings2=embeddings2,
            num_workers=self.num_workers,
            batch_size=self.batch_size,
            verbose=self.verbose,
            use_fp16=self.use_fp16,
        )
        return scores.view(n_queries, top_n)

    def _items(self, data: Dict[str, Any], rows: Tensor) -> Tensor:
        return torch.as_tensor(data[self.embeddings_key])[rows]

    @property
    def needed_keys(self) -> List[str]:
        return [self.is_query_key, self.is_gallery_key, self.embeddings_key]


class PairwiseImagesPostprocessor(PairwisePostprocessor):
    """Re-ranks with a pairwise model on images (e.g. STIR's ``ConcatSiamese``).

    Args:
        top_n: how many nearest galleries of each query to re-rank (> 1).
        pairwise_model: the model; ``predict(images1, images2)`` gives distances (e.g. probabilities of being
            a negative pair).
        transforms: transforms of the images for the model.
        num_workers: DataLoader workers of the pair inference.
        batch_size: pairs per batch.
        verbose: progress bar.
        use_fp16: float16 autocast on CUDA; ignored on the CPU, as in OML.
        is_query_key, is_gallery_key, paths_key: keys of the accumulated data.

    If the accumulated data also holds boxes (``x1, y1, x2, y2``, as the pipelines accumulate for tables with
    boxes), the images are cropped by them (OML 0.4.4 re-ranked the whole images).
    """

    bboxes_keys = (X1_KEY, Y1_KEY, X2_KEY, Y2_KEY)

    def __init__(
        self,
        top_n: int,
        pairwise_model: IPairwiseModel,
        transforms: TTransforms,
        num_workers: int = 0,
        batch_size: int = 128,
        verbose: bool = True,
        use_fp16: bool = False,
        is_query_key: str = IS_QUERY_KEY,
        is_gallery_key: str = IS_GALLERY_KEY,
        paths_key: str = PATHS_KEY,
    ):
        self._set_up(top_n, pairwise_model, (num_workers, batch_size, verbose, use_fp16), is_query_key, is_gallery_key)
        self.transforms = transforms
        self.paths_key = paths_key

    @staticmethod
    def _split(items: Sequence[Any]) -> Tuple[List[Any], Optional[List[TBox]]]:
        """Items are paths or ``(path, box)`` tuples (made by ``_items`` when the data holds boxes)."""
        if len(items) and isinstance(items[0], tuple):
            return [item[0] for item in items], [item[1] for item in items]
        return list(items), None

    def inference(self, queries: Sequence[Any], galleries: Sequence[Any], ii_top: Tensor, top_n: int) -> Tensor:
        query_paths, query_boxes = self._split(queries)
        gallery_paths, gallery_boxes = self._split(galleries)
        flat = ii_top.reshape(-1).tolist()
        paths1 = [path for path in query_paths for _ in range(top_n)]
        paths2 = [gallery_paths[i] for i in flat]
        bboxes1 = [box for box in query_boxes for _ in range(top_n)] if query_boxes is not None else None
        bboxes2 = [gallery_boxes[i] for i in flat] if gallery_boxes is not None else None
        scores = pairwise_inference_on_images(
            model=self.model,
            paths1=paths1,
            paths2=paths2,
            transform=self.transforms,
            num_workers=self.num_workers,
            batch_size=self.batch_size,
            verbose=self.verbose,
            use_fp16=self.use_fp16,
            bboxes1=bboxes1 if bboxes1 is not None or bboxes2 is not None else None,
            bboxes2=bboxes2 if bboxes1 is not None or bboxes2 is not None else None,
        )
        return scores.view(len(query_paths), top_n)

    def _items(self, data: Dict[str, Any], rows: Tensor) -> List[Any]:
        paths = data[self.paths_key]
        rows_list = torch.as_tensor(rows).tolist()
        if not all(key in data for key in self.bboxes_keys):
            return [paths[i] for i in rows_list]
        coords = [torch.as_tensor(data[key]) for key in self.bboxes_keys]
        return [(paths[i], tuple(int(c[i]) for c in coords)) for i in rows_list]

    @property
    def needed_keys(self) -> List[str]:
        return [self.is_query_key, self.is_gallery_key, self.paths_key]


__all__ = ["PairwisePostprocessor", "PairwiseEmbeddingsPostprocessor", "PairwiseImagesPostprocessor"]
