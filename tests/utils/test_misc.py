from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from oml.utils.misc import (
    check_if_nonempty_positive_integers,
    compare_dicts_recursively,
    dictconfig_to_dict,
    exact_mean,
    flatten_dict,
    reduce_metrics,
    remove_unused_kwargs,
    set_global_seed,
    smart_sample,
)
from oml.utils.misc_torch import (
    PCA,
    AvgOnline,
    OnlineAvgDict,
    assign_2d,
    drop_duplicates_by_ids,
    elementwise_dist,
    first_occurrences,
    normalise,
    pairwise_dist,
    sparse_nonzero,
    take_2d,
    temporary_setting_model_mode,
)


def test_set_global_seed_makes_runs_repeatable() -> None:
    set_global_seed(3)
    first = (torch.rand(3), np.random.rand(3))
    set_global_seed(3)
    assert torch.equal(first[0], torch.rand(3)) and np.array_equal(first[1], np.random.rand(3))


def test_flatten_and_convert_configs() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": {"b": [1, {"c": 2}]}, "d": None})
    plain = dictconfig_to_dict(cfg)
    assert plain == {"a": {"b": [1, {"c": 2}]}, "d": None} and type(plain["a"]["b"]) is list
    assert flatten_dict({"a": {"b": 1, "c": {"d": 2}}, "e": 3}, sep="|", ignored_keys=("e",)) == {"a|b": 1, "a|c|d": 2}


def test_smart_sample_and_kwargs() -> None:
    assert sorted(smart_sample([1, 2, 3], 3)) == [1, 2, 3]
    many = smart_sample([1, 2], 5)
    assert len(many) == 5 and set(many) == {1, 2}
    with pytest.raises(ValueError):
        smart_sample([], 2)

    def f(a: int, b: int = 0) -> None: ...

    assert remove_unused_kwargs({"a": 1, "labels": [1], "b": 2}, f) == {"a": 1, "b": 2}
    check_if_nonempty_positive_integers([1, 5], "top_k")
    for bad in ([], [0], [1.5], True):
        with pytest.raises(ValueError, match="top_k"):
            check_if_nonempty_positive_integers(bad, "top_k")
    assert compare_dicts_recursively({"a": torch.ones(2), "b": {"c": 1}}, {"a": torch.ones(2), "b": {"c": 1}})
    assert not compare_dicts_recursively({"a": torch.ones(2)}, {"a": torch.zeros(2)})


def test_distances_and_2d_indexing_against_loops() -> None:
    torch.manual_seed(0)
    x1, x2 = torch.randn(7, 5), torch.randn(4, 5)
    dense = pairwise_dist(x1, x2)
    for i in range(7):
        for j in range(4):
            assert dense[i, j] == pytest.approx(float(((x1[i] - x2[j]) ** 2).sum().sqrt()), abs=1e-5)
    assert torch.allclose(elementwise_dist(x1[:4], x2), torch.stack([(a - b).norm() for a, b in zip(x1[:4], x2)]))
    with pytest.raises(ValueError, match="same shape"):
        elementwise_dist(x1, x2)

    indices = torch.randint(0, 4, (7, 3))
    taken = take_2d(dense, indices)
    assert all(taken[i, j] == dense[i, indices[i, j]] for i in range(7) for j in range(3))
    target = torch.zeros(2, 4)
    assign_2d(target, torch.tensor([[0, 3], [2, 1]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert target.tolist() == [[1, 0, 0, 2], [0, 4, 3, 0]]

    x = torch.randn(3, 4, requires_grad=True)
    assert torch.allclose(normalise(x).norm(dim=1), torch.ones(3))
    zero_row = torch.cat([torch.zeros(1, 4), torch.randn(2, 4)]).requires_grad_()
    normalise(zero_row).sum().backward()
    assert torch.isfinite(zero_row.grad).all() and normalise(zero_row)[0].abs().sum() == 0


def test_drop_duplicates_and_online_average() -> None:
    ids, data = drop_duplicates_by_ids([2, 0, 2, 1, 0], torch.tensor([20, 0, 21, 10, 1]))
    assert ids == [0, 1, 2] and data.tolist() == [0, 10, 20]
    ids, data = drop_duplicates_by_ids([1, 1, 0], ["a", "b", "c"], sort=False)
    assert ids == [1, 0] and data == ["a", "c"]
    ids, data = drop_duplicates_by_ids(np.array([3, 3, 1]), np.array([[30], [31], [10]]))
    assert ids == [1, 3] and data.tolist() == [[10], [30]]
    assert drop_duplicates_by_ids([], []) == ([], [])


@pytest.mark.parametrize("seed", range(5))
def test_first_occurrences_equal_a_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(-3, 6, (40,), generator=g)  # many duplicates, negative ids too
    first = {}
    for position, value in enumerate(ids.tolist()):
        first.setdefault(value, position)
    unique, positions = first_occurrences(ids)
    assert unique.tolist() == sorted(first) and positions.tolist() == [first[v] for v in sorted(first)]
    with pytest.raises(ValueError, match="ids must be a 1d tensor"):
        first_occurrences(ids.reshape(4, 10))


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (8,), (13, 37), (64, 32), (3, 5, 9)])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 1.0])
def test_sparse_nonzero_equals_a_loop(shape: tuple, density: float) -> None:
    g = torch.Generator().manual_seed(len(shape) * 100 + int(density * 10))
    mask = torch.rand(shape, generator=g) < density
    expected = [position for position, flag in enumerate(mask.flatten().tolist()) if flag]
    assert sparse_nonzero(mask).tolist() == expected
    assert sparse_nonzero(mask[..., ::2]).tolist() == mask[..., ::2].flatten().nonzero().flatten().tolist()
    with pytest.raises(ValueError, match="bool tensor"):
        sparse_nonzero(mask.int())


def test_reduce_metrics_reduces_tensors_and_numpy_arrays_as_oml() -> None:
    metrics = {
        "OVERALL": {"cmc": {1: torch.tensor([0.0, 1.0]), 5: np.array([1.0, 1.0, 0.0, 0.0])}, "pcf": {0.5: 0.25}},
        "cat": {"map": {5: np.array([0.5, 0.25], dtype=np.float32)}, "empty": np.array([])},
    }
    reduced = reduce_metrics(metrics)
    assert reduced["OVERALL"]["cmc"][1] == pytest.approx(0.5) and reduced["OVERALL"]["cmc"][5] == pytest.approx(0.5)
    assert isinstance(reduced["OVERALL"]["cmc"][5], torch.Tensor) and reduced["OVERALL"]["cmc"][5].ndim == 0
    assert reduced["cat"]["map"][5] == pytest.approx(0.375) and reduced["OVERALL"]["pcf"] == {0.5: 0.25}
    assert reduced["cat"]["empty"].size == 0
    assert metrics["OVERALL"]["cmc"][1].shape == (2,)  # the input is not modified

    avg = AvgOnline()
    for chunk in (torch.tensor([1.0, 2.0]), 6.0):
        avg.update(chunk)
    assert avg.result == pytest.approx(3.0)
    online = OnlineAvgDict()
    online.update({"a": 1.0})
    online.update({"a": 3.0, "b": 2.0})
    assert online.get_dict_with_results() == {"a": 2.0, "b": 2.0}


def test_model_mode_is_restored() -> None:
    model = nn.Linear(2, 2).eval()
    with temporary_setting_model_mode(model, set_train=True):
        assert model.training
    assert not model.training


def test_pca_matches_numpy_svd() -> None:
    torch.manual_seed(0)
    data = torch.randn(50, 6) @ torch.randn(6, 6)
    pca = PCA(data)
    centred = (data.double() - data.double().mean(0)).numpy()
    singular = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(pca.explained_variance.numpy(), singular**2 / 49, rtol=1e-8)
    projected = pca.transform(data)
    assert torch.allclose(pca.inverse_transform(projected), data, atol=1e-4)
    assert pca.calc_principal_axes_number([0.0, 0.9999999]).tolist()[0] == 1
    assert PCA(torch.eye(4, 10)).calc_principal_axes_number((0.5, 1)).tolist() == [2, 5]


def test_exact_mean_ignores_order_and_threads() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.rand(40_000, generator=g), torch.rand(40_000, generator=g) * 1e-6, torch.ones(5)])
    exact = float(sum(Fraction(v) for v in values.double().tolist()) / len(values))
    threads = torch.get_num_threads()
    try:
        means = []
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            means += [exact_mean(values), exact_mean(values.flip(0)), exact_mean(values[torch.randperm(len(values))])]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(m, means[0]) for m in means)
    assert means[0].dtype == torch.float32 and float(means[0]) == float(torch.tensor(exact, dtype=torch.float32))
    assert torch.equal(exact_mean(np.array([1, 2])), torch.tensor(1.5))
