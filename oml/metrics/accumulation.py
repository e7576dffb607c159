"""Accumulation of per-batch data (tensors, numpy arrays, lists) into preallocated storage over an epoch."""

from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from oml.ddp.utils import get_world_size_safe, is_ddp, sync_dicts_ddp

TStorage = Dict[str, Any]


def _batch_length(key: str, value: Any) -> int:
    if isinstance(value, (Tensor, np.ndarray)):
        if value.ndim == 0:
            raise ValueError(f"The value of {key!r} is a scalar; expected a batch (one element per sample).")
        return int(value.shape[0])
    if isinstance(value, (list, tuple)):
        return len(value)
    raise TypeError(f"The value of {key!r} must be a tensor, a numpy array, a list or a tuple, got {type(value)}.")


def _copy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.clone()
    return list(value) if isinstance(value, list) else value.copy()


class Accumulator:
    """Collects the values of ``keys_to_accumulate`` from batches until ``num_samples`` samples are stored.

    Tensors go to a preallocated CPU tensor, numpy arrays to a preallocated array, lists/tuples to a list.

    >>> acc = Accumulator(["x", "paths"])
    >>> acc.refresh(num_samples=3)
    >>> acc.update_data({"x": torch.tensor([1, 2]), "paths": ["a", "b"]})
    >>> acc.update_data({"x": torch.tensor([3]), "paths": ["c"]})
    >>> acc.is_storage_full(), acc.storage["x"], acc.storage["paths"]
    (True, tensor([1, 2, 3]), ['a', 'b', 'c'])
    """

    def __init__(self, keys_to_accumulate: Sequence[str]):
        keys = list(keys_to_accumulate)
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"keys_to_accumulate must be unique, got duplicates {duplicates}.")
        self.keys_to_accumulate = tuple(keys)
        self.num_samples: Optional[int] = None
        self._collected_samples = 0
        self._storage: TStorage = {}

    def refresh(self, num_samples: int) -> None:
        """Drop the stored data and expect ``num_samples`` new samples."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        self.num_samples = int(num_samples)
        self._collected_samples = 0
        self._storage = {}

    def _allocate(self, key: str, value: Any) -> None:
        assert self.num_samples is not None
        if isinstance(value, Tensor):
            self._storage[key] = torch.empty((self.num_samples, *value.shape[1:]), dtype=value.dtype)
        elif isinstance(value, np.ndarray):
            self._storage[key] = np.empty((self.num_samples, *value.shape[1:]), dtype=value.dtype)
        else:
            self._storage[key] = []

    def _check_compatible(self, key: str, value: Any) -> None:
        stored = self._storage[key]
        kinds = ((Tensor, "a tensor"), (np.ndarray, "a numpy array"), (list, "a list or tuple"))
        for kind, name in kinds:
            if isinstance(stored, kind):
                expected = (list, tuple) if kind is list else kind
                if not isinstance(value, expected):
                    raise TypeError(f"The values of {key!r} were {name} in the previous batches, got {type(value)}.")
        if isinstance(stored, (Tensor, np.ndarray)) and tuple(stored.shape[1:]) != tuple(value.shape[1:]):
            raise ValueError(
                f"The values of {key!r} had the per-sample shape {tuple(stored.shape[1:])} in the previous batches, "
                f"got {tuple(value.shape[1:])}."
            )

    def update_data(self, data_dict: Dict[str, Any]) -> None:
        """Append a batch: every key in ``keys_to_accumulate`` must be present with the same batch length."""
        if self.num_samples is None:
            raise RuntimeError("Call refresh(num_samples) (or setup of the metric) before update_data.")
        missing = [k for k in self.keys_to_accumulate if k not in data_dict]
        if missing:
            raise KeyError(f"The batch has no keys {missing}; it has {sorted(map(str, data_dict))}.")
        lengths = {k: _batch_length(k, data_dict[k]) for k in self.keys_to_accumulate}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"All accumulated values of a batch must have the same length, got {lengths}.")
        bs = next(iter(lengths.values()), 0)
        remaining = self.num_samples - self._collected_samples
        if bs > remaining:
            raise ValueError(
                f"update_data got a batch of {bs} samples, but only {remaining} of the expected {self.num_samples} "
                f"remain ({self._collected_samples} collected). Pass the right num_samples to refresh/setup."
            )
        start, end = self._collected_samples, self._collected_samples + bs
        for key in self.keys_to_accumulate:
            value = data_dict[key]
            if key not in self._storage:
                self._allocate(key, value)
            self._check_compatible(key, value)
            stored = self._storage[key]
            if isinstance(stored, Tensor):
                stored[start:end] = value.detach().to("cpu")
            elif isinstance(stored, np.ndarray):
                stored[start:end] = value
            else:
                stored.extend(value)
        self._collected_samples = end

    @property
    def storage(self) -> TStorage:
        return self._storage

    @property
    def collected_samples(self) -> int:
        return self._collected_samples

    def is_storage_full(self) -> bool:
        return self.num_samples is not None and self._collected_samples == self.num_samples

    def sync(self) -> "Accumulator":
        """Gather the storages of all DDP processes (rank order) into a new, full Accumulator.

        Padded duplicates (e.g. from a DDP sampler) are kept, as in OML 0.4.4. Outside DDP a full copy of this
        accumulator is returned (with a ``WarningDDP``).
        """
        if not self.is_storage_full():
            raise ValueError(
                f"Only full storages can be synced: collected {self._collected_samples} of {self.num_samples} samples."
            )
        if is_ddp():
            gathered = sync_dicts_ddp(self._storage, world_size=get_world_size_safe())
        else:
            sync_dicts_ddp(self._storage, world_size=0)  # only warns
            gathered = {k: _copy(v) for k, v in self._storage.items()}
        first = self.keys_to_accumulate[0] if self.keys_to_accumulate else None
        total = _batch_length(first, gathered[first]) if first is not None else 0
        synced = Accumulator(self.keys_to_accumulate)
        synced.refresh(max(total, 1))
        synced.num_samples = total
        synced._storage = gathered
        synced._collected_samples = total
        return synced

    def take(self, positions: Sequence[int]) -> "Accumulator":
        """A new, full Accumulator with the samples at ``positions`` (in that order)."""
        index = torch.as_tensor(list(positions), dtype=torch.long)
        storage: TStorage = {}
        for key, value in self._storage.items():
            if isinstance(value, torch.Tensor):
                storage[key] = value[index]
            elif isinstance(value, np.ndarray):
                storage[key] = value[index.numpy()]
            else:
                storage[key] = [value[p] for p in index.tolist()]
        taken = Accumulator(self.keys_to_accumulate)
        taken.num_samples = taken._collected_samples = len(index)
        taken._storage = storage
        return taken


__all__ = ["Accumulator", "TStorage"]
