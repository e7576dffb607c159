"""Argument checks shared by the whole package: one wording, one rule for what counts as an integer.

Every public constructor and function that takes a count, a ``k`` or a list of them calls these, so
``numpy`` integers are accepted everywhere (they come out of pandas and numpy code all the time),
``bool`` is refused everywhere (``True`` is an ``int`` to Python but never a meaningful count), and
the message names the argument and what was expected.

The error type, :class:`InvalidArgumentError`, is both a ``TypeError`` and a ``ValueError``: a
wrong type and a wrong value are told apart by the message, and callers that catch either keep
working.
"""

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "InvalidArgumentError",
    "check_bool_vector",
    "check_embeddings",
    "check_int",
    "check_ints",
    "check_in_range",
    "is_int",
]


class InvalidArgumentError(TypeError, ValueError):
    """An argument of the wrong type or out of its range (catch it as either)."""


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for ``bool`` and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value: Any, name: str, minimum: Optional[int] = 1, maximum: Optional[int] = None) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer in ``[minimum, maximum]``.

    Args:
        value: The argument to check.
        name: Its name, for the message.
        minimum: The smallest allowed value (``None``: no lower bound). Default 1: a positive count.
        maximum: The largest allowed value (``None``: no upper bound).

    Raises:
        InvalidArgumentError: ``value`` is not an integer (``bool`` included) or out of range.

    >>> check_int(np.int64(3), "k")
    3
    >>> check_int(0, "k")
    Traceback (most recent call last):
    ...
    oml.utils.checks.InvalidArgumentError: k must be a positive integer, got 0.
    """
    expected = _describe(minimum, maximum)
    if not is_int(value):
        raise InvalidArgumentError(f"{name} must be {expected}, got {value!r} of type {type(value).__name__}.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidArgumentError(f"{name} must be {expected}, got {value!r}.")
    return int(value)


def _describe(minimum: Optional[int], maximum: Optional[int]) -> str:
    if maximum is None:
        if minimum == 1:
            return "a positive integer"
        if minimum == 0:
            return "a non-negative integer"
    bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else ""]
    return " ".join(["an integer", " and ".join(b for b in bounds if b)]).strip()


def check_ints(values: Any, name: str, minimum: Optional[int] = 1, allow_empty: bool = False) -> Tuple[int, ...]:
    """Check a sequence of integers ``>= minimum`` (a single integer counts as one; empty only if allowed).

    >>> check_ints([1, np.int32(5)], "top_k")
    (1, 5)
    """
    items = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
    if (not items and not allow_empty) or not all(is_int(v) and (minimum is None or v >= minimum) for v in items):
        kind = "positive integers" if minimum == 1 else f"integers >= {minimum}" if minimum is not None else "integers"
        sequence = "sequence" if allow_empty else "non-empty sequence"
        raise InvalidArgumentError(f"{name} must contain {kind} (one, or a {sequence} of them), got {values!r}.")
    return tuple(int(v) for v in items)


def check_in_range(values: Sequence[float], min_: float, max_: float, name: str) -> None:
    """Raise unless ``values`` is non-empty and every value lies in ``[min_, max_]``."""
    if len(values) == 0:
        raise InvalidArgumentError(f"{name} must not be empty.")
    bad = [v for v in values if not (min_ <= float(v) <= max_)]
    if bad:
        raise InvalidArgumentError(f"{name} must be in [{min_}, {max_}], got {list(values)} ({bad} out of range).")


def check_embeddings(x: Any, name: str, dim: Optional[int] = None, dim_owner: str = "") -> torch.Tensor:
    """Check a ``[N, D]`` floating point matrix of finite values (numpy arrays are converted to tensors).

    Args:
        x: The embeddings.
        name: Their name, for the message.
        dim: The dimension they must have, if known.
        dim_owner: What sets that dimension (e.g. ``"the index"``), for the message.

    Returns:
        ``x`` as a tensor.

    Raises:
        InvalidArgumentError: not a 2D floating point tensor / array, or the wrong dimension.
        ValueError: some rows contain NaN or inf (the message names how many and the first rows).
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(f"{name} must be a tensor [N, D], got {type(x).__name__}.")
    if x.ndim != 2:
        raise InvalidArgumentError(f"{name} must be a 2D tensor [N, D], got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise InvalidArgumentError(f"{name} must be a floating point tensor, got {x.dtype}.")
    if dim is not None and x.shape[1] != dim:
        expected = f"but {dim_owner} holds vectors of dimension {dim}" if dim_owner else f"expected {dim}"
        raise InvalidArgumentError(f"{name} have dimension {x.shape[1]}, {expected}.")
    suspicious = (~torch.isfinite(x.sum(dim=1))).nonzero().flatten()  # no [N, D] temporary in the common case
    if len(suspicious):
        bad = suspicious[~torch.isfinite(x[suspicious]).all(dim=1)]
        if len(bad):
            raise ValueError(
                f"{name} contain NaN or inf in {len(bad)} of {len(x)} rows (e.g. rows {bad[:10].tolist()}); "
                f"distances to them are undefined."
            )
    return x


def check_bool_vector(values: Any, name: str, n: int) -> torch.Tensor:
    """``values`` (a tensor, an array or a list of bools or 0/1) as a bool tensor of ``n`` elements.

    >>> check_bool_vector([1, 0, 1], "is_query", 3)
    tensor([ True, False,  True])
    """
    if isinstance(values, torch.Tensor):
        mask = values.detach().cpu()
    else:
        array = np.asarray(values)
        if array.dtype == object:
            raise InvalidArgumentError(f"{name} must be bools or 0/1, got values like {array.ravel()[:3].tolist()}.")
        mask = torch.from_numpy(array)
    if mask.numel() != n or mask.ndim != 1:
        shape = tuple(mask.shape)
        raise InvalidArgumentError(f"{name} must be a vector of length {n} (one per sample), got shape {shape}.")
    mask = mask.flatten()
    if mask.dtype != torch.bool:
        if not torch.isin(mask, torch.tensor([0, 1], dtype=mask.dtype)).all():
            examples = mask.unique()[:5].tolist()
            raise InvalidArgumentError(f"{name} must contain only bools or 0/1, got values like {examples}.")
        mask = mask.bool()
    return mask
