import pytest
import torch

import oml.functional.knn as knn_module
from oml.functional.knn import QueryGalleryDistances, exact_knn, matmul_unit_roundoff
from tests.utils.oracles import dense_knn as dense_oracle


def assert_same_as_oracle(queries, galleries, k, query_ids=None, gallery_ids=None, **kwargs):
    result = exact_knn(queries, galleries, k, query_ids, gallery_ids, **kwargs)
    expected_d, expected_i = dense_oracle(queries, galleries, k, query_ids, gallery_ids)
    assert torch.equal(result.indices, expected_i)
    assert torch.equal(result.distances, expected_d)
    return result


@pytest.mark.parametrize(
    "n_queries,n_galleries,dim,k,tile_size",
    [
        (37, 101, 8, 5, 16),  # tile size does not divide Q nor G
        (64, 128, 4, 3, 32),  # it divides both
        (200, 2100, 16, 10, 1000),  # wide tiles with sub-block pre-selection and a remainder
        (300, 700, 3, 1, None),  # default tiling
        (25, 40, 5, 40, 7),  # k == G
    ],
)
def test_separate_sets_equal_oracle(n_queries, n_galleries, dim, k, tile_size):
    torch.manual_seed(n_queries)
    queries, galleries = torch.randn(n_queries, dim), torch.randn(n_galleries, dim)
    assert_same_as_oracle(queries, galleries, k, tile_size=tile_size)


@pytest.mark.parametrize("n,k,tile_size", [(150, 5, 32), (1200, 7, 500), (301, 300, 64), (90, 4, None)])
def test_symmetric_mode_equals_oracle(n, k, tile_size):
    torch.manual_seed(n)
    x = torch.randn(n, 6)
    ids = torch.arange(n)
    result = assert_same_as_oracle(x, x, k, ids, ids, tile_size=tile_size)
    assert not (result.indices[:, : min(k, n - 1)] == ids[:, None]).any()  # the sample itself is excluded


def test_overlapping_sets_with_ids():
    torch.manual_seed(1)
    x = torch.randn(500, 8)
    query_rows, gallery_rows = torch.arange(0, 300), torch.arange(150, 500)
    queries, galleries = x[query_rows], x[gallery_rows]
    assert_same_as_oracle(queries, galleries, 6, query_rows, gallery_rows, tile_size=64)


@pytest.mark.parametrize("symmetric", [True, False])
def test_ties_and_duplicates(symmetric):
    torch.manual_seed(2)
    x = torch.randint(0, 3, (600, 3)).float()  # 27 distinct points: massive exact ties
    ids = torch.arange(600)
    galleries, gallery_ids = (x, ids) if symmetric else (x.clone(), ids.clone())
    assert_same_as_oracle(x, galleries, 9, ids, gallery_ids, tile_size=128)


def test_uncertified_queries_are_searched_again(monkeypatch):
    torch.manual_seed(3)
    x = torch.cat([torch.zeros(60, 4), torch.randn(400, 4)])  # 60 duplicates: near-ties around the 5th neighbour
    ids = torch.arange(len(x))
    calls = {"scan": 0, "brute": 0}
    scan, brute = knn_module._scan, knn_module._brute_force

    def counting_scan(*args, **kwargs):
        calls["scan"] += 1
        return scan(*args, **kwargs)

    def counting_brute(*args, **kwargs):
        calls["brute"] += 1
        return brute(*args, **kwargs)

    monkeypatch.setattr(knn_module, "_scan", counting_scan)
    monkeypatch.setattr(knn_module, "_brute_force", counting_brute)
    assert_same_as_oracle(x, x.clone(), 5, ids, ids.clone(), extra=2, tile_size=100)
    assert calls["scan"] >= 2 or calls["brute"] >= 1


def test_cancellation_prone_data():
    # large common offset: |q|^2 + |g|^2 - 2 q.g cancels catastrophically in float32
    torch.manual_seed(4)
    x = 1000.0 + 0.01 * torch.randn(300, 16)
    ids = torch.arange(300)
    assert_same_as_oracle(x, x, 5, ids, ids, tile_size=64)
    assert_same_as_oracle(x[:100], x, 5, tile_size=64)


def test_float64_and_float16_inputs():
    torch.manual_seed(5)
    x64 = torch.randn(80, 4, dtype=torch.float64)
    result = exact_knn(x64, x64.clone(), 3)
    assert result.distances.dtype == torch.float64
    expected = torch.cdist(x64, x64, compute_mode="donot_use_mm_for_euclid_dist").sort(dim=1)
    assert torch.allclose(result.distances, expected.values[:, :3], rtol=1e-12, atol=0)
    x16 = torch.randn(50, 4).half()
    result16 = exact_knn(x16, x16.clone(), 2)
    assert result16.distances.dtype == torch.float32
    assert torch.equal(result16.indices, dense_oracle(x16.float(), x16.float(), 2)[1])


def test_error_bound_holds_for_every_tile():
    torch.manual_seed(6)
    queries = torch.randn(70, 32) * torch.rand(70, 1) * 10
    galleries = 3.0 + torch.randn(90, 32)
    dists = QueryGalleryDistances(queries, galleries)
    truth = (queries.double()[:, None] - galleries.double()[None]).square().sum(-1)
    seen = torch.zeros(70, 90, dtype=torch.int)
    for _, rows, c0, tile in dists.tiles(torch.arange(70), 32, 40):
        error = (tile.double() - truth[rows, c0 : c0 + tile.shape[1]]).abs()
        assert (error <= dists.error_bound[rows][:, None]).all()
        seen[rows, c0 : c0 + tile.shape[1]] += 1
    assert (seen == 1).all()


def test_symmetric_tiles_cover_every_pair_once():
    x = torch.randn(50, 3)
    ids = torch.arange(50)
    dists = QueryGalleryDistances(x, x, ids, ids)
    assert dists.symmetric
    seen = torch.zeros(50, 50, dtype=torch.int)
    for r0, c0, tile in dists.symmetric_tiles(16):
        seen[r0 : r0 + tile.shape[0], c0 : c0 + tile.shape[1]] += 1
        if r0 != c0:
            seen[c0 : c0 + tile.shape[1], r0 : r0 + tile.shape[0]] += 1
        assert torch.isinf(tile[(ids[r0 : r0 + tile.shape[0], None] == ids[None, c0 : c0 + tile.shape[1]])]).all()
    assert (seen == 1).all()


def test_matmul_unit_roundoff_follows_the_precision_setting():
    previous = torch.get_float32_matmul_precision()
    try:
        assert matmul_unit_roundoff(torch.float32, torch.device("cpu")) == 2.0**-24
        torch.set_float32_matmul_precision("medium")
        assert matmul_unit_roundoff(torch.float32, torch.device("cpu")) == 2.0**-8
        assert matmul_unit_roundoff(torch.float64, torch.device("cpu")) == 2.0**-53
    finally:
        torch.set_float32_matmul_precision(previous)


def test_bad_inputs():
    x = torch.randn(10, 4)
    bad = x.clone()
    bad[3, 1] = float("nan")
    bad[7, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 of 10 rows.*\[3, 7\]"):
        exact_knn(bad, x, 2)
    with pytest.raises(ValueError, match="k must be"):
        exact_knn(x, x, 11)
    with pytest.raises(ValueError, match="k must be"):
        exact_knn(x, x, 0)
    with pytest.raises(ValueError, match="same dimension"):
        exact_knn(x, torch.randn(5, 3), 1)
    with pytest.raises(ValueError, match="2D"):
        exact_knn(x[0], x, 1)
    with pytest.raises(ValueError, match="given together"):
        exact_knn(x, x, 1, query_ids=torch.arange(10))
    with pytest.raises(ValueError, match="k must be"):
        exact_knn(x, x[:0], 1)
    empty = exact_knn(x[:0], x, 3)
    assert empty.indices.shape == (0, 3)


def test_two_threads_take_the_same_path_to_the_same_answer():
    # the suite pins one thread (conftest); the kernel switches its bookkeeping to one thread and back
    # only when more are set, so that branch runs here
    torch.manual_seed(21)
    x = torch.randint(0, 3, (700, 4)).float()  # many exact ties
    ids = torch.arange(700)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_same_as_oracle(x, x, 9, ids, ids, tile_size=128)
        assert_same_as_oracle(x[:300], x[200:], 5, ids[:300], ids[200:])
        assert torch.get_num_threads() == 2  # restored after every bookkeeping section
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- bfloat16 screening
def test_screening_error_bound_holds_for_every_tile():
    torch.manual_seed(16)
    queries = torch.randn(60, 37) * torch.rand(60, 1) * 30  # D not a multiple of 16, varied and large norms
    galleries = 5.0 + torch.randn(90, 37) * 3
    dists = QueryGalleryDistances(queries, galleries, screen_dtype=torch.bfloat16)
    assert dists.tile_dtype == torch.bfloat16 and dists.gallery_aug.dtype == torch.bfloat16
    truth = (queries.double()[:, None] - galleries.double()[None]).square().sum(-1)
    worst = 0.0
    for _, rows, c0, tile in dists.tiles(torch.arange(60), 16, 32):
        error = (tile.double() - truth[rows, c0 : c0 + tile.shape[1]]).abs() / dists.error_bound[rows][:, None]
        worst = max(worst, float(error.max()))
    assert worst <= 1.0  # the proven bound holds ...
    assert worst > 0.01  # ... and is not vacuous: bfloat16 errors are a visible part of it


@pytest.mark.parametrize(
    "case", ["near_ties", "duplicates", "large_norms", "unnormalised", "separate_sets", "sequences"]
)
def test_screened_search_equals_the_float32_path_and_the_oracle(case):
    torch.manual_seed(17)
    n, dim = 400, 21
    x = torch.randn(n, dim)
    if case == "near_ties":
        x = torch.nn.functional.normalize(torch.randn(20, dim), dim=1)[torch.arange(n) % 20] + 1e-4 * x
    elif case == "duplicates":
        x = x[torch.randint(0, 40, (n,))]
    elif case == "large_norms":
        x = x * 1e4 + 3e4
    elif case == "unnormalised":
        x = x * torch.rand(n, 1) * 50
    ids = torch.arange(n)
    if case == "sequences":
        ids = knn_module.exclusion_keys(ids, (ids // 7).tolist())
    queries, q_ids = (x[:150], ids[:150]) if case == "separate_sets" else (x, ids)
    on = exact_knn(queries, x, 9, q_ids, ids, tile_size=64, screening="on")
    off = exact_knn(queries, x, 9, q_ids, ids, tile_size=64, screening="off")
    expected_d, expected_i = dense_oracle(queries, x, 9, q_ids, ids)
    assert torch.equal(on.indices, expected_i) and torch.equal(on.distances, expected_d)
    assert torch.equal(off.indices, on.indices) and torch.equal(off.distances, on.distances)


def test_auto_screening_falls_back_when_the_bound_does_not_certify(monkeypatch):
    # data whose k-th neighbour is not separated by the bfloat16 bound: the probe says no, float32 runs
    monkeypatch.setattr(knn_module, "_bf16_is_fast", lambda device: True)
    monkeypatch.setattr(knn_module, "SCREENING_MIN_WORK", 1)
    chosen = []
    original = knn_module.QueryGalleryDistances.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        chosen.append(self.tile_dtype)

    monkeypatch.setattr(knn_module.QueryGalleryDistances, "__init__", spy)
    torch.manual_seed(18)
    x = torch.nn.functional.normalize(torch.randn(300, 32), dim=1)  # random directions: distances all close
    result = exact_knn(x, x, 5, torch.arange(300), torch.arange(300), screening="auto")
    assert chosen == [torch.bfloat16, torch.float32]  # probed in bfloat16, then searched in float32
    expected_d, expected_i = dense_oracle(x, x, 5, torch.arange(300), torch.arange(300))
    assert torch.equal(result.indices, expected_i) and torch.equal(result.distances, expected_d)


def test_screening_choice_and_errors(monkeypatch):
    x = torch.randn(10, 4)
    assert knn_module.screening_dtype(x, x, "off") is None
    assert knn_module.screening_dtype(x, x, True) == torch.bfloat16
    assert knn_module.screening_dtype(x.double(), x.double(), "on") is None  # float64 stays exact float64
    assert knn_module.screening_dtype(x, x, "auto") is None  # too small to be worth it
    monkeypatch.setenv("OML_KNN_SCREENING", "on")
    assert knn_module.screening_dtype(x, x) == torch.bfloat16
    with pytest.raises(ValueError, match="screening must be"):
        knn_module.screening_dtype(x, x, "sometimes")


def test_prepared_gallery_is_reused_and_refused_when_stale(prepared_gallery_builds):
    torch.manual_seed(19)
    galleries, queries = torch.randn(300, 12), torch.randn(40, 12)
    prepared = knn_module.PreparedGallery(galleries)
    built = prepared_gallery_builds
    built.clear()
    first = exact_knn(queries, galleries, 5, prepared=prepared)
    second = exact_knn(queries * 2, galleries, 5, prepared=prepared)
    assert built == []  # both searches used the prepared operand
    for result, q in ((first, queries), (second, queries * 2)):
        expected_d, expected_i = dense_oracle(q, galleries, 5)
        assert torch.equal(result.indices, expected_i) and torch.equal(result.distances, expected_d)
    galleries[0] = queries[0]  # edited in place: the prepared operand is stale and must not be used
    third = exact_knn(queries, galleries, 5, prepared=prepared)
    assert built == [1] and int(third.indices[0, 0]) == 0
    assert not prepared.fits(galleries, torch.float32, torch.float32)
    assert not prepared.fits(galleries.clone(), torch.float32, torch.float32)  # another tensor


def test_inference_mode_tensors_are_searched_but_never_reused_stale(prepared_gallery_builds):
    # tensors made under torch.inference_mode (Lightning's validation) have no in-place change counter
    torch.manual_seed(22)
    with torch.inference_mode():
        galleries, queries = torch.randn(100, 6), torch.randn(10, 6)
    prepared = knn_module.PreparedGallery(galleries)
    result = exact_knn(queries, galleries, 3, prepared=prepared)
    expected_d, expected_i = dense_oracle(queries, galleries, 3)
    assert torch.equal(result.indices, expected_i) and torch.equal(result.distances, expected_d)
    assert not prepared.fits(galleries, torch.float32, torch.float32)  # cannot tell whether it changed
    assert len(prepared_gallery_builds) == 2  # so the search prepared its own


# ----------------------------------------------------------------------------------------- ranking without distances
def _adversarial(case: str, n: int = 300) -> torch.Tensor:
    torch.manual_seed(23)
    if case == "random":
        return torch.randn(n, 19)  # D not a multiple of 16
    if case == "grid_ties":
        return torch.randint(0, 3, (n, 3)).float()  # 27 distinct points: exact ties everywhere
    if case == "duplicates":
        return torch.cat([torch.zeros(60, 5), torch.randn(n - 60, 5)])
    if case == "near_ties":  # clusters of unit vectors 1e-4 apart: many GEMM values within the slack
        centres = torch.nn.functional.normalize(torch.randn(20, 37), dim=1)
        return centres[torch.arange(n) % 20] + 1e-4 * torch.randn(n, 37)
    if case == "large_norms":
        return 3e4 + 1e4 * torch.randn(n, 21)
    return 1000.0 + 0.01 * torch.randn(n, 16)  # "cancellation": a large common offset


@pytest.mark.parametrize("case", ["random", "grid_ties", "duplicates", "near_ties", "large_norms", "cancellation"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_n_exact_distances_ranks_like_the_oracle(case, symmetric):
    x = _adversarial(case)
    ids = torch.arange(len(x))
    galleries, gallery_ids = (x, ids) if symmetric else (x.clone(), ids.clone())
    for k, n_exact, tile_size in [(49, 5, 128), (40, 0, None), (len(x) - 1, 3, 64), (9, 9, 32)]:
        result = exact_knn(x, galleries, k, ids, gallery_ids, tile_size=tile_size, n_exact_distances=n_exact)
        expected_d, expected_i = dense_oracle(x, galleries, k, ids, gallery_ids)
        assert torch.equal(result.indices, expected_i), (k, n_exact)
        assert torch.equal(result.distances[:, :n_exact], expected_d[:, :n_exact])
        assert result.distances[:, n_exact:].isnan().all()


def test_n_exact_distances_recomputes_fewer_pairs(monkeypatch):
    torch.manual_seed(24)
    centres = torch.nn.functional.normalize(torch.randn(10, 64), dim=1)
    x = torch.nn.functional.normalize(centres[torch.arange(600) % 10] + 0.3 * torch.randn(600, 64), dim=1)
    ids = torch.arange(600)
    pairs = []
    original = QueryGalleryDistances.exact_distances
    monkeypatch.setattr(
        QueryGalleryDistances, "exact_distances", lambda self, r, c: pairs.append(len(r)) or original(self, r, c)
    )
    full = exact_knn(x, x, 59, ids, ids)
    n_full = sum(pairs)
    pairs.clear()
    ranked = exact_knn(x, x, 59, ids, ids, n_exact_distances=5)
    assert torch.equal(ranked.indices, full.indices)
    assert torch.equal(ranked.distances[:, :5], full.distances[:, :5])
    assert n_full >= 59 * 600 and sum(pairs) < n_full / 2  # most of the order came from the GEMM values


@pytest.mark.parametrize("case", ["grid_ties", "duplicates", "near_ties", "random"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_relevance_keeps_the_relevance_of_every_column(case, symmetric):
    x = _adversarial(case)
    ids = torch.arange(len(x))
    labels = torch.arange(len(x)) % 7
    galleries, gallery_ids = (x, ids) if symmetric else (x.clone(), ids.clone())
    for k, n_exact, tile_size in [(49, 5, 128), (40, 0, None), (len(x) - 1, 3, 64)]:
        result = exact_knn(
            x,
            galleries,
            k,
            ids,
            gallery_ids,
            tile_size=tile_size,
            n_exact_distances=n_exact,
            relevance=(labels, labels),
        )
        expected_d, expected_i = dense_oracle(x, galleries, k, ids, gallery_ids)
        assert torch.equal(labels[result.indices] == labels[:, None], labels[expected_i] == labels[:, None])
        assert torch.equal(result.indices[:, :n_exact], expected_i[:, :n_exact])
        assert torch.equal(result.distances[:, :n_exact], expected_d[:, :n_exact])
        assert torch.equal(result.indices.sort(dim=1).values, expected_i.sort(dim=1).values) or k < len(x) - 1


def test_relevance_skips_the_exact_order_of_items_alike(monkeypatch):
    x = _adversarial("near_ties")  # clusters of near-equal points: large groups the GEMM cannot order
    ids = torch.arange(len(x))
    labels = torch.arange(len(x)) % 20  # a cluster is one label: its groups are all relevant
    pairs = []
    original = QueryGalleryDistances.exact_distances
    monkeypatch.setattr(
        QueryGalleryDistances, "exact_distances", lambda self, r, c: pairs.append(len(r)) or original(self, r, c)
    )
    ranked = exact_knn(x, x, 30, ids, ids, n_exact_distances=2)
    n_ranked = sum(pairs)
    pairs.clear()
    by_relevance = exact_knn(x, x, 30, ids, ids, n_exact_distances=2, relevance=(labels, labels))
    assert torch.equal(labels[by_relevance.indices], labels[ranked.indices])
    assert torch.equal(by_relevance.indices[:, :2], ranked.indices[:, :2])
    assert not torch.equal(by_relevance.indices, ranked.indices)  # the order inside a group is not the exact one
    # a query's own cluster starts in the exact columns (ordered exactly); the next cluster's group is skipped
    assert sum(pairs) < 0.7 * n_ranked
    with pytest.raises(ValueError, match="relevance must be"):
        exact_knn(x, x, 3, relevance=(labels[:5], labels))


def test_n_exact_distances_is_checked():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="n_exact_distances"):
        exact_knn(x, x, 3, n_exact_distances=-1)
    assert torch.equal(exact_knn(x, x, 3, n_exact_distances=7).distances, exact_knn(x, x, 3).distances)


@pytest.mark.parametrize("uneven", [False, True])
def test_candidates_keep_the_kk_smallest_values_sorted(uneven):
    # merges by rank (searchsorted) and, for a very uneven spread over the queries, by one sort
    torch.manual_seed(25)
    n, kk, seen = 50, 7, []
    candidates = knn_module._Candidates(n, kk, torch.zeros(1))
    for step in range(6):
        rows = torch.randint(0, n, (3 * n,))
        if uneven and step == 3:  # one query gets most of them
            rows = torch.cat([rows, torch.zeros(40 * n, dtype=torch.long)])
        count = len(rows)
        values = torch.randint(0, 30, (count,)).float()  # many ties
        cols = torch.arange(count) + 1000 * step
        candidates._merge(rows, cols, values)
        seen.append((rows, cols, values))
    rows, cols, values = (torch.cat(parts) for parts in zip(*seen))
    for r in range(n):
        mine = values[rows == r]
        expected = mine.sort().values[:kk]
        assert torch.equal(candidates.values[r, : len(expected)], expected)
        kept = candidates.cols[r, : len(expected)]
        lookup = dict(zip(cols[rows == r].tolist(), mine.tolist()))
        assert [lookup[c] for c in kept.tolist()] == expected.tolist()  # each kept id carries its own value


@pytest.mark.parametrize("symmetric", [True, False])
def test_worker_threads_give_the_oracle_answer(monkeypatch, symmetric):
    # tiles on two worker threads in any order, queries certified in parallel chunks, on massive ties and
    # near-duplicates that fail certification and are searched again (the suite runs on one thread otherwise)
    monkeypatch.setattr(knn_module, "MIN_PARALLEL_PAIRS", 0)
    monkeypatch.setattr(knn_module, "FINALIZE_ROWS", 64)
    workers = []
    run = knn_module.run_in_workers

    def spying_run(items, process, n_workers, *args, **kwargs):
        workers.append(n_workers)
        return run(items, process, n_workers, *args, **kwargs)

    monkeypatch.setattr(knn_module, "run_in_workers", spying_run)
    torch.manual_seed(22)
    x = torch.cat([torch.randint(0, 3, (500, 4)).float(), torch.zeros(40, 4), torch.randn(200, 4)])
    ids = torch.arange(len(x))
    galleries, gallery_ids = (x, ids) if symmetric else (x.clone(), ids.clone())
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_same_as_oracle(x, galleries, 9, ids, gallery_ids, tile_size=96, extra=2)
        assert_same_as_oracle(x, galleries, 30, ids, gallery_ids, tile_size=128, n_exact_distances=30)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert workers and set(workers) == {2}


def test_one_row_block_keeps_the_calling_thread(monkeypatch):
    # a few queries against many galleries: its tiles all update the same queries, so threads could not share
    # them; the scan stays in the calling thread (where the GEMM has every torch thread)
    monkeypatch.setattr(knn_module, "MIN_PARALLEL_PAIRS", 0)
    workers = []
    run = knn_module.run_in_workers
    monkeypatch.setattr(
        knn_module,
        "run_in_workers",
        lambda items, process, n, *a, **kw: workers.append(n) or run(items, process, n, *a, **kw),
    )
    torch.manual_seed(26)
    queries, galleries = torch.randn(3, 8), torch.randn(500, 8)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_same_as_oracle(queries, galleries, 4, tile_size=50)
    finally:
        torch.set_num_threads(before)
    assert workers[0] == 1  # the scan


@pytest.mark.parametrize(
    "kk,width,n",
    [(13, 4096, 50_000), (61, 4096, 50_000), (200, 300, 1000), (9, 50, 60), (5, 1, 9), (1500, 300, 2000)],
)
def test_first_tile_rank_is_the_smallest_rank_within_the_failure_rate(kk, width, n):
    # a slow, exact reference: the binomial tail P(Binomial(kk - 1, width / n) >= r) as a fraction of integers
    # (also for kk in the thousands, where comb(m, i) * f**i overflows a float)
    import math
    from fractions import Fraction

    m, failures = kk - 1, Fraction(knn_module.GUESS_FAILURES)

    def tail(r):
        terms = sum(math.comb(m, i) * width**i * (n - width) ** (m - i) for i in range(r, m + 1))
        return Fraction(terms, n**m)

    r = knn_module.first_tile_rank(kk, width, n)
    assert 1 <= r <= kk
    assert r == kk or tail(r) <= failures
    assert r == 1 or tail(r - 1) > failures
    # the hypergeometric tail (the tile is a random subset of the galleries) is below the binomial one
    if r < kk:
        hyper = sum(math.comb(m, i) * math.comb(n - m, width - i) for i in range(r, min(m, width) + 1))
        assert Fraction(hyper, math.comb(n, width)) <= tail(r)
    assert knn_module.first_tile_rank(kk, n, n) == kk  # one tile holds every gallery: the proven bound


def _count_guesses(monkeypatch):
    """Spy: the number of queries that got a guess in each symmetric scan, and the rows of every later scan."""
    found = {"guessed": [], "rescanned": []}
    symmetric_scan, scan = knn_module._scan_symmetric, knn_module._scan

    def spying_symmetric_scan(*args, **kwargs):
        values, cols, guess = symmetric_scan(*args, **kwargs)
        found["guessed"].append(int(torch.isfinite(guess).sum()))
        return values, cols, guess

    def spying_scan(dists, rows, *args, **kwargs):
        found["rescanned"].append(len(rows))
        return scan(dists, rows, *args, **kwargs)

    monkeypatch.setattr(knn_module, "_scan_symmetric", spying_symmetric_scan)
    monkeypatch.setattr(knn_module, "_scan", spying_scan)
    return found


def test_guessed_bounds_give_the_oracle_answer(monkeypatch):
    # tiles much narrower than the gallery: the first tile of every query guesses its bound
    found = _count_guesses(monkeypatch)
    torch.manual_seed(27)
    x = torch.cat([torch.randn(900, 5), torch.zeros(30, 5), torch.randint(0, 3, (300, 5)).float()])  # + ties
    ids = torch.arange(len(x))
    assert_same_as_oracle(x, x, 20, ids, ids, tile_size=128)
    assert found["guessed"][0] > 0.9 * len(x)


def test_guesses_for_a_thousand_neighbours():
    # kk in the thousands (MAP@R with large classes): the guess's rank is computed without overflowing a float
    torch.manual_seed(31)
    x = torch.randn(1600, 5)
    ids = torch.arange(len(x))
    assert_same_as_oracle(x, x, 1000, ids, ids, tile_size=256)


def test_failed_guesses_are_searched_again(monkeypatch):
    # a failure rate of 90% makes most guesses too tight: those queries are found and searched again
    monkeypatch.setattr(knn_module, "GUESS_FAILURES", 0.9)
    found = _count_guesses(monkeypatch)
    torch.manual_seed(28)
    x = torch.randn(1500, 6)
    ids = torch.arange(len(x))
    assert_same_as_oracle(x, x, 25, ids, ids, tile_size=100)
    assert found["guessed"][0] > 0 and found["rescanned"] and found["rescanned"][0] > 0.1 * len(x)


def test_guesses_hold_on_data_sorted_by_cluster(monkeypatch):
    # contiguous clusters larger than a tile: in index order a query's first tile would hold its whole cluster
    # and guess far too tight a bound; the random scan order keeps failures rare
    found = _count_guesses(monkeypatch)
    torch.manual_seed(29)
    centres = 10 * torch.randn(8, 6)
    x = centres.repeat_interleave(400, dim=0) + torch.randn(3200, 6)
    ids = torch.arange(len(x))
    assert_same_as_oracle(x, x, 30, ids, ids, tile_size=256)
    assert found["guessed"][0] > 0.9 * len(x)
    assert sum(found["rescanned"]) <= 0.01 * len(x)

    # the same scan in index order: most guesses fail (why the scan order is random)
    identity = torch.arange(len(x))
    monkeypatch.setattr(knn_module, "random_scan_order", lambda n: identity[:n])
    found["rescanned"].clear()
    assert_same_as_oracle(x, x, 30, ids, ids, tile_size=256)
    assert sum(found["rescanned"]) > 0.5 * len(x)


def test_random_scan_order_keeps_tiles_and_masks_consistent():
    # sequences exclude many galleries per query: the masks must follow the samples into scan order
    torch.manual_seed(30)
    x = torch.randn(700, 4)
    keys = knn_module.exclusion_keys(torch.arange(700), [i % 50 for i in range(700)])
    assert_same_as_oracle(x, x, 12, keys, keys, tile_size=64)
    dists = QueryGalleryDistances(x, x, keys, keys, random_order=True)
    assert dists.scan_order is not None and not torch.equal(dists.scan_order, torch.arange(700))
    assert torch.equal(dists.samples_at(dists.scan_positions(torch.arange(700))), torch.arange(700))
    assert QueryGalleryDistances(x, x.clone(), random_order=True).scan_order is None  # not the symmetric mode
