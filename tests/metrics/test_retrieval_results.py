"""Evaluation protocols (distractors, sequences, separate query / gallery sets, search results) and the
ranking and clustering metrics, each against the dense loop oracle of tests/utils/oracles.py."""

import warnings

import numpy as np
import pytest
import torch

import oml.functional.knn as knn_module
import oml.metrics.retrieval_results as results_module
from oml.functional.clustering import adjusted_mutual_info, kmeans, normalized_mutual_info
from oml.functional.knn import exact_knn, exclusion_keys
from oml.metrics.embeddings import EmbeddingMetrics
from oml.metrics.retrieval_results import RetrievalResults
from oml.retrieval.index import SearchIndex
from tests.utils.oracles import dense_distances, dense_knn, reference_fnmr, reference_metrics

KS = (1, 3, 8)
RANKING = ("map@r", "r_precision", "mrr")


def clustered(n: int, n_labels: int, dim: int = 6, seed: int = 0, noise: float = 0.9, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_labels, (n,), generator=g)
    x = torch.randn(n_labels, dim, generator=g)[labels] + noise * torch.randn(n, dim, generator=g)
    if ties:
        x = torch.round(x * 2) / 2  # many equal distances
    return x, labels


def oracle(queries, galleries, q_labels, g_labels, ignore, ks=KS, fmr_vals=()):
    distances = dense_distances(queries, galleries)
    mask_gt = q_labels[:, None] == g_labels[None, :]
    mask_gt &= ~ignore
    n_gt_max = int(mask_gt.sum(dim=1).max())
    width = min(max(max(ks), n_gt_max), int((~ignore).sum(dim=1).min()))
    expected = reference_metrics(distances, mask_gt, ks, ks, ks, ignore=ignore, ranking_metrics=True, mrr_width=width)
    if fmr_vals:
        expected["fnmr@fmr"] = reference_fnmr(distances, mask_gt, fmr_vals, ignore)
    return expected


def assert_equal_to_oracle(unreduced, expected, ks=KS):
    for metric in ("cmc", "precision", "map"):
        for k in ks:
            assert torch.allclose(unreduced[metric][k], torch.tensor(expected[metric][k]), atol=1e-6), (metric, k)
    for metric in RANKING:
        assert torch.allclose(unreduced[metric], torch.tensor(expected[metric][""]), atol=1e-6), metric


# ----------------------------------------------------------------------------------------- distractors
@pytest.mark.parametrize("ties", [False, True])
def test_distractor_queries_are_scored_as_misses(ties):
    x, labels = clustered(160, 12, seed=1, ties=ties)
    labels[[3, 50, 90]] = torch.tensor([100, 101, 102])  # no other item with these labels
    is_query = torch.ones(160, dtype=torch.bool)
    with pytest.warns(UserWarning, match="3 of 160 queries have no relevant gallery item"):
        rr = RetrievalResults.from_embeddings(x, labels, is_query, is_query, top_k=max(KS))
        unreduced = rr.metrics(KS, KS, KS, reduce=False)["OVERALL"]
    ids = torch.arange(160)
    expected = oracle(x, x, labels, labels, ids[:, None] == ids[None, :])
    assert_equal_to_oracle(unreduced, expected)
    assert unreduced["n_queries_without_match"] == 3 and rr.n_queries_without_match == 3
    assert all(float(unreduced[m][3]) == 0.0 for m in RANKING)


# ----------------------------------------------------------------------------------------- sequences
def test_sequences_are_ignored_like_the_query_itself_even_when_they_hide_every_answer():
    x, labels = clustered(150, 10, seed=2)
    sequences = [f"s{i // 3}" for i in range(150)]  # runs of 3 consecutive samples
    sequences[10:13] = [None, None, None]  # no sequence: only the sample itself is ignored
    # the sequence of sample 60 holds every item of its label: nothing is left to find for it
    labels[60:63] = 555
    is_query = torch.ones(150, dtype=torch.bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rr = RetrievalResults.from_embeddings(x, labels, is_query, is_query, top_k=8, sequences=sequences)
        unreduced = rr.metrics(KS, KS, KS, fmr_vals=(0.1, 0.5), reduce=False)["OVERALL"]
    keys = torch.tensor([hash(s) if s is not None else -i - 1 for i, s in enumerate(sequences)])
    ignore = keys[:, None] == keys[None, :]
    expected = oracle(x, x, labels, labels, ignore, fmr_vals=(0.1, 0.5))
    assert_equal_to_oracle(unreduced, expected)
    assert torch.equal(torch.stack(list(unreduced["fnmr@fmr"].values())), expected["fnmr@fmr"])
    assert rr.n_gt[60:63].tolist() == [0, 0, 0] and unreduced["n_queries_without_match"] == 3
    same_sequence = torch.tensor([keys[i] == keys[j] for i, j in zip(range(150), rr.retrieved[:, 0].tolist())])
    assert not same_sequence.any()  # no query retrieves an item of its own sequence


def test_embedding_metrics_with_a_sequence_key_equal_the_oracle():
    x, labels = clustered(120, 8, seed=3)
    sequences = torch.arange(120) // 4
    metric = EmbeddingMetrics(
        cmc_top_k=KS, precision_top_k=KS, map_top_k=KS, pfc_variance=(), sequence_key="sequence", verbose=False
    )
    metric.setup(120)
    for i in range(0, 120, 50):  # in batches
        batch = slice(i, i + 50)
        metric.update_data(
            {
                "embeddings": x[batch],
                "labels": labels[batch],
                "is_query": torch.ones(len(x[batch]), dtype=torch.bool),
                "is_gallery": torch.ones(len(x[batch]), dtype=torch.bool),
                "sequence": sequences[batch],
            }
        )
    metric.compute_metrics()
    expected = oracle(x, x, labels, labels, sequences[:, None] == sequences[None, :])
    assert_equal_to_oracle(metric.metrics_unreduced["OVERALL"], expected)
    # OML's dense attributes follow the protocol too
    assert torch.equal(metric.distance_matrix.isinf(), sequences[:, None] == sequences[None, :])


def test_long_sequences_switch_the_kernel_to_key_comparison(monkeypatch):
    monkeypatch.setattr(knn_module, "MAX_MASK_MULTIPLICITY", 2)
    x, _ = clustered(300, 5, seed=4, ties=True)
    keys = exclusion_keys(torch.arange(300), (torch.arange(300) // 10).tolist())
    for queries_are_galleries in (True, False):
        queries, q_keys = (x, keys) if queries_are_galleries else (x[:120], keys[:120])
        result = exact_knn(queries, x, 7, q_keys, keys, tile_size=64)
        expected_d, expected_i = dense_knn(queries, x, 7, q_keys, keys)
        assert torch.equal(result.indices, expected_i) and torch.equal(result.distances, expected_d)


# ----------------------------------------------------------------------------------------- separate sets
def test_separate_query_and_gallery_sets_equal_the_merged_table():
    x, labels = clustered(200, 9, seed=5, ties=True)
    q_rows, g_rows = torch.arange(0, 80), torch.arange(60, 200)  # 20 samples are on both sides
    is_query = torch.zeros(200, dtype=torch.bool)
    is_gallery = torch.zeros(200, dtype=torch.bool)
    is_query[q_rows], is_gallery[g_rows] = True, True
    string_labels = [f"item-{int(v)}" for v in labels]
    categories = np.array(["a" if int(v) % 2 else "b" for v in labels])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = RetrievalResults.from_embeddings(
            x, string_labels, is_query, is_gallery, top_k=8, categories=categories
        ).metrics(KS, KS, KS, fmr_vals=(0.2,), reduce=False)
        separate = RetrievalResults.from_embeddings_qg(
            x[q_rows],
            x[g_rows],
            [string_labels[i] for i in q_rows],
            [string_labels[i] for i in g_rows],
            top_k=8,
            query_ids=q_rows,
            gallery_ids=g_rows,
            query_categories=categories[q_rows.numpy()],
        ).metrics(KS, KS, KS, fmr_vals=(0.2,), reduce=False)
    assert merged.keys() == separate.keys() == {"OVERALL", "a", "b"}
    for group in merged:
        for metric, values in merged[group].items():
            if isinstance(values, dict):
                for k, v in values.items():
                    assert torch.equal(torch.as_tensor(v), torch.as_tensor(separate[group][metric][k])), (group, metric)
            else:
                assert torch.equal(torch.as_tensor(values), torch.as_tensor(separate[group][metric])), (group, metric)
    expected = oracle(x[q_rows], x[g_rows], labels[q_rows], labels[g_rows], q_rows[:, None] == g_rows[None, :])
    assert_equal_to_oracle(merged["OVERALL"], expected)


def test_separate_sets_with_sequences_on_one_side_only():
    x, labels = clustered(90, 6, seed=6)
    queries, galleries = x[:30], x[30:]
    g_seq = [i // 5 for i in range(60)]
    rr = RetrievalResults.from_embeddings_qg(
        queries, galleries, labels[:30], labels[30:], top_k=3, query_sequences=None, gallery_sequences=g_seq
    )
    # query sequences are missing: no gallery item shares a key with a query, nothing is excluded
    expected_d, expected_i = dense_knn(queries, galleries, 3)
    assert torch.equal(rr.retrieved, expected_i) and torch.equal(rr.distances, expected_d)


def test_search_index_results_equal_the_separate_sets():
    x, labels = clustered(150, 7, seed=7)
    index = SearchIndex(x[50:], labels=[int(v) for v in labels[50:]])
    from_search = RetrievalResults.from_search(index, x[:50], labels[:50].tolist(), top_k=5)
    direct = RetrievalResults.from_embeddings_qg(x[:50], x[50:], labels[:50], labels[50:], top_k=5)
    assert torch.equal(from_search.retrieved, direct.retrieved)
    assert torch.equal(from_search.distances, direct.distances)
    assert from_search.metrics() == direct.metrics()


def test_chunked_retrieval_equals_one_pass(monkeypatch):
    x, labels = clustered(230, 6, seed=8, ties=True)  # R up to ~50: the ranking metrics widen the retrieval
    is_query = torch.rand(230, generator=torch.Generator().manual_seed(0)) < 0.7
    is_gallery = torch.ones(230, dtype=torch.bool)
    one = RetrievalResults.from_embeddings(x, labels, is_query, is_gallery, top_k=8)
    monkeypatch.setattr(results_module, "RETRIEVAL_BUDGET", 500)  # a handful of queries per chunk
    chunked = RetrievalResults.from_embeddings(x, labels, is_query, is_gallery, top_k=8)
    assert one.width == chunked.width > 8
    assert torch.equal(one.retrieved, chunked.retrieved) and torch.equal(one.distances, chunked.distances)
    for name in RANKING:
        assert torch.equal(one.ranking[name], chunked.ranking[name])


def test_results_refuse_k_beyond_what_they_kept():
    x, labels = clustered(50, 5, seed=9)
    flags = torch.ones(50, dtype=torch.bool)
    rr = RetrievalResults.from_embeddings(x, labels, flags, flags, top_k=3, ranking_metrics=())
    with pytest.raises(ValueError, match="build the results with top_k >= 5"):
        rr.metrics(cmc_top_k=(5,))
    with pytest.raises(ValueError, match="were not prepared"):
        rr.metrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(), ranking_metrics=("mrr",))


# ----------------------------------------------------------------------------------------- PML agreement
def test_ranking_and_clustering_metrics_agree_with_pytorch_metric_learning():
    accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    x, labels = clustered(300, 15, dim=16, seed=10, noise=1.2)  # continuous: no ties
    flags = torch.ones(300, dtype=torch.bool)
    rr = RetrievalResults.from_embeddings(x, labels, flags, flags, top_k=1)
    ours = rr.metrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(), clustering_metrics=("nmi", "ami"), seed=3)
    clusters = kmeans(x, 15, seed=3)

    def our_knn(query, k, reference, ref_includes_query):  # exact neighbours so that only the formulas differ
        ids = torch.arange(len(reference))
        result = exact_knn(
            query, reference, k, ids[: len(query)] if ref_includes_query else None, ids if ref_includes_query else None
        )
        return result.distances, result.indices

    calculator = accuracy_calculator.AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision", "mean_reciprocal_rank", "precision_at_1", "NMI", "AMI"),
        k="max_bin_count",
        knn_func=our_knn,
        kmeans_func=lambda embeddings, n_clusters: clusters.to(embeddings.device),
    )
    pml = calculator.get_accuracy(x, labels)
    overall = ours["OVERALL"]
    assert abs(float(overall["map@r"]) - pml["mean_average_precision_at_r"]) < 1e-6
    assert abs(float(overall["r_precision"]) - pml["r_precision"]) < 1e-6
    assert abs(float(overall["mrr"]) - pml["mean_reciprocal_rank"]) < 1e-6
    assert abs(float(overall["cmc"][1]) - pml["precision_at_1"]) < 1e-6
    assert abs(float(overall["nmi"]) - pml["NMI"]) < 1e-6
    assert abs(float(overall["ami"]) - pml["AMI"]) < 1e-6


def test_mutual_information_equals_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for n, k1, k2 in [(30, 3, 4), (400, 20, 25), (1000, 2, 60)]:
        a, b = rng.integers(0, k1, n), rng.integers(0, k2, n)
        b[: n // 2] = a[: n // 2]
        assert abs(normalized_mutual_info(a, b) - metrics.normalized_mutual_info_score(a, b)) < 1e-10
        assert abs(adjusted_mutual_info(a, b) - metrics.adjusted_mutual_info_score(a, b)) < 1e-10


def test_torch_kmeans_is_a_fixed_point_of_lloyd_and_seeded():
    x, _ = clustered(200, 6, dim=3, seed=11)
    ids = kmeans(x, 6, seed=5, backend="torch")
    assert torch.equal(ids, kmeans(x, 6, seed=5, backend="torch"))
    # every point is closest to the mean of its own cluster (slow loop)
    means = {c: x[ids == c].double().mean(dim=0) for c in ids.unique().tolist()}
    for i in range(len(x)):
        nearest = min(means, key=lambda c: (float((x[i].double() - means[c]).square().sum()), c))
        assert nearest == int(ids[i])
