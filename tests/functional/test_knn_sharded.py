"""``exact_knn(..., shard=...)`` in 2 CPU processes (gloo): the processes share the symmetric mode's tiles and
exchange candidates, or search their own queries, and each gets its share of the one-process results bit for bit."""

from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from oml.ddp.sharding import Shard
from oml.functional.knn import exact_knn, exclusion_keys
from tests.utils.ddp import run_in_gloo_group

WORLD_SIZE = 2


def cases() -> Dict[str, Tuple[torch.Tensor, torch.Tensor, int, dict]]:
    """name -> (queries, galleries, k, kwargs); queries is galleries for the symmetric cases."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(203, 7, generator=g)
    ties = torch.randint(0, 3, (150, 4), generator=g).float()  # many exact duplicates and equal distances
    ids = torch.arange(203)
    sequences = exclusion_keys(torch.arange(150), [i // 10 for i in range(150)])
    return {
        "symmetric": (x, x, 9, {"tile_size": 32}),
        "symmetric, ids": (x, x, 9, {"tile_size": 32, "query_ids": ids, "gallery_ids": ids}),
        "symmetric ties, sequences": (
            ties,
            ties,
            12,
            {"tile_size": 16, "query_ids": sequences, "gallery_ids": sequences},
        ),
        "symmetric, k = G - 1": (x[:40], x[:40], 39, {"tile_size": 8}),
        "symmetric, one query": (x[:1], x[:1], 1, {}),
        "queries and galleries": (x[:31], x[31:], 6, {"tile_size": 16}),
    }


def _worker(rank: int, out_dir: str) -> None:
    found = {}
    for name, (queries, galleries, k, kwargs) in cases().items():
        result = exact_knn(queries, galleries, k, shard=Shard.current(), **kwargs)
        found[name] = (result.distances, result.indices)
    torch.save(found, Path(out_dir) / f"{rank}.pt")


@pytest.mark.ddp
@pytest.mark.timeout(150)
def test_sharded_knn_equals_one_process(tmp_path: Path) -> None:
    run_in_gloo_group(_worker, WORLD_SIZE, tmp_path, str(tmp_path))
    results: List[dict] = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    for name, (queries, galleries, k, kwargs) in cases().items():
        expected = exact_knn(queries, galleries, k, **kwargs)
        for rank, found in enumerate(results):
            start, stop = Shard(rank, WORLD_SIZE).bounds(len(queries))
            distances, indices = found[name]
            assert torch.equal(indices, expected.indices[start:stop]), (name, rank)
            assert torch.equal(distances, expected.distances[start:stop]), (name, rank)
