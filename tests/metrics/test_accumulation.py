import warnings

import numpy as np
import pytest
import torch

from oml.ddp.utils import WarningDDP
from oml.metrics.accumulation import Accumulator


def test_accumulates_tensors_arrays_and_lists():
    acc = Accumulator(["emb", "arr", "paths"])
    acc.refresh(num_samples=5)
    for start, stop in ((0, 2), (2, 3), (3, 5)):
        acc.update_data(
            {
                "emb": torch.arange(start, stop).float()[:, None].repeat(1, 3),
                "arr": np.arange(start, stop),
                "paths": tuple(f"p{i}" for i in range(start, stop)),
                "ignored": "anything",
            }
        )
    assert acc.is_storage_full() and acc.collected_samples == 5
    assert torch.equal(acc.storage["emb"][:, 0], torch.arange(5).float()) and acc.storage["emb"].shape == (5, 3)
    assert np.array_equal(acc.storage["arr"], np.arange(5))
    assert acc.storage["paths"] == [f"p{i}" for i in range(5)]
    acc.refresh(num_samples=1)  # a new epoch forgets everything
    assert acc.collected_samples == 0 and acc.storage == {} and not acc.is_storage_full()


def test_bad_updates():
    with pytest.raises(ValueError, match="unique"):
        Accumulator(["a", "a"])
    acc = Accumulator(["a", "b"])
    with pytest.raises(RuntimeError, match="refresh"):
        acc.update_data({"a": torch.zeros(1), "b": [1]})
    with pytest.raises(ValueError, match="positive integer"):
        acc.refresh(0)
    acc.refresh(4)
    with pytest.raises(KeyError, match=r"no keys \['b'\]"):
        acc.update_data({"a": torch.zeros(2)})
    with pytest.raises(ValueError, match="same length"):
        acc.update_data({"a": torch.zeros(2), "b": [1]})
    with pytest.raises(ValueError, match="scalar"):
        acc.update_data({"a": torch.tensor(1.0), "b": [1]})
    with pytest.raises(TypeError, match="must be a tensor"):
        acc.update_data({"a": torch.zeros(1), "b": 5})
    acc.update_data({"a": torch.zeros(2, 3), "b": [1, 2]})
    with pytest.raises(ValueError, match=r"per-sample shape \(3,\).*\(4,\)"):
        acc.update_data({"a": torch.zeros(1, 4), "b": [3]})
    with pytest.raises(TypeError, match="were a tensor"):
        acc.update_data({"a": np.zeros((1, 3)), "b": [3]})
    with pytest.raises(ValueError, match="batch of 3 samples, but only 2 of the expected 4 remain"):
        acc.update_data({"a": torch.zeros(3, 3), "b": [3, 4, 5]})
    assert acc.collected_samples == 2  # failed updates change nothing


def test_sync_outside_ddp_returns_a_copy_with_a_warning():
    acc = Accumulator(["a", "b"])
    acc.refresh(2)
    acc.update_data({"a": torch.tensor([1, 2]), "b": ["x", "y"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synced = acc.sync()
    assert any(issubclass(w.category, WarningDDP) for w in caught)
    assert synced.is_storage_full() and torch.equal(synced.storage["a"], acc.storage["a"])
    synced.storage["a"][0] = 100
    assert acc.storage["a"][0] == 1
    acc.refresh(3)
    with pytest.raises(ValueError, match="Only full storages"):
        acc.sync()


def test_take_reorders_every_kind_of_storage() -> None:
    acc = Accumulator(["t", "a", "l"])
    acc.refresh(3)
    acc.update_data({"t": torch.tensor([10, 11, 12]), "a": np.array([0.0, 1.0, 2.0]), "l": ["x", "y", "z"]})
    taken = acc.take([2, 0])
    assert taken.storage["t"].tolist() == [12, 10] and taken.storage["a"].tolist() == [2.0, 0.0]
    assert taken.storage["l"] == ["z", "x"] and taken.is_storage_full() and taken.collected_samples == 2
