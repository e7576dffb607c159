"""Sharded evaluation under DDP (2 CPU processes, gloo): each process searches its share of the queries, and the
gathered results equal one process's bit for bit, with uneven shares, DDP padding, categories, sequences,
distractor queries, a top-n postprocessor, FNMR@FMR and clustering metrics."""

from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from oml.ddp.sharding import Shard
from oml.inference.pairs import pairwise_inference_on_embeddings
from oml.interfaces.retrieval import IDistancesPostprocessor
from oml.metrics.embeddings import EmbeddingMetrics, EmbeddingMetricsDDP
from oml.metrics.retrieval_results import RetrievalResults
from oml.models.meta.siamese import LinearTrivialDistanceSiamese
from oml.utils.misc import flatten_dict
from tests.utils.ddp import run_in_gloo_group

WORLD_SIZE = 2
N = 61  # odd: DDP pads the second process's share with a copy of sample 0
TOP_N = 4


class CountingSecondOpinion(IDistancesPostprocessor):
    """Re-scores each query's top-n with distances in another embedding space and counts the queries it saw.

    The scores come from the DDP-aware pairwise inference (as with OML's pairwise postprocessors), which splits
    its pairs between the processes when they all hold the same inputs.
    """

    top_n = TOP_N

    def __init__(self) -> None:
        self.n_queries_processed = 0

    @property
    def needed_keys(self) -> List[str]:
        return ["other"]

    def process_top_n(self, distances, query_ids, retrieved_ids, data):
        self.n_queries_processed += len(distances)
        other, n = data["other"], retrieved_ids.shape[1]
        siamese = LinearTrivialDistanceSiamese(feat_dim=other.shape[1], identity_init=True)
        pairs = (other[query_ids].repeat_interleave(n, dim=0), other[retrieved_ids.flatten()])
        return pairwise_inference_on_embeddings(siamese, *pairs, num_workers=0, batch_size=16).view(-1, n)

    def process(self, distances, queries, galleries):
        raise NotImplementedError

    def process_by_dict(self, distances, data):
        raise NotImplementedError


def full_data() -> Dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(N) % 9
    labels[5] = 100  # a distractor query: no other sample has its label
    embeddings = torch.randn(9, 6, generator=g)[labels % 9] + 0.8 * torch.randn(N, 6, generator=g)
    embeddings[7] = embeddings[16]  # duplicates: ties broken by the gallery index
    is_query = torch.rand(N, generator=g) < 0.8
    is_gallery = torch.rand(N, generator=g) < 0.8
    is_query[5], is_gallery[5] = True, False
    return {
        "embeddings": embeddings,
        "other": torch.randn(N, 3, generator=g),
        "labels": labels,
        "is_query": is_query,
        "is_gallery": is_gallery,
        "sequence": [f"s{i % 13}" if i % 4 else None for i in range(N)],
        "category": ["a" if i % 3 else "b" for i in range(N)],
        "paths": [f"img_{i}.jpg" for i in range(N)],
        "idx": torch.arange(N),
    }


def metric_kwargs() -> Dict[str, Any]:
    return {
        "cmc_top_k": (1, 5),
        "precision_top_k": (5,),
        "map_top_k": (3,),
        "fmr_vals": (0.1, 0.5),
        "pfc_variance": (0.5,),
        "categories_key": "category",
        "sequence_key": "sequence",
        "clustering_metrics": ("nmi",),
        "extra_keys": ("paths", "idx"),
        "verbose": False,
    }


def _take(data: Dict[str, Any], rows: List[int]) -> Dict[str, Any]:
    return {k: v[rows] if isinstance(v, torch.Tensor) else [v[i] for i in rows] for k, v in data.items()}


def _results(rr: RetrievalResults) -> Dict[str, torch.Tensor]:
    return {"distances": rr.distances, "retrieved": rr.retrieved, "gt_tops": rr.gt_tops, **rr.ranking}


def qg_inputs() -> Dict[str, Any]:
    g = torch.Generator().manual_seed(2)
    return {
        "query_embeddings": torch.randn(7, 5, generator=g),
        "gallery_embeddings": torch.randn(23, 5, generator=g),
        "query_labels": torch.arange(7) % 3,
        "gallery_labels": torch.arange(23) % 4,
        "top_k": 5,
    }


def _worker(rank: int, out_dir: str) -> None:
    data = full_data()
    # DistributedSampler's interleaved shares, the shorter one padded from the start
    rows = list(range(rank, N, WORLD_SIZE)) + ([0] if rank == 1 else [])
    metric = EmbeddingMetricsDDP(**metric_kwargs(), postprocessor=CountingSecondOpinion())
    metric.setup(num_samples=len(rows))
    for start in range(0, len(rows), 8):
        metric.update_data(_take(data, rows[start : start + 8]))
    metric.sync()
    reduced = metric.compute_metrics()

    shard = Shard.current()
    qg = RetrievalResults.from_embeddings_qg(**qg_inputs(), shard=shard)
    one_query = RetrievalResults.from_embeddings_qg(
        **{**qg_inputs(), "query_embeddings": qg_inputs()["query_embeddings"][:1], "query_labels": [0]}, shard=shard
    )
    with pytest.raises(RuntimeError, match="different inputs"):  # on every rank, before any search
        RetrievalResults.from_embeddings_qg(**{**qg_inputs(), "query_labels": torch.arange(7) % 3 + rank}, shard=shard)
    torch.save(
        {
            "reduced": flatten_dict(reduced),
            "unreduced": flatten_dict(metric.metrics_unreduced),
            "results": _results(metric.retrieval_results),
            "processed": metric.postprocessor.n_queries_processed,
            "qg": _results(qg),
            "qg_metrics": flatten_dict(qg.metrics(fmr_vals=(0.2,), shard=shard)),
            "one_query": _results(one_query),
        },
        Path(out_dir) / f"{rank}.pt",
    )


def _assert_identical(got: Dict[str, Any], expected: Dict[str, Any], what: str) -> None:
    assert got.keys() == expected.keys(), what
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert got[name].dtype == value.dtype and torch.equal(got[name], value), (what, name)
        else:
            assert got[name] == value, (what, name)


@pytest.mark.ddp
@pytest.mark.timeout(150)
def test_sharded_evaluation_equals_one_process(tmp_path: Path) -> None:
    run_in_gloo_group(_worker, WORLD_SIZE, tmp_path, str(tmp_path))

    single = EmbeddingMetrics(**metric_kwargs(), postprocessor=CountingSecondOpinion())
    single.setup(N)
    single.update_data(full_data())
    with pytest.warns(UserWarning, match="without"):
        expected_reduced = flatten_dict(single.compute_metrics())
    assert expected_reduced["OVERALL/n_queries_without_match"] == 1
    n_queries = int(full_data()["is_query"].sum())
    qg = RetrievalResults.from_embeddings_qg(**qg_inputs())
    one_query = RetrievalResults.from_embeddings_qg(
        **{**qg_inputs(), "query_embeddings": qg_inputs()["query_embeddings"][:1], "query_labels": [0]}
    )
    processed = []
    for rank in range(WORLD_SIZE):
        saved = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        _assert_identical(saved["reduced"], expected_reduced, f"reduced metrics, rank {rank}")
        _assert_identical(saved["unreduced"], flatten_dict(single.metrics_unreduced), f"per query, rank {rank}")
        _assert_identical(saved["results"], _results(single.retrieval_results), f"retrieval results, rank {rank}")
        _assert_identical(saved["qg"], _results(qg), f"separate sets, rank {rank}")
        _assert_identical(saved["qg_metrics"], flatten_dict(qg.metrics(fmr_vals=(0.2,))), f"qg metrics, rank {rank}")
        _assert_identical(saved["one_query"], _results(one_query), f"one query, rank {rank}")
        processed.append(saved["processed"])
    # the work was split: each process re-ranked only its share of the queries
    assert processed == [(n_queries + 1) // 2, n_queries // 2]
    assert single.postprocessor.n_queries_processed == n_queries
