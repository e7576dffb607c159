"""``Shard``: this process's part of a job split over the processes of a ``torch.distributed`` group.

Sharded evaluation (``EmbeddingMetricsDDP``) and the FNMR@FMR engine take one: each process works on a
contiguous range of the queries, and the few collective steps they need (gather the per-query results,
sum counts) go through it. ``Shard()`` (rank 0 of 1) is the single-process case: every collective is the
identity, so the sharded code path is also the one-process path.

>>> shard = Shard()
>>> shard.bounds(10), shard.gather("x"), shard.sum(torch.tensor([1, 2]))
((0, 10), ['x'], tensor([1, 2]))
>>> [Shard(rank, 3).bounds(10) for rank in range(3)]  # the first ranks take one more when the split is uneven
[(0, 4), (4, 7), (7, 10)]
"""

from dataclasses import dataclass
from typing import Any, List, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from oml.ddp.utils import all_gather_objects, is_ddp
from oml.utils.checks import check_int


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world_size`` processes (the default ``torch.distributed`` group when ``world_size > 1``).

    Every process of the group must call the collective methods (``gather``, ``sum``) in the same order.
    """

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        check_int(self.world_size, "world_size", minimum=1)
        check_int(self.rank, "rank", minimum=0, maximum=self.world_size - 1)

    @classmethod
    def current(cls) -> "Shard":
        """This process's shard of the default process group (``Shard()`` outside DDP)."""
        return cls(dist.get_rank(), dist.get_world_size()) if is_ddp() else cls()

    @property
    def is_single(self) -> bool:
        return self.world_size == 1

    def bounds(self, n: int) -> Tuple[int, int]:
        """``(start, stop)`` of this rank's contiguous share of ``n`` items (shares differ by at most one)."""
        base, rest = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, rest)
        return start, start + base + (self.rank < rest)

    def gather(self, obj: Any) -> List[Any]:
        """``obj`` of every rank, in rank order (pickled, read back with ``weights_only=True``: tensors, numbers,
        strings and containers of them; meant for per-query results, not for big tensors)."""
        if self.is_single:
            return [obj]
        self._check_group()
        return all_gather_objects(obj)

    def sum(self, tensor: Tensor) -> Tensor:
        """Element-wise sum of ``tensor`` over the ranks (a new tensor; integer sums are exact)."""
        if self.is_single:
            return tensor.clone()
        self._check_group()
        # gloo reduces CPU tensors, NCCL GPU ones: the gathered copies go to CPU and are summed in rank order,
        # which keeps float sums identical on every rank and device-independent
        return torch.stack([part.to(tensor.device) for part in self.gather(tensor.cpu())]).sum(dim=0)

    def _check_group(self) -> None:
        if not is_ddp() or dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
            raise RuntimeError(
                f"{self} does not match the process group (initialised: {is_ddp()}); build it with Shard.current()."
            )


__all__ = ["Shard"]
