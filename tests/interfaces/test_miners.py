import numpy as np
import pytest
import torch

from oml.interfaces.miners import ITripletsMinerInBatch, check_triplets_ids
from oml.miners.inbatch_hard_tri import HardTripletsMiner


class FixedMiner(ITripletsMinerInBatch):
    """Returns whatever it is given, and records the labels it receives."""

    def __init__(self, output):
        self.output = output
        self.received = None

    def _sample(self, features, labels):
        self.received = labels
        return self.output


@pytest.mark.parametrize(
    "labels", [[0, 0, 1, 1], np.array([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]), ["a", "a", "b", "b"], (5, 5, 7, 7)]
)
def test_labels_reach_the_miner_as_a_long_tensor(labels) -> None:
    miner = FixedMiner(([0, 1], [1, 0], [2, 3]))
    ids_a, ids_p, ids_n = miner.sample_ids(torch.randn(4, 3), labels)
    assert miner.received.dtype == torch.long and miner.received.shape == (4,)
    assert miner.received[0] == miner.received[1] != miner.received[2]
    assert [t.dtype for t in (ids_a, ids_p, ids_n)] == [torch.long] * 3
    assert ids_a.tolist() == [0, 1] and ids_p.tolist() == [1, 0] and ids_n.tolist() == [2, 3]


def test_sample_indexes_the_features() -> None:
    features = torch.randn(4, 3)
    anchor, positive, negative = FixedMiner((torch.tensor([3]), torch.tensor([2]), torch.tensor([0]))).sample(
        features, [0, 0, 1, 1]
    )
    assert torch.equal(anchor, features[[3]]) and torch.equal(positive, features[[2]])
    assert torch.equal(negative, features[[0]])


@pytest.mark.parametrize(
    "output,message",
    [
        (([0], [1]), r"must return \(ids_anchor, ids_positive, ids_negative\), got 2 values"),
        (torch.zeros(3, 2), r"must return \(ids_anchor, ids_positive, ids_negative\), got Tensor"),
        (([0, 1], [1], [2, 3]), "returned 2 anchors, 1 positives and 2 negatives"),
        (([0], [1], [4]), r"returned indices in \[0, 4\] for a batch of 4 samples"),
        (([-1], [1], [2]), r"returned indices in \[-1, 2\] for a batch of 4 samples"),
        (([0, 2], [0, 3], [2, 1]), "returned 1 triplet\\(s\\) whose positive is the anchor itself"),
        ((torch.tensor([0.0]), [1], [2]), "returned anchor indices of dtype torch.float32, expected integers"),
        (([[0]], [[1]], [[2]]), r"returned anchor indices of shape \(1, 1\), expected a 1d sequence"),
    ],
)
def test_bad_miner_output_is_refused_naming_the_miner(output, message) -> None:
    with pytest.raises(RuntimeError, match="FixedMiner._sample " + message):
        FixedMiner(output).sample_ids(torch.randn(4, 3), [0, 0, 1, 1])


def test_bad_input_is_refused_before_mining() -> None:
    miner = FixedMiner(([], [], []))
    with pytest.raises(ValueError, match="Got 4 feature vectors but 3 labels"):
        miner.sample_ids(torch.randn(4, 3), [0, 0, 1])
    assert miner.received is None
    with pytest.raises(ValueError, match="features must be a matrix"):
        miner.sample(torch.randn(4), [0, 0, 1, 1])


def test_empty_output_and_subclasses() -> None:
    ids = FixedMiner(([], [], [])).sample_ids(torch.randn(2, 3), [0, 1])
    assert all(len(t) == 0 and t.dtype == torch.long for t in ids)

    class MyHard(HardTripletsMiner):
        pass

    features, labels = torch.randn(8, 3), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    mine, builtin = MyHard().sample_ids(features, labels), HardTripletsMiner().sample_ids(features, labels)
    assert all(torch.equal(a, b) for a, b in zip(mine, builtin))


def test_check_triplets_ids_moves_to_the_device() -> None:
    ids = check_triplets_ids(([0], [1], [2]), 3, torch.device("cpu"), "M")
    assert all(t.device.type == "cpu" and t.dtype == torch.long for t in ids)
