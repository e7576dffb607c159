"""``Shard``: the shares cover every item once, and the collectives refuse a shard that is not this process's."""

import pytest
import torch

from oml.ddp.sharding import Shard


def test_shard_bounds_cover_every_item_once() -> None:
    for n in (0, 1, 2, 7, 64):
        for world_size in (1, 2, 3, 5):
            shares = [Shard(rank, world_size).bounds(n) for rank in range(world_size)]
            assert [i for start, stop in shares for i in range(start, stop)] == list(range(n))
            assert max(stop - start for start, stop in shares) - min(stop - start for start, stop in shares) <= 1


def test_shard_checks() -> None:
    with pytest.raises(ValueError, match="rank"):
        Shard(2, 2)
    with pytest.raises(RuntimeError, match="process group"):
        Shard(0, 2).gather(1)  # no process group here
    single = Shard.current()
    assert single == Shard() and single.gather([1]) == [[1]] and torch.equal(single.sum(torch.ones(2)), torch.ones(2))
