"""A search index over gallery embeddings: top-k queries, k-NN classification, "no match" thresholds, save/load.

>>> galleries = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
>>> index = SearchIndex(galleries, ids=["a.jpg", "b.jpg", "c.jpg"], labels=["cat", "cat", "dog"])
>>> result = index.search(torch.tensor([[0.9, 0.0], [5.0, 4.0]]), top_k=2)
>>> result.ids
[['b.jpg', 'a.jpg'], ['c.jpg', 'b.jpg']]
>>> result.distances
tensor([[0.1000, 0.9000],
        [1.0000, 5.6569]])
>>> result.apply_threshold(2.0).labels
[['cat', 'cat'], ['dog', None]]
>>> index.classify(torch.tensor([[4.0, 4.0]]), top_k=3)[0]
['dog']
"""

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from oml.retrieval.backends import SearchBackend, get_backend
from oml.retrieval.decision import calibrate_threshold, knn_vote
from oml.utils.checks import check_embeddings, check_int
from oml.utils.io import FileFormatError, atomic_write, check_torch_file, describe_torch_object
from oml.utils.labels import encode_labels

if TYPE_CHECKING:  # the image stack is imported by from_images only: searching embeddings does not need it
    from oml.transforms.images.utils import TTransforms

TPath = Union[str, Path]
TKey = Union[int, str]
INDEX_FORMAT = "oml-search-index-v1"


def _plain_keys(values: Optional[Sequence[Any]], n: int, name: str) -> Optional[List[TKey]]:
    """ids / labels as a list of python ints or strings (what a weights_only file can hold)."""
    if values is None:
        return None
    values = values.tolist() if isinstance(values, (Tensor, np.ndarray)) else list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values, expected {n} (one per embedding).")
    out: List[TKey] = []
    for i, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}[{i}] is a bool; use ints or strings.")
        if isinstance(value, (int, np.integer)):
            out.append(int(value))
        elif isinstance(value, (str, Path)):
            out.append(str(value))
        else:
            raise TypeError(f"{name}[{i}] must be an int, a string or a path, got {type(value).__name__}.")
    return out


@dataclass(eq=False)
class SearchResult:
    """Nearest galleries of every query.

    Attributes:
        distances: ``[Q, k]`` Euclidean distances, ascending (``inf`` where there is no match).
        indices: ``[Q, k]`` positions in the index (``-1`` where there is no match).
        index: the index that was searched (a ``SearchIndex`` or a ``ShardedSearchIndex``).
        keys: the ids and labels (None without labels) of the returned positions, by position, when the index
            does not hold all of them (``ShardedSearchIndex``); else they are looked up in ``index``.
    """

    distances: Tensor
    indices: Tensor
    index: Any
    keys: Optional[Tuple[Dict[int, TKey], Optional[Dict[int, TKey]]]] = None

    def _lookup(self, values: Union[None, List[TKey], Dict[int, TKey]]) -> Optional[List[List[Optional[TKey]]]]:
        if values is None:
            return None
        return [[values[i] if i >= 0 else None for i in row] for row in self.indices.tolist()]

    @property
    def ids(self) -> List[List[Optional[TKey]]]:
        """Gallery ids of the results (None where there is no match)."""
        return self._lookup(self.keys[0] if self.keys else self.index.ids)  # type: ignore[return-value]

    @property
    def labels(self) -> Optional[List[List[Optional[TKey]]]]:
        """Gallery labels of the results (None where there is no match), or None if the index has no labels."""
        return self._lookup(self.keys[1] if self.keys else self.index.labels)

    def apply_threshold(self, threshold: float) -> "SearchResult":
        """A copy where the results with ``distance >= threshold`` become "no match" (index -1, distance inf)."""
        reject = self.distances >= threshold
        return SearchResult(
            distances=self.distances.masked_fill(reject, float("inf")),
            indices=self.indices.masked_fill(reject, -1),
            index=self.index,
            keys=self.keys,
        )

    def __len__(self) -> int:
        return len(self.indices)


class SearchIndex:
    """Gallery embeddings with their ids (and optional labels) that answer top-k Euclidean queries.

    Args:
        embeddings: ``[G, D]`` finite gallery embeddings (G >= 1).
        ids: an id per gallery item (ints or strings, e.g. image paths); default ``0..G-1``.
        labels: an optional label per gallery item (ints or strings), for ``classify`` and ``SearchResult.labels``.
        backend: ``"exact"`` (default: ``oml.functional.knn.exact_knn``, exact and memory-bounded),
            ``"faiss_flat"``, ``"faiss_ivf"`` or ``"faiss_hnsw"`` (approximate, for large galleries; need the
            optional ``faiss`` package, see ``oml.retrieval.backends``).
        backend_params: parameters of the backend (e.g. ``nprobe=32`` for ``faiss_ivf``).
    """

    def __init__(
        self,
        embeddings: Tensor,
        ids: Optional[Sequence[Any]] = None,
        labels: Optional[Sequence[Any]] = None,
        backend: str = "exact",
        **backend_params: Any,
    ):
        embeddings = check_embeddings(embeddings, "embeddings")
        if len(embeddings) == 0:
            raise ValueError("Cannot build a search index from an empty gallery (0 embeddings).")
        self.embeddings = embeddings.contiguous()
        self.ids: List[TKey] = _plain_keys(ids, len(embeddings), "ids") or list(range(len(embeddings)))
        self.labels: Optional[List[TKey]] = _plain_keys(labels, len(embeddings), "labels")
        self.backend_name = backend
        self.backend: SearchBackend = get_backend(backend, **backend_params)
        self.backend.build(self.embeddings)

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def from_images(
        cls,
        extractor: nn.Module,
        paths: Sequence[TPath],
        transform: "TTransforms",
        labels: Optional[Sequence[Any]] = None,
        ids: Optional[Sequence[Any]] = None,
        batch_size: int = 128,
        num_workers: int = 0,
        use_fp16: bool = False,
        verbose: bool = False,
        backend: str = "exact",
        **backend_params: Any,
    ) -> "SearchIndex":
        """Embed the images with ``extractor`` (``inference_on_images``) and index them; ids default to the paths."""
        from oml.inference.flat import inference_on_images

        embeddings = inference_on_images(
            extractor,
            paths=paths,
            transform=transform,
            num_workers=num_workers,
            batch_size=batch_size,
            verbose=verbose,
            use_fp16=use_fp16,
        )
        ids = ids if ids is not None else [str(p) for p in paths]
        return cls(embeddings.float(), ids=ids, labels=labels, backend=backend, **backend_params)

    def add(
        self, embeddings: Tensor, ids: Optional[Sequence[Any]] = None, labels: Optional[Sequence[Any]] = None
    ) -> None:
        """Append gallery items (ids default to the next positions; labels are required if the index has them)."""
        embeddings = check_embeddings(embeddings, "embeddings", dim=self.dim, dim_owner="the index")
        n_old, n_new = len(self.embeddings), len(embeddings)
        new_ids = _plain_keys(ids, n_new, "ids") or list(range(n_old, n_old + n_new))
        new_labels = _plain_keys(labels, n_new, "labels")
        if (self.labels is None) != (new_labels is None):
            raise ValueError("Give labels for the new items exactly when the index has labels.")
        self.embeddings = torch.cat([self.embeddings, embeddings.to(self.embeddings.dtype)])
        self.ids.extend(new_ids)
        if self.labels is not None:
            self.labels.extend(new_labels)  # type: ignore[arg-type]
        self.backend.add(embeddings)

    # ------------------------------------------------------------------------------------------- queries
    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.embeddings)

    def __repr__(self) -> str:
        has_labels = self.labels is not None
        return f"SearchIndex(n={len(self)}, dim={self.dim}, backend={self.backend_name!r}, labels={has_labels})"

    def search(self, queries: Tensor, top_k: int) -> SearchResult:
        """The ``top_k`` nearest galleries of every query (``min(top_k, len(index))`` columns), ties by position."""
        top_k = check_int(top_k, "top_k")
        queries = check_embeddings(queries, "queries", dim=self.dim, dim_owner="the index")
        k = min(top_k, len(self))
        if len(queries) == 0:
            return SearchResult(torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long), self)
        distances, indices = self.backend.search(self.embeddings, queries.detach().to(self.embeddings.dtype), k)
        return SearchResult(distances=distances, indices=indices.long(), index=self)

    def classify(self, queries: Tensor, top_k: int = 5, weighting: str = "distance") -> Tuple[List[Any], Tensor]:
        """k-NN classification: the labels of the queries by a (distance-weighted) vote of their ``top_k`` neighbours.

        Returns:
            ``(labels, confidence)``: a label per query (None if nothing was found) and the share of the vote
            weight of that label (see ``oml.retrieval.decision.knn_vote``).
        """
        if self.labels is None:
            raise ValueError("classify needs an index with labels: SearchIndex(embeddings, labels=...).")
        result = self.search(queries, top_k)
        classes, codes = self._label_codes()
        neighbour_codes = torch.where(
            result.indices >= 0, codes[result.indices.clamp_min(0)], torch.full_like(result.indices, -1)
        )
        winners, confidence = knn_vote(result.distances, neighbour_codes, weighting=weighting)
        labels = [classes[c] if c >= 0 else None for c in winners.tolist()]
        return labels, confidence

    def _label_codes(self) -> Tuple[List[TKey], Tensor]:
        """The distinct labels (in order of appearance) and the code of every gallery item (cached)."""
        cached = getattr(self, "_codes_cache", None)
        if cached is None or len(cached[1]) != len(self):
            classes, (codes,) = encode_labels(self.labels)
            cached = (classes, codes)
            self._codes_cache = cached
        return cached

    def calibrate_threshold(
        self, queries: Tensor, query_labels: Sequence[Any], max_false_match_rate: float = 0.01
    ) -> float:
        """A "no match" distance threshold from labelled queries: at most ``max_false_match_rate`` of the wrong
        top-1 matches are accepted (``distance < threshold``). Queries whose label is not in the index count as
        wrong matches, so open-set queries can be used to calibrate. Use it with ``SearchResult.apply_threshold``.
        """
        if self.labels is None:
            raise ValueError("calibrate_threshold needs an index with labels.")
        return threshold_of_top1(self.search(queries, top_k=1), query_labels, max_false_match_rate)

    # ------------------------------------------------------------------------------------------- persistence
    def save(self, path: TPath, prepared: bool = True) -> None:
        """Save to one file with ``torch.save`` (tensors, strings and numbers only: ``load`` uses weights_only).

        The file is written atomically (``oml.utils.io.atomic_write``) and its parts carry CRC-32 checksums,
        which ``load`` verifies.

        Args:
            path: the file.
            prepared: also store the exact backend's gallery operand (``PreparedGallery``: the one of the last
                search, else the float32 one, built now), so that the first search after ``load`` does not rebuild
                it. It makes the file about twice as large (``G x (D + 2)`` values more); loading it is several
                times faster than rebuilding it (see docs/retrieval.md).
        """
        write_index_file(path, self.content(prepared=prepared))

    def content(self, prepared: bool = True) -> Dict[str, Any]:
        """What ``save`` writes: a dict of tensors, strings and numbers (see ``write_index_file``)."""
        if prepared:
            self.backend.prepare(self.embeddings)
        return index_content(
            self.embeddings,
            self.ids,
            self.labels,
            self.backend_name,
            dict(self.backend.params),
            self.backend.serialize(),
            self.backend.prepared_parts(self.embeddings) if prepared else None,
        )

    @classmethod
    def load(cls, path: TPath) -> "SearchIndex":
        """Load an index saved by ``save`` (``torch.load(weights_only=True)``: no code runs while reading).

        The file is verified first (``oml.utils.io.check_torch_file``: the CRC-32 checksums of the ``torch.save``
        container), so a damaged copy is refused instead of answering queries with wrong vectors.

        Raises:
            FileNotFoundError: if there is no such file.
            oml.utils.io.FileFormatError: if the file is empty, truncated, corrupted, of another kind, or another
                ``torch.save`` file (e.g. model weights); the message names the file and says what it holds.
        """
        return cls.from_content(read_index_file(path), path)

    @classmethod
    def from_content(cls, content: Dict[str, Any], path: TPath) -> "SearchIndex":
        """The index of a dict read by ``read_index_file`` from ``path`` (named in the errors)."""
        index = cls.__new__(cls)
        index.embeddings = check_embeddings(content["embeddings"], "embeddings")
        if len(index.embeddings) == 0:
            raise FileFormatError(f"{path} holds an empty gallery (0 embeddings).")
        index.ids = _plain_keys(content["ids"], len(index.embeddings), "ids")  # type: ignore[assignment]
        index.labels = _plain_keys(content["labels"], len(index.embeddings), "labels")
        index.backend_name = content["backend"]
        index.backend = get_backend(content["backend"], **content["backend_params"])
        parts = _check_prepared_parts(content.get("prepared"), index.embeddings, path)
        index.backend.deserialize(content["backend_state"], index.embeddings, parts)
        return index


def threshold_of_top1(result: SearchResult, query_labels: Sequence[Any], max_false_match_rate: float) -> float:
    """The "no match" threshold of ``calibrate_threshold`` from the top-1 ``result`` of labelled queries."""
    query_labels = _plain_keys(query_labels, len(result), "query_labels")  # type: ignore[assignment]
    top1 = [row[0] for row in result.labels]  # type: ignore[union-attr]
    is_correct = torch.tensor([a == b for a, b in zip(top1, query_labels)], dtype=torch.bool)
    return calibrate_threshold(result.distances[:, 0], is_correct, max_false_match_rate)


def _check_prepared_parts(parts: Any, embeddings: Tensor, path: TPath) -> Optional[Dict[str, Tensor]]:
    """The saved gallery operand parts (None in files without them), checked against the saved embeddings."""
    if parts is None:
        return None
    n, dim = embeddings.shape
    expected = {"center": (dim,), "gallery_aug": (n, dim + 2), "sq_norms": (n,)}
    items = parts.items() if isinstance(parts, dict) else ()
    shapes = {name: tuple(value.shape) for name, value in items if isinstance(value, Tensor)}
    if shapes != expected or parts["sq_norms"].dtype != torch.float64 or not parts["center"].is_floating_point():
        raise FileFormatError(
            f"{path} holds a prepared gallery operand of shapes {shapes}, but its embeddings are {(n, dim)} "
            f"(expected {expected}): the file is inconsistent; save the index again."
        )
    return parts


def index_content(
    embeddings: Tensor,
    ids: List[TKey],
    labels: Optional[List[TKey]],
    backend: str,
    backend_params: Dict[str, Any],
    backend_state: Optional[Tensor] = None,
    prepared: Optional[Dict[str, Tensor]] = None,
) -> Dict[str, Any]:
    """The dict an index file holds (``INDEX_FORMAT``), written by ``write_index_file``, read by ``from_content``."""
    return {
        "format": INDEX_FORMAT,
        "embeddings": embeddings,
        "ids": ids,
        "labels": labels,
        "backend": backend,
        "backend_params": backend_params,
        "backend_state": backend_state,
        "prepared": prepared,
    }


def write_index_file(path: TPath, content: Dict[str, Any]) -> None:
    """Write an index's ``content`` with ``torch.save``, atomically (``oml.utils.io.atomic_write``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # through a file object, so the archive inside is named "archive" and not after the temporary file
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(content, f)


def read_index_file(path: TPath) -> Dict[str, Any]:
    """The content of an index file written by ``write_index_file``, after verifying its checksums and format."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"There is no search index file at {path}.")
    expected = f"a search index saved by SearchIndex.save ({INDEX_FORMAT})"
    path = check_torch_file(path, expected=expected)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as e:
        raise FileFormatError(
            f"{path} cannot be read by torch.load ({type(e).__name__}: {e}); expected {expected}."
        ) from e
    if not isinstance(content, dict) or content.get("format") != INDEX_FORMAT:
        raise FileFormatError(f"{path} holds {describe_torch_object(content)}, not {expected}.")
    return content


__all__ = ["SearchIndex", "SearchResult"]
