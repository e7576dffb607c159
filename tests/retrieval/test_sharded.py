"""ShardedSearchIndex: two gloo processes give the results of one SearchIndex over the whole gallery, bit for bit."""

import json
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import torch
import torch.distributed as dist

from oml.retrieval.index import SearchIndex
from oml.retrieval.sharded import MANIFEST, ShardedSearchError, ShardedSearchIndex, shard_file_name
from tests.utils.ddp import run_in_gloo_group

WORLD_SIZE = 2


def tied_gallery(n: int = 60, seed: int = 0) -> torch.Tensor:
    """Small-integer vectors (many equal distances) with rows 40-49 copying rows 0-9 (ties across the shards)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (n, 4), generator=g).float()
    x[40:50] = x[0:10]
    return x


def queries_for(gallery: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    on_grid = torch.randint(0, 3, (9, 4), generator=g).float() + 0.5  # equidistant from many gallery rows
    return torch.cat([gallery[::7], on_grid, torch.randn(5, 4, generator=g)])


def check_equal(sharded_result, expected) -> None:
    assert torch.equal(sharded_result.indices, expected.indices), (sharded_result.indices, expected.indices)
    assert torch.equal(sharded_result.distances, expected.distances)
    assert sharded_result.ids == expected.ids and sharded_result.labels == expected.labels


def expect_error(call: Callable[[], Any], error: type, match: str) -> str:
    """The message of the error that ``call`` must raise (on every rank)."""
    with pytest.raises(error, match=match) as info:
        call()
    return str(info.value)


def split(values: List[Any], sizes: List[int], rank: int) -> List[Any]:
    start = sum(sizes[:rank])
    return values[start : start + sizes[rank]]


def _worker(rank: int, folder: str) -> None:
    gallery = tied_gallery()
    queries = queries_for(gallery)
    ids = [f"img_{i}.jpg" for i in range(len(gallery))]
    labels = [i % 5 for i in range(len(gallery))]
    whole = SearchIndex(gallery, ids=ids, labels=labels)

    # uneven shards (40 + 20), duplicates across them, top_k below, above a shard and above the gallery
    for sizes in ([40, 20], [60, 0], [0, 60]):
        part = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
        sharded = ShardedSearchIndex(gallery[part], ids=ids[part], labels=labels[part])
        assert len(sharded) == 60 and sharded.shard_sizes == sizes
        for top_k in (1, 7, 25, 45, 100):
            check_equal(sharded.search(queries, top_k), whole.search(queries, top_k))
        threshold = whole.calibrate_threshold(queries, labels[: len(queries)], 0.2)
        assert sharded.calibrate_threshold(queries, labels[: len(queries)], 0.2) == threshold
        check_equal(sharded.search(queries, 5).apply_threshold(1.0), whole.search(queries, 5).apply_threshold(1.0))
        for weighting in ("distance", "uniform"):
            got, expected = sharded.classify(queries, 6, weighting), whole.classify(queries, 6, weighting)
            assert got[0] == expected[0] and torch.equal(got[1], expected[1])

    # default ids are global positions; Faiss flat per shard is exact too; rank 0's queries by broadcast
    sharded = ShardedSearchIndex(gallery[:35] if rank == 0 else gallery[35:])
    check_equal(sharded.search(queries, 9), SearchIndex(gallery).search(queries, 9))
    broadcast = sharded.search(queries if rank == 0 else None, 9, broadcast=True)
    check_equal(broadcast, SearchIndex(gallery).search(queries, 9))
    flat = ShardedSearchIndex(gallery[:35] if rank == 0 else gallery[35:], backend="faiss_flat")
    check_equal(flat.search(queries, 9), SearchIndex(gallery).search(queries, 9))
    random_gallery = torch.randn(500, 16, generator=torch.Generator().manual_seed(5))
    random_queries = torch.randn(40, 16, generator=torch.Generator().manual_seed(6))
    mine = random_gallery[:300] if rank == 0 else random_gallery[300:]
    expected = SearchIndex(random_gallery).search(random_queries, 20)
    check_equal(ShardedSearchIndex(mine).search(random_queries, 20), expected)

    # bad input on one rank, or different queries: an error on every rank, not a hang
    bad = queries.clone()
    if rank == 1:
        bad[2, 1] = float("nan")
    message = expect_error(lambda: sharded.search(bad, 3), ShardedSearchError, "search failed on 1 of 2 ranks")
    assert "rank 1: ValueError: queries contain NaN" in message
    expect_error(lambda: sharded.search(queries + rank, 3), ValueError, "different queries or top_k")
    expect_error(lambda: sharded.search(queries, 3 + rank), ValueError, "different queries or top_k")
    wrong_dim = torch.randn(4, 4 + rank)
    expect_error(lambda: ShardedSearchIndex(wrong_dim), ValueError, r"disagree on the dimension: \[4, 5\]")
    expect_error(lambda: ShardedSearchIndex(gallery[:0]), ValueError, "every shard is empty")

    # save / load per shard
    sizes = [40, 20]
    part = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
    sharded = ShardedSearchIndex(gallery[part], ids=ids[part], labels=labels[part])
    root = Path(folder)
    sharded.save(root / "a")
    loaded = ShardedSearchIndex.load(root / "a")
    assert loaded.shard_sizes == sizes and len(loaded.shard.embeddings) == sizes[rank]
    check_equal(loaded.search(queries, 30), whole.search(queries, 30))
    ShardedSearchIndex(gallery[:60] if rank == 0 else gallery[:0]).save(root / "empty_shard")
    expected = SearchIndex(gallery).search(queries, 8)
    check_equal(ShardedSearchIndex.load(root / "empty_shard").search(queries, 8), expected)
    other = ShardedSearchIndex(gallery[part], ids=ids[part], labels=labels[part])
    other.save(root / "b")
    dist.barrier()
    if rank == 0:  # break copies of the saved folder in the ways a user could
        for name in ("sizes", "mixed", "damaged", "missing"):
            (root / name).mkdir()
            for file in (root / "a").iterdir():
                (root / name / file.name).write_bytes(file.read_bytes())
        manifest = json.loads((root / "a" / MANIFEST).read_text())
        manifest["shard_sizes"] = [41, 19]
        (root / "sizes" / MANIFEST).write_text(json.dumps(manifest))
        shard_1 = shard_file_name(1, WORLD_SIZE)
        (root / "mixed" / shard_1).write_bytes((root / "b" / shard_1).read_bytes())
        data = bytearray((root / "damaged" / shard_1).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (root / "damaged" / shard_1).write_bytes(bytes(data))
        (root / "missing" / MANIFEST).unlink()
    dist.barrier()
    load = ShardedSearchIndex.load
    message = expect_error(lambda: load(root / "sizes"), ShardedSearchError, "failed on 2 of 2 ranks")
    assert "shard-00000-of-00002.index holds 40 embeddings, but manifest.json says 41" in message
    message = expect_error(lambda: load(root / "mixed"), ShardedSearchError, "failed on 1 of 2 ranks")
    assert "shard-00001-of-00002.index is shard" in message and "save_id" in message
    message = expect_error(lambda: load(root / "damaged"), ShardedSearchError, "failed on 1 of 2 ranks")
    assert "shard-00001-of-00002.index" in message and ("corrupted" in message or "damaged" in message)
    expect_error(lambda: load(root / "missing"), ShardedSearchError, f"There is no {MANIFEST}")
    # a group of another size
    solo = dist.new_group([0])
    if rank == 0:
        message = expect_error(lambda: load(root / "a", group=solo), ShardedSearchError, "saved by 2 processes")
        assert "this group has 1" in message
        solo_index = ShardedSearchIndex(gallery, ids=ids, labels=labels, group=solo)
        check_equal(solo_index.search(queries, 12), whole.search(queries, 12))
    dist.barrier()


@pytest.mark.ddp
@pytest.mark.timeout(150)
def test_sharded_index_with_two_processes(tmp_path: Path) -> None:
    run_in_gloo_group(_worker, WORLD_SIZE, tmp_path, str(tmp_path), timeout=120)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [MANIFEST, shard_file_name(0, 2), shard_file_name(1, 2)]
    manifest: Dict[str, Any] = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["world_size"] == 2 and manifest["shard_sizes"] == [40, 20]
    # a non-empty shard file is a plain index file of its rows (with their global ids)
    shard = SearchIndex.load(tmp_path / "a" / shard_file_name(1, 2))
    assert shard.ids == [f"img_{i}.jpg" for i in range(40, 60)] and torch.equal(shard.embeddings, tied_gallery()[40:])


def test_outside_ddp_it_is_a_plain_index(tmp_path: Path) -> None:
    gallery, ids = tied_gallery(), [f"img_{i}" for i in range(60)]
    queries = queries_for(gallery)
    sharded, whole = ShardedSearchIndex(gallery, ids=ids), SearchIndex(gallery, ids=ids)
    assert sharded.shard_sizes == [60] and "shards=[60]" in repr(sharded)
    for top_k in (1, 10, 80):
        check_equal(sharded.search(queries, top_k), whole.search(queries, top_k))
    check_equal(sharded.search(queries, 4, broadcast=True), whole.search(queries, 4))
    with_grad = queries.clone().requires_grad_()  # e.g. straight from a model: searched without autograd
    check_equal(sharded.search(with_grad, 4), whole.search(with_grad, 4))
    sharded.save(tmp_path / "index")
    check_equal(ShardedSearchIndex.load(tmp_path / "index").search(queries, 10), whole.search(queries, 10))
    manifest = json.loads((tmp_path / "index" / MANIFEST).read_text())
    manifest["world_size"] = 2
    (tmp_path / "index" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="saved by 2 processes, but this group has 1"):
        ShardedSearchIndex.load(tmp_path / "index")
    with pytest.raises(ValueError, match="classify needs an index with labels"):
        sharded.classify(queries)
    with pytest.raises(ValueError, match="queries contain NaN"):
        sharded.search(torch.full((1, 4), float("nan")), 1)
