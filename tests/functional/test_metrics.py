import math
import warnings

import numpy as np
import pytest
import torch

import oml.functional.metrics as metrics_module
from oml.functional.knn import exact_knn
from oml.functional.metrics import (
    apply_mask_to_ignore,
    calc_cmc,
    calc_distance_matrix,
    calc_fnmr_at_fmr,
    calc_fnmr_at_fmr_by_embeddings,
    calc_gt_mask,
    calc_map,
    calc_mask_to_ignore,
    calc_pcf,
    calc_precision,
    calc_retrieval_metrics,
    calc_retrieval_metrics_on_topk,
    calc_topological_metrics,
    calculate_accuracy_on_triplets,
    extract_pos_neg_dists,
    reduce_metrics,
)
from tests.utils.oracles import dense_distances as oracle_distances
from tests.utils.oracles import reference_fnmr, reference_metrics


# ----------------------------------------------------------------------------------------- hand-computed
def test_cmc_precision_map_by_hand():
    gt_tops = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    n_gt = torch.tensor([2, 4, 1])
    cmc = calc_cmc(gt_tops, (1, 3))
    assert torch.equal(cmc[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(cmc[1], torch.tensor([1.0, 1.0, 0.0]))
    precision = calc_precision(gt_tops, n_gt, (2, 4))
    assert torch.allclose(precision[0], torch.tensor([1 / 2, 0.0, 0.0]))
    # k=4: the first query has 2 relevant items only -> denominator min(4, 2) = 2
    assert torch.allclose(precision[1], torch.tensor([2 / 2, 2 / 4, 0.0]))
    # map@4: (1/1 + 2/3) / 2, (1/3 + 2/4) / 2, 0
    assert torch.allclose(calc_map(gt_tops, n_gt, (4,))[0], torch.tensor([(1 + 2 / 3) / 2, (1 / 3 + 2 / 4) / 2, 0.0]))
    # map@2 of the second query has no hits -> 0
    assert torch.allclose(calc_map(gt_tops, n_gt, (2,))[0], torch.tensor([1.0, 0.0, 0.0]))


def test_fnmr_doc_example():
    pos = torch.tensor([0, 0, 1, 1, 2, 2, 5, 5, 9, 9], dtype=torch.float)
    neg = torch.tensor([3, 3, 4, 4, 6, 6, 7, 7, 8, 8], dtype=torch.float)
    assert torch.allclose(calc_fnmr_at_fmr(pos, neg, (0.1, 0.5)), torch.tensor([0.4, 0.2]))


def test_pcf_doc_example():
    assert torch.allclose(calc_pcf(torch.eye(4, 10), (0.5, 1)), torch.tensor([0.2, 0.5]))
    assert calc_topological_metrics(torch.eye(4, 10), ()) == {}


def test_calc_retrieval_metrics_by_hand_with_ignore_and_clipping():
    distances = torch.tensor([[0.0, 0.3, 0.1], [0.5, 0.1, 0.2]])
    mask_gt = torch.tensor([[True, False, True], [True, True, False]])
    mask_to_ignore = torch.tensor([[True, False, False], [False, True, False]])
    with pytest.warns(UserWarning, match="larger than the number of gallery items"):
        result = calc_retrieval_metrics(
            distances, mask_gt, mask_to_ignore, cmc_top_k=(1, 10), precision_top_k=(1,), map_top_k=(2,), fmr_vals=()
        )
    # query 0: ranking [2 (gt), 1, 0 (ignored)]; query 1: ranking [2, 0 (gt), 1 (ignored)]
    assert set(result) == {"cmc", "precision", "map"}
    assert torch.allclose(result["cmc"][1], torch.tensor(0.5))
    assert torch.allclose(result["cmc"][10], torch.tensor(1.0))  # keyed by the original k
    assert torch.allclose(result["precision"][1], torch.tensor(0.5))
    assert torch.allclose(result["map"][2], torch.tensor((1.0 + 0.5) / 2))
    # inputs are not modified
    assert distances[0, 0] == 0.0 and bool(mask_gt[0, 0])


def test_calc_retrieval_metrics_ties_are_broken_by_gallery_index():
    distances = torch.tensor([[1.0, 1.0, 1.0, 0.5]])
    result = calc_retrieval_metrics(
        distances, torch.tensor([[False, True, False, False]]), cmc_top_k=(2, 3), precision_top_k=(), map_top_k=()
    )
    assert result["cmc"][2] == 0.0 and result["cmc"][3] == 1.0  # order: 3, 0, 1, 2


def test_calc_retrieval_metrics_unreduced_and_fnmr():
    distances = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    mask_gt = torch.tensor([[True, False], [False, True]])
    result = calc_retrieval_metrics(distances, mask_gt, cmc_top_k=(1,), precision_top_k=(), map_top_k=(), reduce=False)
    assert torch.equal(result["cmc"][1], torch.tensor([1.0, 1.0]))
    assert result["fnmr@fmr"][1] == 0.0  # default fmr_vals=(1,): threshold = max negative distance


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calc_retrieval_metrics_equals_loops(seed):
    torch.manual_seed(seed)
    n_queries, n_galleries = 30, 25
    distances = torch.randint(0, 6, (n_queries, n_galleries)).float()  # many ties
    mask_gt = torch.rand(n_queries, n_galleries) < 0.3
    mask_gt[torch.arange(n_queries), torch.randint(0, n_galleries, (n_queries,))] = True
    ks = (1, 3, 7, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = calc_retrieval_metrics(distances, mask_gt, None, ks, ks, ks, (), reduce=False)
    expected = reference_metrics(distances, mask_gt, ks, ks, ks)
    for metric in ("cmc", "precision", "map"):
        for k in ks:
            assert torch.allclose(result[metric][k], torch.tensor(expected[metric][k]), atol=1e-6), (metric, k)


@pytest.mark.parametrize("symmetric", [True, False])
def test_topk_path_equals_dense_path(symmetric):
    torch.manual_seed(3)
    n = 400
    embeddings = torch.randint(0, 4, (n, 3)).float() + 0.001 * torch.randint(0, 2, (n, 3))  # ties
    labels = torch.randint(0, 15, (n,))
    ids = torch.arange(n)
    if symmetric:
        queries = galleries = embeddings
        q_ids = g_ids = ids
        q_labels = g_labels = labels
    else:
        q_rows, g_rows = ids[:250], ids[100:]
        queries, galleries, q_ids, g_ids = embeddings[q_rows], embeddings[g_rows], q_rows, g_rows
        q_labels, g_labels = labels[q_rows], labels[g_rows]
    mask_gt = q_labels[:, None] == g_labels[None, :]
    ignore = q_ids[:, None] == g_ids[None, :]
    keep = (mask_gt & ~ignore).any(dim=1)
    ks = (1, 5, 10)
    dense = calc_retrieval_metrics(
        oracle_distances(queries, galleries)[keep], mask_gt[keep], ignore[keep], ks, ks, ks, (0.1, 0.5), reduce=False
    )

    result = exact_knn(queries, galleries, 10, q_ids, g_ids, tile_size=64)
    retrieved = g_ids[result.indices]
    gt_tops = (g_labels[result.indices] == q_labels[:, None]) & (retrieved != q_ids[:, None])
    n_gt = (mask_gt & ~ignore).sum(dim=1)
    topk = calc_retrieval_metrics_on_topk(gt_tops[keep], n_gt[keep], ks, ks, ks, reduce=False)
    for metric in ("cmc", "precision", "map"):
        for k in ks:
            assert torch.equal(topk[metric][k], dense[metric][k]), (metric, k)
    kept = keep.nonzero().flatten()
    fnmr = calc_fnmr_at_fmr_by_embeddings(
        embeddings[q_ids[kept]], galleries, q_labels[kept], g_labels, (0.1, 0.5), q_ids[kept], g_ids
    )
    assert torch.equal(fnmr, torch.stack([dense["fnmr@fmr"][0.1], dense["fnmr@fmr"][0.5]]))


# ----------------------------------------------------------------------------------------- FNMR@FMR
FMRS = (0.0, 0.001, 0.05, 0.1, 0.5, 0.77, 1.0)


def fnmr_oracle(queries, galleries, q_labels, g_labels, fmr_vals, q_ids=None, g_ids=None):
    ignore = None if q_ids is None else q_ids[:, None] == g_ids[None, :]
    mask_gt = q_labels[:, None] == g_labels[None, :]
    return reference_fnmr(oracle_distances(queries, galleries), mask_gt, fmr_vals, ignore)


@pytest.mark.parametrize(
    "n_queries,n_galleries,dim,n_labels,tile", [(40, 70, 4, 5, 16), (300, 500, 16, 20, 128), (250, 250, 2, 3, None)]
)
def test_fnmr_by_embeddings_is_exact(n_queries, n_galleries, dim, n_labels, tile):
    torch.manual_seed(n_queries)
    queries, galleries = torch.randn(n_queries, dim), torch.randn(n_galleries, dim)
    q_labels, g_labels = torch.randint(0, n_labels, (n_queries,)), torch.randint(0, n_labels, (n_galleries,))
    result = calc_fnmr_at_fmr_by_embeddings(queries, galleries, q_labels, g_labels, FMRS, tile_size=tile)
    assert torch.equal(result, fnmr_oracle(queries, galleries, q_labels, g_labels, FMRS))


def test_fnmr_by_embeddings_self_retrieval_with_ties():
    torch.manual_seed(7)
    x = torch.randint(0, 3, (300, 3)).float()
    labels = torch.randint(0, 4, (300,))
    ids = torch.arange(300)
    result = calc_fnmr_at_fmr_by_embeddings(x, x, labels, labels, FMRS, ids, ids, tile_size=100)
    assert torch.equal(result, fnmr_oracle(x, x, labels, labels, FMRS, ids, ids))


def test_fnmr_by_embeddings_approximate_fallback_is_within_the_documented_bound():
    torch.manual_seed(8)
    x = torch.randn(200, 8)
    labels = torch.randint(0, 6, (200,))
    ids = torch.arange(200)
    with pytest.warns(UserWarning, match="returning the value computed from the GEMM distances"):
        approx = calc_fnmr_at_fmr_by_embeddings(x, x, labels, labels, FMRS, ids, ids, buffer_size=0)

    from oml.functional.knn import QueryGalleryDistances

    delta = float(QueryGalleryDistances(x, x, ids, ids).error_bound.max())
    distances = oracle_distances(x, x).double()
    same, keep = labels[:, None] == labels[None, :], ids[:, None] != ids[None, :]
    pos, neg = distances[same & keep], distances[~same & keep]
    thresholds = np.quantile(neg.float().numpy(), FMRS)
    for value, threshold in zip(approx.tolist(), thresholds):
        upper = (pos.square() >= threshold**2 - 2 * delta).double().mean().item()
        lower = (pos.square() >= threshold**2 + 2 * delta).double().mean().item()
        assert lower - 1e-7 <= value <= upper + 1e-7


def test_fnmr_bad_inputs():
    with pytest.raises(ValueError, match=r"fmr_vals must be in \[0, 1\]"):
        calc_fnmr_at_fmr(torch.ones(3), torch.ones(3), (10,))
    with pytest.raises(ValueError, match="positive and negative"):
        calc_fnmr_at_fmr(torch.ones(0), torch.ones(3), (0.1,))
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="positive and negative pairs"):
        calc_fnmr_at_fmr_by_embeddings(x, x, torch.zeros(5), torch.zeros(5), (0.1,))


# ----------------------------------------------------------------------------------------- dense helpers
def test_masks_and_distance_matrix():
    labels = torch.tensor([0, 1, 0, 2])
    is_query = torch.tensor([True, True, False, True])
    is_gallery = torch.tensor([True, False, True, True])
    assert torch.equal(
        calc_gt_mask(labels, is_query, is_gallery),
        torch.tensor([[True, True, False], [False, False, False], [False, False, True]]),
    )
    assert torch.equal(
        calc_mask_to_ignore(is_query, is_gallery),
        torch.tensor([[True, False, False], [False, False, False], [False, False, True]]),
    )
    emb = torch.randn(4, 3)
    expected = torch.cdist(emb[is_query].double(), emb[is_gallery].double()).float()
    assert torch.allclose(calc_distance_matrix(emb, is_query, is_gallery), expected)
    with pytest.raises(ValueError, match="is_query must be a vector of length 4"):
        calc_gt_mask(labels, is_query[:3], is_gallery)
    with pytest.raises(ValueError, match="0/1"):
        calc_mask_to_ignore(torch.tensor([0, 2]), torch.tensor([1, 1]))


def test_apply_mask_and_extract_pos_neg():
    distances = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    mask_gt = torch.tensor([[True, False], [True, True]])
    ignore = torch.tensor([[True, False], [False, False]])
    pos, neg = extract_pos_neg_dists(distances, mask_gt, ignore)
    assert torch.equal(pos, torch.tensor([2.0, 3.0])) and torch.equal(neg, torch.tensor([1.0]))
    d, m = apply_mask_to_ignore(distances, mask_gt, ignore)
    assert math.isinf(d[0, 0]) and not m[0, 0]
    with pytest.raises(ValueError, match="same shape"):
        apply_mask_to_ignore(distances, mask_gt[:1], ignore)


def test_calc_retrieval_metrics_bad_inputs():
    d, m = torch.rand(3, 4), torch.ones(3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="nothing to compute"):
        calc_retrieval_metrics(d, m, cmc_top_k=(), precision_top_k=(), map_top_k=(), fmr_vals=())
    with pytest.raises(ValueError, match="must be equal"):
        calc_retrieval_metrics(d, m[:, :3])
    with pytest.raises(ValueError, match="positive integers"):
        calc_retrieval_metrics(d, m, cmc_top_k=(0,))
    with pytest.raises(ValueError, match="Empty query"):
        calc_retrieval_metrics(d[:0], m[:0])
    m[1] = False  # a query without relevant items: scored as a miss, with a warning
    with pytest.warns(UserWarning, match=r"1 of 3 queries have no relevant gallery item"):
        scores = calc_retrieval_metrics(d, m, fmr_vals=(), reduce=False)
    assert [values[1] for metric in scores.values() for values in metric.values()] == [0.0, 0.0, 0.0]
    nan = d.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        calc_retrieval_metrics(nan, torch.ones(3, 4, dtype=torch.bool))


def test_reduce_metrics():
    metrics = {"A": {"cmc": {1: torch.tensor([1.0, 0.0, 0.0, 1.0])}, "pcf": {0.5: torch.tensor(0.25)}}}
    assert reduce_metrics(metrics) == {"A": {"cmc": {1: torch.tensor(0.5)}, "pcf": {0.5: torch.tensor(0.25)}}}


def test_reduce_metrics_reduces_numpy_arrays_like_tensors():
    # OML 0.4.4 reduces numpy arrays by their mean too (ours used to fail with "truth value is ambiguous")
    metrics = {"OVERALL": {"cmc": {1: np.array([1.0, 0.0, 0.0, 0.0])}, "n": 3, "empty": np.array([])}}
    reduced = reduce_metrics(metrics)
    assert reduced["OVERALL"]["cmc"][1] == pytest.approx(0.25)
    assert reduced["OVERALL"]["n"] == 3
    assert reduced["OVERALL"]["empty"].size == 0


def test_functional_metrics_clip_top_k_to_the_width_like_oml():
    # OML 0.4.4 clips a k larger than the retrieved width (with a warning) instead of raising
    gt_tops = torch.tensor([[0, 1], [0, 0], [1, 1]], dtype=torch.bool)
    n_gt = torch.tensor([1, 3, 2])
    with pytest.warns(UserWarning, match="clipped to 2"):
        cmc = calc_cmc(gt_tops, (1, 5))
    assert torch.equal(cmc[1], calc_cmc(gt_tops, (2,))[0])
    with pytest.warns(UserWarning, match="clipped to 2"):
        precision = calc_precision(gt_tops, n_gt, (7,))
    assert torch.equal(precision[0], calc_precision(gt_tops, n_gt, (2,))[0])
    with pytest.warns(UserWarning, match="clipped to 2"):
        average_precision = calc_map(gt_tops, n_gt, (3,))
    assert torch.equal(average_precision[0], torch.tensor([0.5, 0.0, 1.0]))


def test_accuracy_on_triplets_equals_loop():
    torch.manual_seed(9)
    emb = torch.randn(30, 4)
    expected = [float(torch.dist(emb[i], emb[i + 1]) < torch.dist(emb[i], emb[i + 2])) for i in range(0, 30, 3)]
    assert torch.allclose(calculate_accuracy_on_triplets(emb, reduce_mean=False), torch.tensor(expected))
    assert torch.isclose(calculate_accuracy_on_triplets(emb), torch.tensor(expected).mean())
    with pytest.raises(ValueError, match="3 \\* n_triplets"):
        calculate_accuracy_on_triplets(emb[:4])


def test_pcf_chunked_path_equals_pca_path(monkeypatch):
    torch.manual_seed(10)
    emb = torch.randn(3000, 20) @ torch.diag(torch.linspace(0.1, 3, 20))
    variances = (0.1, 0.5, 0.9, 0.99)
    dense = calc_pcf(emb, variances)
    monkeypatch.setattr(metrics_module, "PCA_DENSE_MAX_ELEMENTS", 100)
    assert torch.equal(calc_pcf(emb, variances), dense)
    ratio = metrics_module._explained_variance_ratio_chunked(emb, chunk=256)
    from oml.utils.misc_torch import PCA

    assert torch.allclose(ratio, PCA(emb).explained_variance_ratio, atol=1e-10)
    with pytest.raises(ValueError, match="pfc_variance"):
        calc_pcf(emb, (1.5,))


@pytest.mark.parametrize("exponent", [100, -70])
def test_fnmr_by_embeddings_does_not_depend_on_the_scale(exponent):
    # float32 squared norms of embeddings around 1e30 used to overflow: "got 0 and 0 positive and negative pairs"
    torch.manual_seed(12)
    x = torch.randn(120, 8)
    labels = torch.randint(0, 6, (120,))
    ids = torch.arange(120)
    expected = calc_fnmr_at_fmr_by_embeddings(x, x, labels, labels, FMRS, ids, ids)
    scaled = x * 2.0**exponent  # exact: distances scale exactly
    assert torch.equal(calc_fnmr_at_fmr_by_embeddings(scaled, scaled, labels, labels, FMRS, ids, ids), expected)
