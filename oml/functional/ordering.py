"""Deterministic ordering of retrieval candidates: by value, ties by index (the one home for it).

Every place that ranks galleries (the kNN kernel, the dense metrics, the search backends, re-ranking)
orders by ``(distance, gallery index)``, so the dense reference, the bounded-memory kernel and every
backend agree bit for bit, whatever ``torch.sort``/``topk`` would do with ties.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["float_order_keys", "topk_stable", "sort_by_value_then_index"]


def float_order_keys(values: Tensor) -> Tensor:
    """``int64`` keys in ``[-2^31, 2^31)`` with the order of ``values`` as float32 (``-0.0`` equals ``+0.0``).

    The IEEE bits of a non-negative float increase with its value; for negative floats they decrease, so
    their 31 lower bits are flipped. Keys can be packed with an index into one ``int64``:
    ``(keys << 32) | index`` sorts by (value, index), ``(index << 32) | (keys + 2**31)`` by (index, value).

    >>> float_order_keys(torch.tensor([-1.0, -0.0, 0.0, 2.0])).argsort(stable=True).tolist()
    [0, 1, 2, 3]
    >>> bool(float_order_keys(torch.tensor([-0.0])) == float_order_keys(torch.tensor([0.0])))
    True
    """
    bits = (values.float() + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into +0.0
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def topk_stable(values: Tensor, k: int, chunk: int = 2**22) -> Tensor:
    """Indices ``[R, k]`` of the ``k`` smallest values of every row, ordered by (value, column).

    Rows are processed ``chunk`` values at a time, so the temporary keys stay small.

    >>> topk_stable(torch.tensor([[3.0, 1.0, 1.0, 0.0]]), 3).tolist()
    [[3, 1, 2]]
    """
    n_rows, n_cols = values.shape
    step = max(1, chunk // max(n_cols, 1))
    if values.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        parts = [torch.argsort(values[i : i + step], dim=1, stable=True)[:, :k] for i in range(0, n_rows, step)]
        return torch.cat(parts) if parts else torch.zeros(0, k, dtype=torch.long, device=values.device)
    columns = torch.arange(n_cols, dtype=torch.long, device=values.device)
    result = []
    for i in range(0, n_rows, step):
        keys = (float_order_keys(values[i : i + step]) << 32) | columns
        result.append(torch.topk(keys, k, dim=1, largest=False, sorted=True).indices)
    return torch.cat(result) if result else torch.zeros(0, k, dtype=torch.long, device=values.device)


def sort_by_value_then_index(
    values: Tensor, indices: Tensor, k: Optional[int] = None, groups: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Sort every row of ``(values, indices)`` by (value, index) and keep the first ``k`` (all by default).

    Negative indices mean "no item" and go after every real one with the same value (put ``inf`` values
    there to have them last). With ``groups`` (integers, the shape of ``values``) rows are sorted by
    (group, value, index).

    >>> sort_by_value_then_index(torch.tensor([[1.0, 0.5, 1.0]]), torch.tensor([[7, 9, 2]]))
    (tensor([[0.5000, 1.0000, 1.0000]]), tensor([[9, 2, 7]]))
    >>> groups = torch.tensor([[0, 1, 0]])
    >>> sort_by_value_then_index(torch.tensor([[1.0, 0.5, 1.0]]), torch.tensor([[7, 9, 2]]), groups=groups)
    (tensor([[1.0000, 1.0000, 0.5000]]), tensor([[2, 7, 9]]))
    """
    missing = torch.full_like(indices, torch.iinfo(torch.long).max)
    by_index = torch.argsort(torch.where(indices < 0, missing, indices), dim=1)
    n_cols = values.shape[1]
    bits = max(1, (n_cols - 1).bit_length())  # of a position in the row
    packable = values.dtype in (torch.float16, torch.bfloat16, torch.float32) and 2 * bits <= 31
    packable = packable and not bool(torch.isnan(values).any())  # sorts put NaN last, whatever its sign bit
    if packable and groups is not None and groups.numel():
        packable = int(groups.min()) >= 0 and int(groups.max()) < 2 ** (31 - bits)
    if packable:
        # one sort of int64 keys (group, value, rank of the index in the row) instead of three stable sorts
        index_rank = torch.empty_like(by_index)
        index_rank.scatter_(1, by_index, torch.arange(n_cols, device=by_index.device).expand_as(by_index))
        keys = ((float_order_keys(values) + 2**31) << bits) | index_rank
        if groups is not None:
            keys |= groups.long() << (32 + bits)
        order = torch.argsort(keys, dim=1)
    else:
        values, indices = values.gather(1, by_index), indices.gather(1, by_index)
        order = torch.argsort(values, dim=1, stable=True)
        if groups is not None:
            by_group = torch.argsort(groups.gather(1, by_index).gather(1, order), dim=1, stable=True)
            order = order.gather(1, by_group)
    if k is not None:
        order = order[:, :k]
    return values.gather(1, order), indices.gather(1, order)
