from pathlib import Path

import numpy as np
import pytest
import torch

from oml.ddp.sharding import Shard
from oml.ddp.utils import (
    WarningDDP,
    get_rank_safe,
    get_world_size_safe,
    is_ddp,
    is_main_process,
    merge_list_of_dicts,
    process_locally,
    sync_dicts_ddp,
)
from oml.metrics.embeddings import EmbeddingMetrics, EmbeddingMetricsDDP
from oml.utils.misc import flatten_dict
from tests.utils.ddp import run_in_gloo_group

WORLD_SIZE = 2
N_SAMPLES = 60


def full_data():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N_SAMPLES) % 6
    return {
        "embeddings": torch.randn(6, 4, generator=g)[labels] + 0.7 * torch.randn(N_SAMPLES, 4, generator=g),
        "labels": labels,
        "is_query": torch.ones(N_SAMPLES, dtype=torch.bool),
        "is_gallery": torch.ones(N_SAMPLES, dtype=torch.bool),
        "paths": [f"img_{i}.jpg" for i in range(N_SAMPLES)],
    }


def metric_kwargs():
    return {"cmc_top_k": (1, 5), "precision_top_k": (5,), "map_top_k": (5,), "extra_keys": ("paths",), "verbose": False}


def _worker(rank: int, out_dir: str) -> None:
    assert is_ddp() and get_world_size_safe() == WORLD_SIZE and get_rank_safe() == rank
    assert is_main_process() == (rank == 0)
    with process_locally():  # acts as one process: nothing is split or gathered
        assert not is_ddp() and get_world_size_safe() == 0 and Shard.current() == Shard()
        assert is_main_process()  # every process is the main one of its own
    assert is_ddp() and Shard.current() == Shard(rank, WORLD_SIZE)
    merged = sync_dicts_ddp(
        {"t": torch.full((rank + 1,), rank), "a": np.array([rank]), "l": [f"r{rank}"]}, world_size=WORLD_SIZE
    )
    data = full_data()
    half = slice(rank * N_SAMPLES // 2, (rank + 1) * N_SAMPLES // 2)
    metric = EmbeddingMetricsDDP(**metric_kwargs())
    metric.setup(num_samples=N_SAMPLES // 2)
    for start in range(half.start, half.stop, 7):  # batches
        stop = min(start + 7, half.stop)
        metric.update_data({k: v[start:stop] for k, v in data.items()})
    metric.sync()
    result = metric.compute_metrics()
    torch.save({"merged": merged, "result": result, "paths": metric.acc.storage["paths"]}, Path(out_dir) / f"{rank}.pt")


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_sync_with_two_processes(tmp_path):
    run_in_gloo_group(_worker, WORLD_SIZE, tmp_path, str(tmp_path))

    single = EmbeddingMetrics(**metric_kwargs())
    single.setup(N_SAMPLES)
    single.update_data(full_data())
    expected = single.compute_metrics()
    for rank in range(WORLD_SIZE):
        saved = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        merged = saved["merged"]
        assert torch.equal(merged["t"], torch.tensor([0, 1, 1]))
        assert np.array_equal(merged["a"], np.array([0, 1])) and merged["l"] == ["r0", "r1"]
        assert saved["paths"] == full_data()["paths"]  # rank order
        got = flatten_dict(saved["result"])
        assert got.keys() == flatten_dict(expected).keys()
        for name, value in flatten_dict(expected).items():
            assert torch.isclose(got[name], value), (rank, name)


def test_outside_ddp():
    assert not is_ddp() and get_world_size_safe() == 0 and get_rank_safe() == 0 and is_main_process()
    data = {"x": torch.ones(2)}
    with pytest.warns(WarningDDP):
        assert sync_dicts_ddp(data, world_size=1) is data


def test_merge_list_of_dicts():
    merged = merge_list_of_dicts(
        [{"t": torch.ones(2, 3), "a": np.zeros(1), "l": ("x",)}, {"t": torch.zeros(1, 3), "a": np.ones(2), "l": ["y"]}]
    )
    assert merged["t"].shape == (3, 3) and merged["a"].tolist() == [0, 1, 1] and merged["l"] == ["x", "y"]
    assert merge_list_of_dicts([]) == {}
    with pytest.raises(KeyError, match="same keys"):
        merge_list_of_dicts([{"a": [1]}, {"b": [2]}])
    with pytest.raises(TypeError, match="Cannot merge"):
        merge_list_of_dicts([{"a": [1]}, {"a": torch.ones(1)}])
