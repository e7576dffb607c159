"""SearchIndex: exact search vs brute force, Faiss recall, persistence, classification, thresholds, bad input."""

import builtins
from pathlib import Path

import pytest
import torch

from oml.functional.distances import exact_distances_of_topk
from oml.functional.ordering import sort_by_value_then_index
from oml.retrieval.decision import calibrate_threshold, knn_vote, match_rates
from oml.retrieval.index import SearchIndex
from tests.inference.helpers import TinyExtractor, tiny_transforms

RECALL_FLOOR = 0.95  # recall@10 of the approximate backends on clustered data (measured: 1.0)


def brute_force(queries: torch.Tensor, galleries: torch.Tensor, k: int):
    """Dense float64 distances, stable sort (ties by gallery position)."""
    d = torch.cdist(queries.double(), galleries.double())
    order = torch.argsort(d, dim=1, stable=True)[:, :k]
    return d.gather(1, order).float(), order


def clustered(n: int, dim: int = 32, n_clusters: int = 100, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(n_clusters, dim, generator=torch.Generator().manual_seed(123))
    return centers[torch.randint(0, n_clusters, (n,), generator=g)] + torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("n_galleries, k", [(1, 1), (50, 5), (300, 20), (40, 100)])
def test_exact_search_equals_brute_force(n_galleries: int, k: int) -> None:
    g = torch.Generator().manual_seed(n_galleries)
    galleries = torch.randn(n_galleries, 8, generator=g)
    galleries[n_galleries // 2 :: 7] = galleries[0].clone()  # duplicates: ties broken by position
    queries = torch.cat([torch.randn(17, 8, generator=g), galleries[:3]])
    labels = [f"label_{i % 4}" for i in range(n_galleries)]
    index = SearchIndex(galleries, ids=[f"img_{i}.jpg" for i in range(n_galleries)], labels=labels)
    result = index.search(queries, top_k=k)
    distances, indices = brute_force(queries, galleries, min(k, n_galleries))
    assert torch.equal(result.indices, indices)
    assert torch.allclose(result.distances, distances, atol=1e-6)
    assert result.ids == [[f"img_{i}.jpg" for i in row] for row in indices.tolist()]
    assert result.labels == [[labels[i] for i in row] for row in indices.tolist()]


def test_faiss_backends_recall(capsys: pytest.CaptureFixture) -> None:
    galleries, queries = clustered(10_000), clustered(300, seed=1)
    exact = SearchIndex(galleries).search(queries, top_k=10)
    flat = SearchIndex(galleries, backend="faiss_flat").search(queries, top_k=10)
    assert torch.equal(flat.indices, exact.indices) and torch.allclose(flat.distances, exact.distances, atol=1e-6)
    recalls = {}
    for backend, params in [("faiss_ivf", {}), ("faiss_hnsw", {"m": 16})]:
        result = SearchIndex(galleries, backend=backend, **params).search(queries, top_k=10)
        hits = sum(len(set(a) & set(b)) for a, b in zip(result.indices.tolist(), exact.indices.tolist()))
        recalls[backend] = hits / exact.indices.numel()
        # the distances of the found items are exact, and sorted
        assert torch.allclose(result.distances, exact_distances_of_topk(queries, galleries, result.indices), atol=0)
        assert (result.distances[:, 1:] >= result.distances[:, :-1]).all()
    with capsys.disabled():
        print(f"\nrecall@10 vs exact search (10k clustered vectors, dim 32): {recalls}")
    assert all(recall >= RECALL_FLOOR for recall in recalls.values()), recalls
    few_cells = SearchIndex(galleries, backend="faiss_ivf", nlist=256, nprobe=1).search(queries, top_k=10)
    hits = sum(len(set(a) & set(b)) for a, b in zip(few_cells.indices.tolist(), exact.indices.tolist()))
    assert hits / exact.indices.numel() < 1.0  # the approximation is real


@pytest.mark.parametrize("backend", ["exact", "faiss_ivf", "faiss_hnsw"])
def test_save_load_round_trip(backend: str, tmp_path: Path) -> None:
    galleries, queries = clustered(2_000, dim=16), clustered(50, dim=16, seed=1)
    index = SearchIndex(galleries, ids=[f"p{i}" for i in range(2_000)], labels=list(range(2_000)), backend=backend)
    index.save(tmp_path / "index.pt")
    content = torch.load(tmp_path / "index.pt", weights_only=True)  # a safe format
    assert content["backend"] == backend
    loaded = SearchIndex.load(tmp_path / "index.pt")
    a, b = index.search(queries, 7), loaded.search(queries, 7)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.distances, b.distances)
    assert loaded.ids == index.ids and loaded.labels == index.labels and loaded.backend_name == backend


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no search index file"):
        SearchIndex.load(tmp_path / "missing.pt")
    torch.save({"embeddings": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a search index"):
        SearchIndex.load(tmp_path / "other.pt")


def test_add_equals_building_at_once() -> None:
    g = torch.Generator().manual_seed(0)
    a, b, queries = torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g), torch.randn(5, 4, generator=g)
    for backend in ("exact", "faiss_hnsw"):
        index = SearchIndex(a, labels=[0] * 30, backend=backend)
        index.add(b, labels=[1] * 20)
        whole = SearchIndex(torch.cat([a, b]), backend=backend)
        assert torch.equal(index.search(queries, 6).indices, whole.search(queries, 6).indices)
        assert index.ids == list(range(50)) and index.labels == [0] * 30 + [1] * 20
    with pytest.raises(ValueError, match="labels for the new items"):
        index.add(b)


def test_bad_input() -> None:
    galleries = torch.randn(10, 4)
    index = SearchIndex(galleries)
    with pytest.raises(ValueError, match="dimension 5, but the index holds vectors of dimension 4"):
        index.search(torch.randn(2, 5), top_k=3)
    with pytest.raises(ValueError, match="empty gallery"):
        SearchIndex(torch.zeros(0, 4))
    bad = torch.randn(3, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"queries contain NaN or inf in 1 of 3 rows \(e.g. rows \[1\]\)"):
        index.search(bad, top_k=3)
    with pytest.raises(ValueError, match="embeddings contain NaN"):
        SearchIndex(bad)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        index.search(galleries, top_k=0)
    with pytest.raises(ValueError, match="2D tensor"):
        index.search(torch.randn(4), top_k=1)
    with pytest.raises(TypeError, match="floating point"):
        SearchIndex(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="ids has 3 values, expected 10"):
        SearchIndex(galleries, ids=[1, 2, 3])
    with pytest.raises(TypeError, match=r"labels\[0\] must be an int, a string or a path"):
        SearchIndex(galleries, labels=[1.5] * 10)
    with pytest.raises(ValueError, match="Unknown search backend 'annoy'"):
        SearchIndex(galleries, backend="annoy")
    with pytest.raises(TypeError, match="takes no parameters"):
        SearchIndex(galleries, nprobe=3)
    with pytest.raises(ValueError, match="classify needs an index with labels"):
        index.classify(galleries)
    assert index.search(torch.zeros(0, 4), top_k=3).indices.shape == (0, 3)


def test_missing_faiss_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ImportError, match=r'pip install "oml\[faiss\]"'):
        SearchIndex(torch.randn(5, 3), backend="faiss_ivf")
    assert len(SearchIndex(torch.randn(5, 3)).search(torch.randn(1, 3), 2)) == 1  # the exact search needs no Faiss


def knn_vote_loop(distances, labels, weighting):
    winners, confidences = [], []
    for d_row, l_row in zip(distances.tolist(), labels.tolist()):
        scores, nearest = {}, {}
        for rank, (d, label) in enumerate(zip(d_row, l_row)):
            if d == float("inf"):
                continue
            scores[label] = scores.get(label, 0.0) + (1 / (d + 1e-8) if weighting == "distance" else 1.0)
            nearest.setdefault(label, rank)
        if not scores:
            winners.append(-1)
            confidences.append(0.0)
            continue
        best = max(scores.values())
        tied = [label for label, s in scores.items() if s >= best * (1 - 1e-12)]
        winners.append(min(tied, key=lambda label: nearest[label]))
        confidences.append(best / sum(scores.values()))
    return winners, confidences


@pytest.mark.parametrize("weighting", ["distance", "uniform"])
def test_knn_vote_against_a_loop(weighting: str) -> None:
    g = torch.Generator().manual_seed(0)
    distances = torch.sort(torch.rand(200, 6, generator=g), dim=1).values
    distances[::17, 3:] = float("inf")  # missing neighbours
    distances[5] = float("inf")  # nothing found
    distances[7] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = torch.randint(0, 3, (200, 6), generator=g)
    labels[7] = torch.tensor([2, 1, 1, 2, 0, 0])  # uniform: a three-way tie -> the nearest label (2) wins
    winners, confidence = knn_vote(distances, labels, weighting=weighting)
    expected_w, expected_c = knn_vote_loop(distances, labels, weighting)
    assert winners.tolist() == expected_w
    assert torch.allclose(confidence, torch.tensor(expected_c), atol=1e-6)
    with pytest.raises(ValueError, match="weighting"):
        knn_vote(distances, labels, weighting="softmax")
    no_queries = knn_vote(torch.zeros(0, 6), torch.zeros(0, 6, dtype=torch.long), weighting=weighting)
    assert no_queries[0].shape == (0,) and no_queries[1].shape == (0,)  # it used to fail on max() of nothing


def test_classify_by_retrieval() -> None:
    galleries = clustered(600, dim=8, n_clusters=6)
    centers = 3 * torch.randn(6, 8, generator=torch.Generator().manual_seed(123))
    labels = [f"class_{int(torch.cdist(x[None], centers).argmin())}" for x in galleries]
    index = SearchIndex(galleries, labels=labels)
    predicted, confidence = index.classify(centers, top_k=9)
    assert predicted == [f"class_{i}" for i in range(6)]
    assert ((confidence > 0.5) & (confidence <= 1)).all()


def test_threshold_calibration_against_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    distances = torch.rand(300, generator=g)
    is_correct = torch.rand(300, generator=g) < distances.neg().add(1)  # closer matches are more often correct
    for rate in (0.0, 0.01, 0.1, 0.5, 0.999, 1.0):
        threshold = calibrate_threshold(distances, is_correct, rate)
        _, fmr = match_rates(distances, is_correct, threshold)
        assert fmr <= rate + 1e-12
        larger = [float(d) for d in distances[~is_correct] if d > threshold]  # any larger threshold accepts more
        if larger:
            assert match_rates(distances, is_correct, min(larger) + 1e-7)[1] > rate
    assert calibrate_threshold(torch.tensor([0.3]), torch.tensor([True]), 0.1) == float("inf")
    with pytest.raises(ValueError, match="max_false_match_rate"):
        calibrate_threshold(distances, is_correct, 1.5)


def test_threshold_for_open_set_queries() -> None:
    galleries = clustered(500, dim=8, n_clusters=5)
    centers = 3 * torch.randn(5, 8, generator=torch.Generator().manual_seed(123))
    labels = [int(torch.cdist(x[None], centers).argmin()) for x in galleries]
    index = SearchIndex(galleries, labels=labels)
    known = clustered(100, dim=8, n_clusters=5, seed=2)
    known_labels = [int(torch.cdist(x[None], centers).argmin()) for x in known]
    unknown = 30 + torch.randn(50, 8)  # far from every gallery item: their label is not in the gallery
    queries = torch.cat([known, unknown])
    threshold = index.calibrate_threshold(queries, known_labels + [-1] * 50, max_false_match_rate=0.0)
    result = index.search(queries, top_k=3).apply_threshold(threshold)
    assert (result.indices[100:] == -1).all() and torch.isinf(result.distances[100:]).all()
    assert result.ids[100] == [None, None, None]
    assert (result.indices[:100, 0] >= 0).float().mean() > 0.9


def test_from_images_and_sorting_helper(mock_dataset_root: Path) -> None:
    paths = sorted((mock_dataset_root / "images").glob("*.jpg"))[:12]
    index = SearchIndex.from_images(TinyExtractor(), paths, tiny_transforms(), labels=list(range(12)), batch_size=5)
    assert index.ids == [str(p) for p in paths] and index.dim == 6
    assert index.search(index.embeddings[3:4], top_k=1).ids == [[str(paths[3])]]
    d, i = sort_by_value_then_index(torch.tensor([[0.5, 0.1, float("inf"), 0.1]]), torch.tensor([[4, 9, -1, 2]]))
    assert i.tolist() == [[2, 9, 4, -1]] and d[0, :3].tolist() == pytest.approx([0.1, 0.1, 0.5])


def test_exact_index_keeps_its_prepared_gallery_between_searches(prepared_gallery_builds):
    built = prepared_gallery_builds
    torch.manual_seed(20)
    index = SearchIndex(torch.randn(200, 8))
    queries = torch.randn(30, 8)
    first = index.search(queries, top_k=4)
    second = index.search(queries, top_k=4)
    assert len(built) == 1  # prepared by the first search only
    assert torch.equal(first.indices, second.indices) and torch.equal(first.distances, second.distances)
    index.add(torch.randn(20, 8))
    third = index.search(queries, top_k=4)
    assert len(built) == 2  # the gallery changed
    expected = torch.cdist(queries.double(), index.embeddings.double()).topk(4, largest=False).indices
    assert torch.equal(third.indices, expected)
