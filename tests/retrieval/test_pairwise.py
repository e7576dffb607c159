"""Pairwise re-rankers: order properties against loops, metric invariants, the top-n hook of EmbeddingMetrics."""

from pathlib import Path
from typing import Dict

import pytest
import torch
from torch import Tensor

from oml.functional.metrics import calc_gt_mask, calc_mask_to_ignore, calc_retrieval_metrics
from oml.inference.flat import inference_on_images
from oml.interfaces.models import IPairwiseModel
from oml.metrics.embeddings import EmbeddingMetrics
from oml.models.meta.siamese import LinearTrivialDistanceSiamese, TrivialDistanceSiamese
from oml.retrieval.postprocessors.pairwise import PairwiseEmbeddingsPostprocessor, PairwiseImagesPostprocessor
from tests.inference.helpers import TinyExtractor, tiny_transforms


class Oracle(IPairwiseModel):
    """Knows the answer: the label is hidden in the last coordinate of the embeddings."""

    def predict(self, x1: Tensor, x2: Tensor) -> Tensor:
        return (x1[:, -1] != x2[:, -1]).float()


class Arbitrary(IPairwiseModel):
    """Deterministic scores unrelated to the distances (a "random" re-ranker)."""

    def predict(self, x1: Tensor, x2: Tensor) -> Tensor:
        return torch.sin(1000 * (x1 * x2).sum(dim=1)) + 1


def make_data(n_labels: int = 8, per_label: int = 4, dim: int = 6, seed: int = 0) -> Dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_labels).repeat_interleave(per_label)
    noise = torch.randn(len(labels), dim - 1, generator=g)  # the embeddings know nothing about the labels
    embeddings = torch.cat([noise, 1e-4 * labels[:, None].float()], dim=1)
    is_query = torch.rand(len(labels), generator=g) < 0.7
    is_query[::per_label] = True
    return {
        "embeddings": embeddings,
        "labels": labels,
        "is_query": is_query,
        "is_gallery": torch.ones(len(labels), dtype=torch.bool),
    }


def run_metrics(data, postprocessor=None, ks=(1, 3, 5, 10)) -> Dict:
    metric = EmbeddingMetrics(
        cmc_top_k=ks, precision_top_k=ks, map_top_k=ks, pfc_variance=(), postprocessor=postprocessor, verbose=False
    )
    metric.setup(len(data["labels"]))
    metric.update_data(data)
    return metric.compute_metrics()["OVERALL"]


def embeddings_pp(model, top_n: int) -> PairwiseEmbeddingsPostprocessor:
    return PairwiseEmbeddingsPostprocessor(top_n=top_n, pairwise_model=model, num_workers=0, batch_size=16)


@pytest.mark.parametrize("top_n", [2, 5, 12, 100])
def test_process_against_loops(top_n: int) -> None:
    g = torch.Generator().manual_seed(top_n)
    queries, galleries = torch.randn(7, 4, generator=g), torch.randn(12, 4, generator=g)
    distances = torch.cdist(queries, galleries)
    distances[0, 3] = distances[0, 5] = distances[0].min() - 0.1  # a tie
    before = (distances.clone(), queries.clone(), galleries.clone())
    model = Arbitrary()
    out = embeddings_pp(model, top_n).process(distances, queries, galleries)

    assert all(torch.equal(a, b) for a, b in zip(before, (distances, queries, galleries))), "inputs were mutated"
    n = min(top_n, len(galleries))
    for i in range(len(queries)):
        old_order = sorted(range(len(galleries)), key=lambda j: (float(distances[i, j]), j))
        top = old_order[:n]
        for j in top:  # the block holds the model's scores
            expected = float(model.predict(queries[i : i + 1], galleries[j : j + 1]))
            assert float(out[i, j]) == pytest.approx(expected, abs=1e-6)
        new_order = sorted(range(len(galleries)), key=lambda j: (float(out[i, j]), j))
        assert set(new_order[:n]) == set(top), "the re-ranked block must stay in front"
        assert new_order[n:] == old_order[n:], "the untouched galleries keep their order behind the block"
        assert sorted(top, key=lambda j: (float(out[i, j]), j)) == new_order[:n]
        rest = old_order[n:]
        if rest and max(float(out[i, j]) for j in top) < float(distances[i, rest[0]]):
            assert torch.equal(out[i, rest], distances[i, rest]), "no shift when it is not needed"


def test_identity_model_keeps_the_order() -> None:
    g = torch.Generator().manual_seed(1)
    queries, galleries = torch.randn(20, 5, generator=g), torch.randn(30, 5, generator=g)
    distances = torch.cdist(queries, galleries)
    model = LinearTrivialDistanceSiamese(feat_dim=5, identity_init=True)
    out = embeddings_pp(model, 7).process(distances, queries, galleries)
    assert torch.equal(torch.argsort(out, dim=1, stable=True), torch.argsort(distances, dim=1, stable=True))
    assert torch.allclose(out, distances, atol=1e-5)


def test_oracle_fixes_a_broken_ranking_in_embedding_metrics() -> None:
    data = make_data()
    before = {k: v.clone() for k, v in data.items()}
    plain = run_metrics(data)
    assert plain["cmc"][1] < 0.6  # random embeddings: a broken ranking
    fixed = run_metrics(data, embeddings_pp(Oracle(), top_n=31))
    assert all(torch.equal(data[k], before[k]) for k in data), "the accumulated data must not be mutated"
    for k in (1, 3):  # every query has 3 relevant galleries
        assert fixed["cmc"][k] == 1 and fixed["precision"][k] == 1 and fixed["map"][k] == 1


def test_arbitrary_model_keeps_order_insensitive_metrics() -> None:
    """Only the order inside each query's top-n block changes, so any metric of the *set* of the first k >= top_n
    results is invariant (cmc@k, precision@k); metrics of the order (MAP, cmc@1) may change."""
    data = make_data(n_labels=10, per_label=5, seed=3)
    top_n = 5
    plain = run_metrics(data)
    reranked = run_metrics(data, embeddings_pp(Arbitrary(), top_n=top_n))
    for k in (5, 10):
        assert reranked["cmc"][k] == pytest.approx(float(plain["cmc"][k]))
        assert reranked["precision"][k] == pytest.approx(float(plain["precision"][k]))
    assert any(reranked["map"][k] != plain["map"][k] for k in (3, 5))


def test_top_n_hook_equals_the_dense_path() -> None:
    data = make_data(n_labels=9, per_label=4, seed=5)
    pp = embeddings_pp(Arbitrary(), top_n=4)
    ks = (1, 2, 4, 6)
    chunked = run_metrics(data, pp, ks=ks)

    is_query, is_gallery = data["is_query"], data["is_gallery"]
    distances = torch.cdist(data["embeddings"][is_query].double(), data["embeddings"][is_gallery].double()).float()
    mask_to_ignore = calc_mask_to_ignore(is_query, is_gallery)
    distances[mask_to_ignore] = float("inf")
    processed = pp.process_by_dict(distances, data)
    dense = calc_retrieval_metrics(
        processed,
        calc_gt_mask(data["labels"], is_query, is_gallery),
        mask_to_ignore,
        cmc_top_k=ks,
        precision_top_k=ks,
        map_top_k=ks,
        fmr_vals=(),
    )
    for name in ("cmc", "precision", "map"):
        for k in ks:
            assert float(chunked[name][k]) == pytest.approx(float(dense[name][k]), abs=1e-6), (name, k)


def test_top_n_larger_than_gallery_and_process_top_n_contract() -> None:
    g = torch.Generator().manual_seed(2)
    queries, galleries = torch.randn(3, 4, generator=g), torch.randn(4, 4, generator=g)
    distances = torch.cdist(queries, galleries)
    out = embeddings_pp(Arbitrary(), top_n=50).process(distances, queries, galleries)
    expected = torch.stack([Arbitrary().predict(q.expand(4, -1), galleries) for q in queries])
    assert torch.allclose(out, expected, atol=1e-6)  # the whole gallery is re-scored

    data = {"embeddings": torch.cat([queries, galleries]), "is_query": None, "is_gallery": None}
    query_ids, retrieved = torch.tensor([0, 2]), torch.tensor([[3, 4], [6, 3]])
    new = embeddings_pp(Arbitrary(), 2).process_top_n(torch.zeros(2, 2), query_ids, retrieved, data)
    e = data["embeddings"]
    for i, q in enumerate(query_ids):
        for j, r in enumerate(retrieved[i]):
            assert float(new[i, j]) == pytest.approx(float(Arbitrary().predict(e[q : q + 1], e[r : r + 1])))
    with pytest.raises(ValueError, match="retrieved_ids"):
        embeddings_pp(Arbitrary(), 2).process_top_n(torch.zeros(2, 3), query_ids, retrieved, data)
    with pytest.raises(ValueError, match="distances must be"):
        embeddings_pp(Arbitrary(), 2).process(distances[:, :2], queries, galleries)


def test_bad_arguments_and_nan_scores() -> None:
    for top_n in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="top_n must be an integer > 1"):
            embeddings_pp(Arbitrary(), top_n)

    class NaNModel(IPairwiseModel):
        def predict(self, x1: Tensor, x2: Tensor) -> Tensor:
            return torch.full((len(x1),), float("nan"))

    with pytest.raises(ValueError, match="NaN"):
        embeddings_pp(NaNModel(), 2).process(torch.rand(2, 3), torch.rand(2, 4), torch.rand(3, 4))


def test_images_postprocessor_matches_embeddings_one(mock_dataset_root: Path, mock_dataset_dfs) -> None:
    """TrivialDistanceSiamese on images == the identity linear siamese on the extractor's embeddings."""
    _, df_val = mock_dataset_dfs
    df_val = df_val.head(14)
    paths = [str(mock_dataset_root / p) for p in df_val["path"]]
    extractor = TinyExtractor()
    embeddings = inference_on_images(extractor, paths, tiny_transforms(), num_workers=0, batch_size=8)
    data = {
        "embeddings": embeddings,
        "paths": paths,
        "labels": torch.tensor(df_val["label"].to_numpy()),
        "is_query": torch.ones(len(paths), dtype=torch.bool),
        "is_gallery": torch.ones(len(paths), dtype=torch.bool),
    }
    distances = torch.rand(len(paths), len(paths))
    by_images = PairwiseImagesPostprocessor(
        top_n=3, pairwise_model=TrivialDistanceSiamese(extractor), transforms=tiny_transforms(), verbose=False
    )
    by_embeddings = embeddings_pp(LinearTrivialDistanceSiamese(embeddings.shape[1], identity_init=True), 3)
    assert torch.allclose(
        by_images.process_by_dict(distances, data), by_embeddings.process_by_dict(distances, data), atol=1e-5
    )
    query_ids, retrieved = torch.tensor([1, 5]), torch.tensor([[2, 3], [0, 13]])
    assert torch.allclose(
        by_images.process_top_n(torch.zeros(2, 2), query_ids, retrieved, data),
        by_embeddings.process_top_n(torch.zeros(2, 2), query_ids, retrieved, data),
        atol=1e-5,
    )
    assert by_images.needed_keys == ["is_query", "is_gallery", "paths"]
    assert by_embeddings.needed_keys == ["is_query", "is_gallery", "embeddings"]

    # boxes in the accumulated data crop the images
    boxes = {"x1": torch.zeros(14).long(), "y1": torch.zeros(14).long(), "x2": torch.full((14,), 40).long()}
    boxed = {**data, **boxes, "y2": torch.full((14,), 40).long()}
    cropped = by_images.process_top_n(torch.zeros(2, 2), query_ids, retrieved, boxed)
    assert not torch.allclose(cropped, by_images.process_top_n(torch.zeros(2, 2), query_ids, retrieved, data))
