"""Queries about the process group and gathering of python dicts across processes (``torch.distributed`` only)."""

import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import chain
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


class WarningDDP(UserWarning):
    """A DDP helper was called outside of a distributed run (it does nothing then)."""


_LOCALLY: ContextVar[bool] = ContextVar("oml_process_locally", default=False)


def is_ddp() -> bool:
    """True inside an initialised ``torch.distributed`` process group (and not inside ``process_locally()``)."""
    return dist.is_available() and dist.is_initialized() and not _LOCALLY.get()


@contextmanager
def process_locally() -> Iterator[None]:
    """Inside this block OML's DDP-aware code acts as in a single process: inference does not split its inputs
    between the processes nor gather the outputs, metrics do not gather their data.

    For work that is already split: when each process re-ranks its own share of the queries, the postprocessor
    must score that share itself instead of splitting it again with processes that hold other inputs.
    """
    token = _LOCALLY.set(True)
    try:
        yield
    finally:
        _LOCALLY.reset(token)


def get_world_size_safe() -> int:
    """The number of processes, or 0 outside DDP (OML's convention)."""
    return dist.get_world_size() if is_ddp() else 0


def get_rank_safe() -> int:
    """The rank of this process, or 0 outside DDP."""
    return dist.get_rank() if is_ddp() else 0


def is_main_process() -> bool:
    """True for rank 0 and outside DDP."""
    return get_rank_safe() == 0


def _to_cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, Tensor) else value


def merge_list_of_dicts(list_of_dicts: Sequence[Dict[str, Any]], device: str = "cpu") -> Dict[str, Any]:
    """Concatenate the values of dicts with the same keys: tensors with ``torch.cat`` (moved to ``device``),
    numpy arrays with ``np.concatenate``, lists and tuples chained into a list.

    >>> merge_list_of_dicts([{"a": torch.tensor([1]), "b": ["x"]}, {"a": torch.tensor([2, 3]), "b": ("y",)}])
    {'a': tensor([1, 2, 3]), 'b': ['x', 'y']}
    """
    if not list_of_dicts:
        return {}
    keys = list(list_of_dicts[0])
    for i, d in enumerate(list_of_dicts):
        if set(d) != set(keys):
            raise KeyError(f"All dicts must have the same keys: dict 0 has {sorted(keys)}, dict {i} has {sorted(d)}.")
    output: Dict[str, Any] = {}
    for key in keys:
        values: List[Any] = [d[key] for d in list_of_dicts]
        if all(isinstance(v, Tensor) for v in values):
            output[key] = torch.cat([v.to(device) for v in values])
        elif all(isinstance(v, np.ndarray) for v in values):
            output[key] = np.concatenate(values)
        elif all(isinstance(v, (list, tuple)) for v in values):
            output[key] = list(chain.from_iterable(values))
        else:
            types = sorted({type(v).__name__ for v in values})
            raise TypeError(
                f"Cannot merge the values of key {key!r} of types {types}: expected all tensors, all numpy arrays "
                f"or all lists/tuples."
            )
    return output


def sync_dicts_ddp(outputs_from_device: Dict[str, Any], world_size: int, device: str = "cpu") -> Dict[str, Any]:
    """Gather a dict from every process (``all_gather_object``) and merge them with ``merge_list_of_dicts``.

    Every process receives the merged dict (rank order). Outside DDP the input is returned with a ``WarningDDP``.
    """
    if not is_ddp():
        warnings.warn("sync_dicts_ddp was called outside of DDP: nothing to gather.", WarningDDP, stacklevel=2)
        return outputs_from_device
    if world_size != dist.get_world_size():
        raise ValueError(f"world_size={world_size} differs from the process group size {dist.get_world_size()}.")
    local = {key: _to_cpu(value) for key, value in outputs_from_device.items()}
    gathered: List[Any] = [None] * world_size
    dist.all_gather_object(gathered, local)
    return merge_list_of_dicts(gathered, device=device)


def all_gather_objects(obj: Any, group: Any = None) -> List[Any]:
    """The ``obj`` of every process of ``group`` (default: all), in rank order; ``[obj]`` outside DDP.

    Objects travel pickled and are read back with ``weights_only=True``: tensors, numbers, strings and
    containers of them.
    """
    if not is_ddp():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, obj, group=group, weights_only=True)
    return gathered


def broadcast_object(obj: Any, group: Any = None) -> Any:
    """The ``obj`` of the first process of ``group`` (default: all), on every process; ``obj`` outside DDP.

    Read back with ``weights_only=True`` (tensors, numbers, strings and containers of them).
    """
    if not is_ddp():
        return obj
    sent = [obj]
    dist.broadcast_object_list(sent, group=group, group_src=0, weights_only=True)
    return sent[0]


__all__ = [
    "WarningDDP",
    "is_ddp",
    "process_locally",
    "get_world_size_safe",
    "get_rank_safe",
    "is_main_process",
    "merge_list_of_dicts",
    "sync_dicts_ddp",
    "all_gather_objects",
    "broadcast_object",
]
