"""Small framework-agnostic helpers."""

import inspect
import math
import os
import random
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch

from oml.const import DOTENV_PATH
from oml.utils.checks import check_ints


def find_value_ids(it: Iterable[Any], value: Any) -> List[int]:
    """Return the positions of ``value`` in ``it``.

    >>> find_value_ids([1, 2, 1, 3], 1)
    [0, 2]
    """
    if isinstance(it, np.ndarray):
        return np.flatnonzero(it == value).tolist()
    return [i for i, el in enumerate(it) if el == value]


def set_global_seed(seed: int) -> None:
    """Seed python, numpy and torch (and Lightning, when it is installed)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        from lightning_fabric.utilities.seed import seed_everything
    except ImportError:
        return
    seed_everything(seed, verbose=False)


def one_hot(i: int, dim: int) -> torch.Tensor:
    """Return a float vector of size ``dim`` with 1 at position ``i``."""
    if not 0 <= i < dim:
        raise ValueError(f"Index {i} is outside of [0, {dim}).")
    vector = torch.zeros(dim)
    vector[i] = 1.0
    return vector


def flatten_dict(
    d: Mapping[str, Any], parent_key: str = "", sep: str = "/", ignored_keys: Iterable[str] = ()
) -> Dict[str, Any]:
    """Flatten a nested dict, joining the keys with ``sep``.

    >>> flatten_dict({"OVERALL": {"cmc": {1: 0.5}}, "x": 1})
    {'OVERALL/cmc/1': 0.5, 'x': 1}
    """
    items: List[Tuple[str, Any]] = []
    for key, value in d.items():
        if key in ignored_keys:
            continue
        new_key = f"{parent_key}{sep}{key}" if parent_key else str(key)
        if isinstance(value, Mapping):
            items.extend(flatten_dict(value, new_key, sep=sep, ignored_keys=ignored_keys).items())
        else:
            items.append((new_key, value))
    return dict(items)


def load_dotenv() -> None:
    """Load environment variables from ``DOTENV_PATH`` (``KEY=VALUE`` lines) without overriding set ones."""
    if not DOTENV_PATH.is_file():
        return
    for line in DOTENV_PATH.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


def dictconfig_to_dict(cfg: Any) -> Any:
    """Recursively convert an OmegaConf ``DictConfig``/``ListConfig`` (or nested mappings) to plain python."""
    if isinstance(cfg, Mapping):
        return {key: dictconfig_to_dict(value) for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)) or type(cfg).__name__ == "ListConfig":
        return [dictconfig_to_dict(value) for value in cfg]
    return cfg


def smart_sample(array: Sequence[Any], k: int) -> List[Any]:
    """Sample ``k`` elements without replacement if possible, else take all and add random repeats."""
    array = list(array)
    if len(array) == 0:
        raise ValueError("Cannot sample from an empty sequence.")
    if len(array) >= k:
        return random.sample(array, k=k)
    return array + random.choices(array, k=k - len(array))


def clip_max(arr: Sequence[int], max_el: int) -> Tuple[int, ...]:
    """Clip every element of ``arr`` to at most ``max_el``."""
    return tuple(min(x, max_el) for x in arr)


def remove_unused_kwargs(kwargs: Dict[str, Any], constructor: Callable[..., Any]) -> Dict[str, Any]:
    """Keep only the kwargs that ``constructor`` accepts (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(constructor).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {key: value for key, value in kwargs.items() if key in params}


def check_if_nonempty_positive_integers(var: Any, name: str) -> None:
    """Raise ``ValueError`` unless ``var`` is a non-empty sequence of positive integers (or one)."""
    check_ints(var, name, minimum=1)


def compare_dicts_recursively(d1: Mapping[Any, Any], d2: Mapping[Any, Any]) -> bool:
    """Return True if two nested dicts have the same keys and equal values (tensors compared by value)."""
    if set(d1) != set(d2):
        return False
    for key in d1:
        v1, v2 = d1[key], d2[key]
        if isinstance(v1, Mapping) and isinstance(v2, Mapping):
            if not compare_dicts_recursively(v1, v2):
                return False
        elif isinstance(v1, torch.Tensor) or isinstance(v2, torch.Tensor):
            if not torch.equal(torch.as_tensor(v1), torch.as_tensor(v2)):
                return False
        elif isinstance(v1, np.ndarray) or isinstance(v2, np.ndarray):
            if not np.array_equal(v1, v2):
                return False
        elif v1 != v2:
            return False
    return True


def find_first_occurrences(x: Sequence[Any]) -> List[int]:
    """Return the positions where each distinct value of ``x`` occurs for the first time.

    >>> find_first_occurrences([3, 3, 1, 3, 1, 2])
    [0, 2, 5]
    """
    seen = set()
    first = []
    for i, value in enumerate(x):
        if value not in seen:
            seen.add(value)
            first.append(i)
    return first


def exact_mean(values: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """The mean of non-empty ``values`` as a float32 scalar tensor, from their exact sum (``math.fsum``).

    It does not depend on the order of the values nor on torch's thread count (a float32 ``mean`` sums in an
    order that does, so its last bits changed with ``torch.set_num_threads``): one process and the processes
    of a sharded evaluation, whatever their threads, report the same bits.

    >>> exact_mean(torch.tensor([0.1, 0.2, 0.3]))
    tensor(0.2000)
    """
    array = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return torch.tensor(math.fsum(array.astype(np.float64).ravel()) / array.size, dtype=torch.float32)


def reduce_metrics(metrics_to_reduce: Dict[Any, Any]) -> Dict[Any, Any]:
    """Recursively replace every tensor and every numpy array by its mean, as OML 0.4.4 does (other values are kept).

    Empty tensors and arrays are kept as they are (their mean is undefined). The means are ``exact_mean``: the
    same bits whatever the order of the values and the number of threads (OML's float32 ``mean`` could differ
    in the last bit).

    >>> reduce_metrics({"OVERALL": {"cmc": {1: torch.tensor([0.0, 1.0])}, "map": {5: np.array([0.5, 1.0])}}, "x": 2})
    {'OVERALL': {'cmc': {1: tensor(0.5000)}, 'map': {5: tensor(0.7500)}}, 'x': 2}
    """
    output: Dict[Any, Any] = {}
    for key, value in metrics_to_reduce.items():
        if isinstance(value, Mapping):
            output[key] = reduce_metrics(dict(value))
        elif isinstance(value, (torch.Tensor, np.ndarray)):
            size = value.numel() if isinstance(value, torch.Tensor) else value.size
            output[key] = exact_mean(value) if size else value
        else:
            output[key] = value
    return output


__all__ = [
    "exact_mean",
    "find_value_ids",
    "set_global_seed",
    "one_hot",
    "flatten_dict",
    "load_dotenv",
    "dictconfig_to_dict",
    "smart_sample",
    "clip_max",
    "remove_unused_kwargs",
    "check_if_nonempty_positive_integers",
    "compare_dicts_recursively",
    "find_first_occurrences",
    "reduce_metrics",
]
