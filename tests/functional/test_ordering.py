"""``oml.functional.ordering`` against plain Python sorts of (group, value, index) tuples."""

import math

import pytest
import torch

from oml.functional.ordering import sort_by_value_then_index


def reference(values, indices, k=None, groups=None):
    """Each row sorted by (group, value, index) with Python's sort; index -1 after every real one, NaN last."""
    out_values, out_indices = [], []
    for r in range(values.shape[0]):
        items = []
        for c in range(values.shape[1]):
            value, index = float(values[r, c]), int(indices[r, c])
            group = 0 if groups is None else int(groups[r, c])
            items.append(((group, math.isnan(value), 0.0 if math.isnan(value) else value, index < 0, index), c))
        order = [c for _, c in sorted(items)][:k]
        out_values.append([float(values[r, c]) for c in order])
        out_indices.append([int(indices[r, c]) for c in order])
    return out_values, out_indices


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("with_groups", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_sort_by_value_then_index_equals_python_sorted(dtype, with_groups, seed):
    g = torch.Generator().manual_seed(seed)
    n_rows, n_cols = 40, 23
    values = torch.randint(0, 6, (n_rows, n_cols), generator=g).to(dtype) / 4  # many ties
    values[torch.rand(n_rows, n_cols, generator=g) < 0.2] = float("inf")
    values[0, :5] = torch.tensor([-0.0, 0.0, -1.5, 0.0, -0.0], dtype=dtype)  # signed zeros are equal
    indices = torch.randperm(1000, generator=g)[: n_rows * n_cols].view(n_rows, n_cols)
    indices[torch.rand(n_rows, n_cols, generator=g) < 0.1] = -1  # no item
    groups = torch.randint(0, 4, (n_rows, n_cols), generator=g).sort(dim=1).values if with_groups else None
    for k in (None, 7):
        found_values, found_indices = sort_by_value_then_index(values, indices, k, groups)
        expected_values, expected_indices = reference(values, indices, k, groups)
        assert found_indices.tolist() == expected_indices
        assert found_values.tolist() == expected_values
        assert found_values.dtype == dtype


def test_nan_goes_last_whatever_its_sign():
    values = torch.tensor([[1.0, float("nan"), -float("nan"), 0.5, 1.0]])
    indices = torch.tensor([[4, 3, 2, 1, 0]])
    found_values, found_indices = sort_by_value_then_index(values, indices)
    assert found_indices[0, :3].tolist() == [1, 0, 4]
    assert torch.isnan(found_values[0, 3:]).all() and sorted(found_indices[0, 3:].tolist()) == [2, 3]
