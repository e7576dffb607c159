"""Search backends of ``SearchIndex``: exact search (``oml.functional.knn``) and Faiss indexes (optional).

A backend holds no embeddings of its own for the exact search; the Faiss ones keep a Faiss index that
can be serialised to bytes (``faiss.serialize_index``), so a saved ``SearchIndex`` does not need to be
rebuilt. Faiss returns squared distances with a cancellation error; the candidates' distances are
recomputed exactly (float64, as ``exact_knn`` does) and re-sorted, ties by gallery index.
"""

import math
from typing import Any, Dict, Optional, Tuple, Type

import numpy as np
import torch
from torch import Tensor

from oml.functional.distances import exact_distances_of_topk
from oml.functional.knn import PreparedGallery, exact_knn, prepared_gallery_for
from oml.functional.ordering import sort_by_value_then_index


def import_faiss() -> Any:
    """The ``faiss`` module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            'The Faiss backends need the optional package faiss: pip install "oml[faiss]" (or faiss-cpu / '
            f'faiss-gpu). Use backend="exact" otherwise. ({e})'
        ) from e
    return faiss


class SearchBackend:
    """Finds the ``k`` nearest galleries. ``params`` are the constructor arguments (saved with the index)."""

    name = ""
    exact = True

    def __init__(self, **params: Any):
        if params:
            raise TypeError(f"The {self.name!r} backend takes no parameters, got {sorted(params)}.")
        self.params: Dict[str, Any] = {}

    def build(self, galleries: Tensor) -> None:
        """Prepare for the galleries (e.g. train and fill a Faiss index)."""
        self.prepared: Optional[PreparedGallery] = None  # made by the first search, kept for the next ones
        self.saved_parts: Optional[Dict[str, Tensor]] = None  # the parts of a prepared gallery read from a file

    def add(self, galleries: Tensor) -> None:
        """The index got more galleries (appended)."""
        self.prepared = self.saved_parts = None

    def search(self, galleries: Tensor, queries: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        """``(distances [Q, k], indices [Q, k])`` sorted by distance; -1 / inf where fewer than k were found.

        The exact search keeps the gallery operand of its GEMM (``PreparedGallery``: centred vectors and their
        squared norms, about the size of the gallery) between searches, so repeated searches skip building it.
        Which operand a search needs (its dtypes: float32, or bfloat16 when it screens) is decided by
        ``oml.functional.knn.prepared_gallery_for``, next to ``exact_knn``; the backend only keeps it.
        """
        prepared = prepared_gallery_for(queries, galleries, kept=self.prepared, parts=self.saved_parts)
        if prepared is not self.prepared:
            self.prepared, self.saved_parts = prepared, None
        return exact_knn(queries, galleries, k, prepared=prepared)

    def prepared_parts(self, galleries: Tensor) -> Optional[Dict[str, Tensor]]:
        """The parts of the kept gallery operand to save with the index (None if there is none for ``galleries``)."""
        prepared = self.prepared
        if prepared is not None and prepared.fits(galleries, prepared.compute_dtype, prepared.tile_dtype):
            return {"center": prepared.center, "gallery_aug": prepared.gallery_aug, "sq_norms": prepared.sq_norms}
        return self.saved_parts

    def prepare(self, galleries: Tensor) -> None:
        """Build the gallery operand of a search of a few queries now (``SearchIndex.save`` stores it)."""
        self.prepared = prepared_gallery_for(galleries[:1], galleries, kept=self.prepared, parts=self.saved_parts)

    def serialize(self) -> Optional[Tensor]:
        """The backend's state as a uint8 tensor (None if it has none)."""
        return None

    def deserialize(
        self, state: Optional[Tensor], galleries: Tensor, prepared_parts: Optional[Dict[str, Tensor]] = None
    ) -> None:
        """Restore the state saved by ``serialize`` (or rebuild it from ``galleries``) and the saved operand parts."""
        self.build(galleries)
        self.saved_parts = prepared_parts


class ExactBackend(SearchBackend):
    """Exact search with ``oml.functional.knn.exact_knn`` (GEMM tiles, memory bounded, exact results)."""

    name = "exact"


class FaissBackend(SearchBackend):
    """Base of the Faiss backends: builds ``self.index`` and refines its candidates with exact distances."""

    exact = False

    def __init__(self, **params: Any):
        import_faiss()
        self.params = dict(params)
        self.index: Any = None

    def _make_index(self, galleries: Tensor) -> Any:
        raise NotImplementedError

    def _configure(self, k: int) -> None:
        """Search-time settings (e.g. ``nprobe``) before a search of ``k`` neighbours."""

    @staticmethod
    def _numpy(x: Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().float().numpy())

    def build(self, galleries: Tensor) -> None:
        self.index = self._make_index(galleries)
        self.index.add(self._numpy(galleries))

    def add(self, galleries: Tensor) -> None:
        self.index.add(self._numpy(galleries))

    def search(self, galleries: Tensor, queries: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        self._configure(k)
        _, indices = self.index.search(self._numpy(queries), k)
        indices = torch.from_numpy(indices).long()
        return sort_by_value_then_index(exact_distances_of_topk(queries.cpu(), galleries.cpu(), indices), indices)

    def serialize(self) -> Optional[Tensor]:
        faiss = import_faiss()
        return torch.from_numpy(faiss.serialize_index(self.index).copy())

    def prepared_parts(self, galleries: Tensor) -> Optional[Dict[str, Tensor]]:
        return None  # a Faiss search does not use the operand of the exact kNN

    def prepare(self, galleries: Tensor) -> None:
        pass

    def deserialize(
        self, state: Optional[Tensor], galleries: Tensor, prepared_parts: Optional[Dict[str, Tensor]] = None
    ) -> None:
        if state is None:
            self.build(galleries)
            return
        faiss = import_faiss()
        self.index = faiss.deserialize_index(state.numpy())
        if self.index.ntotal != len(galleries) or self.index.d != galleries.shape[1]:
            raise ValueError(
                f"The saved Faiss index holds {self.index.ntotal} vectors of dimension {self.index.d}, but the "
                f"saved embeddings are {tuple(galleries.shape)}: the file is inconsistent."
            )


class FaissFlatBackend(FaissBackend):
    """Faiss ``IndexFlatL2``: exact brute force in Faiss (a baseline; ``exact`` is the default)."""

    name = "faiss_flat"
    exact = True

    def __init__(self) -> None:
        super().__init__()

    def _make_index(self, galleries: Tensor) -> Any:
        return import_faiss().IndexFlatL2(galleries.shape[1])


class FaissIVFBackend(FaissBackend):
    """Faiss ``IndexIVFFlat``: k-means cells, a query visits the ``nprobe`` nearest cells (approximate).

    Args:
        nlist: number of cells (default ``round(4 * sqrt(G))``, at most ``G // 39`` so that k-means has
            39 points per centroid, at least 1).
        nprobe: cells visited per query (more: better recall, slower).
        seed: k-means seed.
    """

    name = "faiss_ivf"

    def __init__(self, nlist: Optional[int] = None, nprobe: int = 16, seed: int = 0):
        if nlist is not None and nlist < 1:
            raise ValueError(f"nlist must be positive, got {nlist}.")
        if nprobe < 1:
            raise ValueError(f"nprobe must be positive, got {nprobe}.")
        super().__init__(nlist=nlist, nprobe=nprobe, seed=seed)

    def _make_index(self, galleries: Tensor) -> Any:
        faiss = import_faiss()
        n, dim = galleries.shape
        nlist = self.params["nlist"] or max(1, min(round(4 * math.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, int(min(nlist, n)))
        index.cp.seed = self.params["seed"]
        index.train(self._numpy(galleries))
        return index

    def _configure(self, k: int) -> None:
        self.index.nprobe = int(self.params["nprobe"])


class FaissHNSWBackend(FaissBackend):
    """Faiss ``IndexHNSWFlat``: a navigable small-world graph (approximate, no training).

    Args:
        m: neighbours per node in the graph.
        ef_construction: candidate list size while building.
        ef_search: candidate list size while searching (at least ``k`` is used).
    """

    name = "faiss_hnsw"

    def __init__(self, m: int = 32, ef_construction: int = 80, ef_search: int = 64):
        if min(m, ef_construction, ef_search) < 1:
            raise ValueError(f"m, ef_construction and ef_search must be positive, got {m}, {ef_construction}, "
                             f"{ef_search}.")  # fmt: skip
        super().__init__(m=m, ef_construction=ef_construction, ef_search=ef_search)

    def _make_index(self, galleries: Tensor) -> Any:
        faiss = import_faiss()
        index = faiss.IndexHNSWFlat(galleries.shape[1], int(self.params["m"]))
        index.hnsw.efConstruction = int(self.params["ef_construction"])
        return index

    def _configure(self, k: int) -> None:
        self.index.hnsw.efSearch = max(int(self.params["ef_search"]), k)


BACKENDS: Dict[str, Type[SearchBackend]] = {
    backend.name: backend for backend in (ExactBackend, FaissFlatBackend, FaissIVFBackend, FaissHNSWBackend)
}


def get_backend(name: str, **params: Any) -> SearchBackend:
    """A backend by name: ``exact`` (default of ``SearchIndex``), ``faiss_flat``, ``faiss_ivf``, ``faiss_hnsw``."""
    if name not in BACKENDS:
        raise ValueError(f"Unknown search backend {name!r}. Available: {sorted(BACKENDS)}.")
    return BACKENDS[name](**params)


__all__ = [
    "BACKENDS",
    "SearchBackend",
    "ExactBackend",
    "FaissBackend",
    "FaissFlatBackend",
    "FaissIVFBackend",
    "FaissHNSWBackend",
    "get_backend",
    "import_faiss",
]
