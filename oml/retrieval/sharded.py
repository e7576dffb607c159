"""A search index whose gallery is split over the processes of a ``torch.distributed`` group.

Every rank holds one shard (its embeddings, ids and labels) and searches it exactly; the per-rank top-k
(distances and global positions) are all-gathered and merged by ``(distance, global position)`` with
``oml.functional.ordering.sort_by_value_then_index``. Global positions are ``offset + local position``,
the offsets coming from the shard sizes in rank order, so the result is the one of a single ``SearchIndex``
over the concatenation of the shards (rank 0 first), bit for bit: the exact backend's distances are the
correctly rounded ones, which do not depend on the rest of the gallery, and the global top-k is among the
union of the shards' top-k. Outside DDP (or in a group of one) it is a plain index.
"""

import json
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import torch
import torch.distributed as dist
from torch import Tensor

from oml.ddp.utils import all_gather_objects, broadcast_object, is_ddp
from oml.functional.ordering import sort_by_value_then_index
from oml.retrieval.decision import knn_vote
from oml.retrieval.index import (
    SearchIndex,
    SearchResult,
    TKey,
    _plain_keys,
    index_content,
    read_index_file,
    threshold_of_top1,
    write_index_file,
)
from oml.utils.checks import check_embeddings, check_int
from oml.utils.io import FileFormatError, write_bytes_atomic
from oml.utils.misc_torch import crc32_of_tensors

TPath = Union[str, Path]
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "oml-sharded-search-index-v1"
T = TypeVar("T")


def shard_file_name(rank: int, world_size: int) -> str:
    """The name of the file of shard ``rank`` in the folder of a saved ``ShardedSearchIndex``.

    >>> shard_file_name(1, 4)
    'shard-00001-of-00004.index'
    """
    return f"shard-{rank:05d}-of-{world_size:05d}.index"


class ShardedSearchError(RuntimeError):
    """A ``ShardedSearchIndex`` step failed on at least one rank (raised on every rank, with every rank's error)."""


def _collective(step: Callable[[], T], what: str, group: Any) -> List[Optional[T]]:
    """Run ``step`` on this rank and all-gather its result with its error: if any rank failed, every rank raises.

    The collective steps of the index must not leave the other ranks waiting forever when one rank meets bad
    input or a bad file, so each error is shared before anyone raises. Returns every rank's result (small
    objects only: they travel to every rank); ``_local`` shares the errors only.
    """
    try:
        result, error = step(), None
    except Exception as e:  # noqa: BLE001 (re-raised below, on every rank)
        if not is_ddp():
            raise
        result, error = None, f"{type(e).__name__}: {e}"
    gathered = all_gather_objects((error, result), group=group)
    errors = [f"rank {rank}: {e}" for rank, (e, _) in enumerate(gathered) if e]
    if errors:
        raise ShardedSearchError(f"{what} failed on {len(errors)} of {len(gathered)} ranks:\n" + "\n".join(errors))
    return [value for _, value in gathered]


def _size(group: Any) -> int:
    return dist.get_world_size(group) if is_ddp() else 1


class ShardedSearchIndex:
    """A ``SearchIndex`` whose gallery is split over the processes of a ``torch.distributed`` group.

    Construct it on every rank of the group with that rank's shard (collective). Global positions (the
    ``indices`` of the results) are ``offset + local position`` with the shards in rank order; default ids are
    those positions. A shard may be empty (but not all of them). Every method is collective: call it on every
    rank, in the same order.

    Args:
        embeddings: ``[G_rank, D]`` finite embeddings of this rank's shard (same D and dtype on every rank).
        ids: an id per item of the shard (ints or strings); default: the global positions.
        labels: an optional label per item (given on every rank or on none).
        backend: as in ``SearchIndex``; ``"exact"`` (default) gives the results of one ``SearchIndex`` over the
            whole gallery, bit for bit. A Faiss backend is built per shard: ``faiss_flat`` is exact too, the IVF
            and HNSW ones are approximate per shard (IVF trains its cells on each shard separately).
        group: the process group (default: the whole world). Outside DDP the index is a plain one.
        backend_params: parameters of the backend.
    """

    def __init__(
        self,
        embeddings: Tensor,
        ids: Optional[Sequence[Any]] = None,
        labels: Optional[Sequence[Any]] = None,
        backend: str = "exact",
        group: Any = None,
        **backend_params: Any,
    ):
        self._join(group)

        def check() -> Dict[str, Any]:
            x = check_embeddings(embeddings, "embeddings")
            return {"n": len(x), "dim": int(x.shape[1]), "dtype": str(x.dtype), "labels": labels is not None}

        self._set_layout(_collective(check, "Building the ShardedSearchIndex", group))  # type: ignore[arg-type]
        embeddings = embeddings.contiguous()
        if ids is None:
            ids = list(range(self.offset, self.offset + len(embeddings)))

        def build() -> Optional[SearchIndex]:
            if len(embeddings) == 0:  # no SearchIndex (it refuses an empty gallery), but the same checks of the keys
                _plain_keys(ids, 0, "ids")
                _plain_keys(labels, 0, "labels")
                return None
            return SearchIndex(embeddings, ids=ids, labels=labels, backend=backend, **backend_params)

        self.shard = self._local(build, "Building the ShardedSearchIndex")
        self.backend_name = backend
        self.embeddings = embeddings  # [0, D] on a rank with an empty shard

    def _join(self, group: Any) -> None:
        self.group = group
        self.rank = dist.get_rank(group) if is_ddp() else 0
        self.world_size = _size(group)

    def _local(self, step: Callable[[], T], what: str) -> T:
        """``step`` on this rank, its error (not its result) shared with every rank (see ``_collective``)."""
        result: List[T] = []
        _collective(lambda: result.append(step()), what, self.group)
        return result[0]

    def _set_layout(self, shards: List[Dict[str, Any]]) -> None:
        """Sizes, offsets, dimension and dtype from every rank's description of its shard (checked to agree)."""
        for key, what in (("dim", "dimension"), ("dtype", "dtype"), ("labels", "labels given")):
            values = [s[key] for s in shards]
            if len(set(values)) > 1:
                raise ValueError(f"The shards disagree on the {what}: {values} (by rank); they must be equal.")
        self.shard_sizes: List[int] = [s["n"] for s in shards]
        if sum(self.shard_sizes) == 0:
            raise ValueError("Cannot build a search index from an empty gallery (every shard is empty).")
        self.offset = sum(self.shard_sizes[: self.rank])
        self.dim, self.has_labels = shards[0]["dim"], shards[0]["labels"]
        self.dtype = getattr(torch, shards[0]["dtype"].replace("torch.", ""))

    # ------------------------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        """The size of the whole gallery (all shards)."""
        return sum(self.shard_sizes)

    def __repr__(self) -> str:
        return (
            f"ShardedSearchIndex(n={len(self)}, shards={self.shard_sizes}, dim={self.dim}, "
            f"backend={self.backend_name!r}, labels={self.has_labels})"
        )

    def search(self, queries: Optional[Tensor], top_k: int, broadcast: bool = False) -> SearchResult:
        """The ``top_k`` nearest galleries of every query in the whole gallery, ties by global position.

        Collective: every rank passes the same ``queries`` and ``top_k`` (checked: their shapes and a CRC-32 of
        their bytes are compared, a mismatch is an error on every rank), or ``broadcast=True`` sends rank 0's
        (the other ranks may pass None). Every rank gets the whole result. ``SearchResult.ids`` / ``labels``
        hold the ids / labels of the returned rows, gathered from the ranks that own them.
        """
        queries, top_k = self._agree_on_queries(queries, top_k, broadcast)
        k = min(top_k, len(self))

        def local_search() -> Tuple[Tensor, Tensor]:
            distances = torch.full((len(queries), k), float("inf"), dtype=self.dtype)
            indices = torch.full((len(queries), k), -1, dtype=torch.long)
            if self.shard is not None and len(queries):
                found = self.shard.search(queries, k)
                n_found = found.indices.shape[1]
                distances[:, :n_found] = found.distances.cpu()
                indices[:, :n_found] = found.indices.cpu() + self.offset
            return distances, indices

        distances, indices = self._local(local_search, "ShardedSearchIndex.search")
        distances, indices = self._gather_cat(distances), self._gather_cat(indices)
        distances, indices = sort_by_value_then_index(distances, indices, k)
        return SearchResult(distances=distances, indices=indices, index=self, keys=self._keys_of(indices))

    def _agree_on_queries(self, queries: Optional[Tensor], top_k: int, broadcast: bool) -> Tuple[Tensor, int]:
        """The queries and ``top_k`` of this search, the same on every rank (broadcast or checked)."""
        if broadcast:
            queries, top_k = broadcast_object((queries, top_k) if self.rank == 0 else None, group=self.group)

        def check() -> Tuple[Tuple[int, ...], int, int]:
            top_k_ = check_int(top_k, "top_k")
            checked = check_embeddings(queries, "queries", dim=self.dim, dim_owner="the index").detach().cpu()
            return tuple(checked.shape), top_k_, crc32_of_tensors(checked)

        seen = _collective(check, "ShardedSearchIndex.search", self.group)
        if len(set(seen)) > 1:
            raise ValueError(
                f"ShardedSearchIndex.search got different queries or top_k on the ranks (shape, top_k, CRC-32 by "
                f"rank: {seen}); pass the same ones on every rank, or broadcast=True to use rank 0's."
            )
        return queries.detach().to(self.dtype), seen[0][1]  # type: ignore[union-attr]

    def _gather_cat(self, x: Tensor) -> Tensor:
        """All-gather ``x`` (the same shape on every rank) and concatenate along dim 1, in rank order."""
        if self.world_size == 1:
            return x
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(self.group) == "nccl" else None
        local = x.to(device) if device is not None else x
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local, group=self.group)
        return torch.cat([p.cpu() for p in parts], dim=1)

    def _keys_of(self, indices: Tensor) -> Tuple[Dict[int, TKey], Optional[Dict[int, TKey]]]:
        """The ids (and labels) of the global positions in ``indices``, from the ranks that hold them."""
        wanted = torch.unique(indices[(indices >= self.offset) & (indices < self.offset + len(self.embeddings))])
        local = [int(i) - self.offset for i in wanted.tolist()]
        shard_ids = self.shard.ids if self.shard is not None else []
        shard_labels = (self.shard.labels if self.shard is not None else None) or []
        mine = {
            "ids": {self.offset + i: shard_ids[i] for i in local},
            "labels": {self.offset + i: shard_labels[i] for i in local} if shard_labels else {},
        }
        ids: Dict[int, TKey] = {}
        labels: Dict[int, TKey] = {}
        for part in all_gather_objects(mine, group=self.group):
            ids.update(part["ids"])
            labels.update(part["labels"])
        return ids, (labels if self.has_labels else None)

    def classify(self, queries: Tensor, top_k: int = 5, weighting: str = "distance") -> Tuple[List[Any], Tensor]:
        """k-NN classification over the whole gallery, as ``SearchIndex.classify`` (collective)."""
        if not self.has_labels:
            raise ValueError("classify needs an index with labels: ShardedSearchIndex(embeddings, labels=...).")
        result = self.search(queries, top_k)
        codes: Dict[TKey, int] = {}  # in order of appearance (the vote does not depend on them)
        rows = [[-1 if x is None else codes.setdefault(x, len(codes)) for x in row] for row in result.labels]
        winners, confidence = knn_vote(
            result.distances, torch.tensor(rows, dtype=torch.long).view(result.indices.shape), weighting=weighting
        )
        classes = list(codes)
        return [classes[c] if c >= 0 else None for c in winners.tolist()], confidence

    def calibrate_threshold(
        self, queries: Tensor, query_labels: Sequence[Any], max_false_match_rate: float = 0.01
    ) -> float:
        """A "no match" distance threshold from labelled queries, as ``SearchIndex.calibrate_threshold``."""
        if not self.has_labels:
            raise ValueError("calibrate_threshold needs an index with labels.")
        return threshold_of_top1(self.search(queries, top_k=1), query_labels, max_false_match_rate)

    # ------------------------------------------------------------------------------------------- persistence
    def save(self, folder: TPath, prepared: bool = True) -> None:
        """Save to ``folder`` (collective): one file per rank (``shard_file_name``, the format of
        ``SearchIndex.save``: atomic, CRC-verified on load) and ``manifest.json`` (world size, shard sizes),
        written by rank 0 after every shard file is complete. ``prepared`` as in ``SearchIndex.save``.
        """
        folder = Path(folder)
        save_id = broadcast_object(uuid.uuid4().hex, group=self.group)
        name = shard_file_name(self.rank, self.world_size)

        def write_shard() -> None:
            if self.shard is not None:
                content = self.shard.content(prepared=prepared)
            else:  # the format of SearchIndex.save with no rows (SearchIndex.load refuses it: an empty gallery)
                content = index_content(self.embeddings, [], [] if self.has_labels else None, self.backend_name, {})
            content["shard"] = {"rank": self.rank, "world_size": self.world_size, "save_id": save_id}
            write_index_file(folder / name, content)

        self._local(write_shard, f"Saving the shards to {folder}")
        manifest = {
            "format": MANIFEST_FORMAT,
            "world_size": self.world_size,
            "shard_sizes": self.shard_sizes,
            "files": [shard_file_name(r, self.world_size) for r in range(self.world_size)],
            "dim": self.dim,
            "backend": self.backend_name,
            "save_id": save_id,
        }

        def write_manifest() -> None:
            if self.rank == 0:
                write_bytes_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())

        self._local(write_manifest, f"Writing {folder / MANIFEST}")

    @classmethod
    def load(cls, folder: TPath, group: Any = None) -> "ShardedSearchIndex":
        """Load an index saved by ``save`` on a group of the same size (collective): every rank reads the
        manifest and its own shard file, and checks them against each other.

        Raises:
            ShardedSearchError: on every rank, if any rank failed; the message names the file and the mismatch
                (no manifest, another world size, a shard of another size or of another save, a damaged file).
        """
        folder = Path(folder)
        index = cls.__new__(cls)
        index._join(group)

        def read() -> Tuple[Dict[str, Any], Optional[SearchIndex], Tensor]:
            manifest = _read_manifest(folder / MANIFEST, index.world_size)
            path = folder / manifest["files"][index.rank]
            content = read_index_file(path)
            shard = content.get("shard") or {}
            expected = {"rank": index.rank, "world_size": index.world_size, "save_id": manifest["save_id"]}
            if shard != expected:
                raise FileFormatError(f"{path} is shard {shard or 'of no sharded index'}, expected {expected}.")
            embeddings = check_embeddings(content["embeddings"], "embeddings")
            size = manifest["shard_sizes"][index.rank]
            if len(embeddings) != size:
                raise FileFormatError(f"{path} holds {len(embeddings)} embeddings, but {MANIFEST} says {size}.")
            n, dim, labels = len(embeddings), int(embeddings.shape[1]), content["labels"] is not None
            description = {"n": n, "dim": dim, "dtype": str(embeddings.dtype), "labels": labels}
            return description, (SearchIndex.from_content(content, path) if n else None), embeddings

        description, index.shard, index.embeddings = index._local(read, f"Loading the sharded index from {folder}")
        index._set_layout(all_gather_objects(description, group=group))
        index.backend_name = index.shard.backend_name if index.shard is not None else "exact"
        return index


def _read_manifest(path: Path, world_size: int) -> Dict[str, Any]:
    """The manifest of a saved ``ShardedSearchIndex``, checked against the size of the loading group."""
    if not path.is_file():
        raise FileNotFoundError(f"There is no {MANIFEST} at {path} (a folder written by ShardedSearchIndex.save).")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path} is not a JSON manifest ({e}).") from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise FileFormatError(f"{path} is not the manifest of a ShardedSearchIndex ({MANIFEST_FORMAT}).")
    if manifest["world_size"] != world_size:
        raise ValueError(
            f"{path}: the index was saved by {manifest['world_size']} processes, but this group has {world_size}; "
            f"load it on a group of {manifest['world_size']} (or load each shard file with SearchIndex.load)."
        )
    return manifest


__all__ = ["MANIFEST", "ShardedSearchError", "ShardedSearchIndex", "shard_file_name"]
