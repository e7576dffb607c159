import pytest
import torch

from oml.miners.cross_batch import TripletMinerWithMemory
from tests.utils.miners import all_triplets_reference, row_ids


def make_batch(step, p=3, k=2, dim=4):
    g = torch.Generator().manual_seed(step)
    labels = torch.randperm(6, generator=g)[:p].repeat_interleave(k)
    return torch.randn(p * k, dim, generator=g, dtype=torch.float64), labels


@pytest.mark.parametrize("tri_expand_k", [1, 2, 3])
def test_original_and_bank_triplets(tri_expand_k: int) -> None:
    torch.manual_seed(0)
    miner = TripletMinerWithMemory(bank_size_in_batches=2, tri_expand_k=tri_expand_k)
    history = []
    for step in range(5):
        features, labels = make_batch(step)
        anchor, positive, negative, is_original = miner.sample(features, labels)
        n_orig = int(is_original.sum())
        assert is_original[:n_orig].all() and not is_original[n_orig:].any()
        # original triplets: all triplets of the batch
        orig = set(
            zip(
                row_ids(anchor[:n_orig], features),
                row_ids(positive[:n_orig], features),
                row_ids(negative[:n_orig], features),
            )
        )
        assert orig == all_triplets_reference(labels.tolist())
        assert len(anchor) == tri_expand_k * n_orig
        # extra triplets: a positive pair of the batch and a negative from the bank (previous batches or, at
        # the first step, the batch itself), always of another label
        bank_features = torch.cat([f for f, _ in history[-2:]]) if history else features
        bank_labels = torch.cat([lab for _, lab in history[-2:]]) if history else labels
        ids_a = row_ids(anchor[n_orig:], features)
        ids_p = row_ids(positive[n_orig:], features)
        ids_n = row_ids(negative[n_orig:], bank_features)
        for a, p, n in zip(ids_a, ids_p, ids_n):
            assert a != p and labels[a] == labels[p] and labels[a] != bank_labels[n]
        history.append((features, labels))
        # the bank holds the last two batches
        expected = torch.cat([f for f, _ in history[-2:]])
        assert sorted(map(tuple, miner.bank_features.tolist())) == sorted(map(tuple, expected.tolist()))


def test_bank_is_detached_and_gradient_flows_to_batch() -> None:
    miner = TripletMinerWithMemory(bank_size_in_batches=3, tri_expand_k=2)
    for step in range(3):
        features, labels = make_batch(step)
        features.requires_grad_(True)
        anchor, positive, negative, _ = miner.sample(features, labels)
        (anchor.sum() + positive.sum() + negative.sum()).backward()
        assert torch.isfinite(features.grad).all()
    assert not miner.bank_features.requires_grad


def test_negatives_sampled_uniformly_from_other_labels() -> None:
    torch.manual_seed(0)
    bank_labels = torch.tensor([0, 1, 1, 2, 2, 2, 0])
    ids, found = TripletMinerWithMemory.sample_negatives(torch.zeros(20000, dtype=torch.long), bank_labels)
    assert found.all()
    counts = torch.bincount(ids, minlength=7).float() / 20000
    assert counts[[0, 6]].sum() == 0
    assert torch.allclose(counts[1:6], torch.full((5,), 0.2), atol=0.02)
    _, found = TripletMinerWithMemory.sample_negatives(torch.tensor([3]), torch.tensor([3, 3]))
    assert not found.any()


def test_errors() -> None:
    with pytest.raises(ValueError, match="tri_expand_k must be a positive integer, got 0."):
        TripletMinerWithMemory(bank_size_in_batches=2, tri_expand_k=0)
    with pytest.raises(ValueError, match="bank_size_in_batches must be a positive integer, got 0."):
        TripletMinerWithMemory(bank_size_in_batches=0, tri_expand_k=2)
    with pytest.raises(TypeError, match="labels must be integers"):
        TripletMinerWithMemory(2, 2).sample(torch.randn(4, 2), ["a", "a", "b", "b"])


def test_take_tri_by_mask() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[False, True, True, False], [False, False, False, False], [True, False, False, False]])
    take = TripletMinerWithMemory.take_tri_by_mask
    ids_a, ids_p, ids_n = take(torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7]), mask)
    assert ids_a.tolist() == [0, 2] and ids_p.tolist() == [5, 7] and ids_n[1] == 0 and ids_n[0] in (1, 2)
    many = mask[[0] * 4000]
    _, _, picks = take(torch.zeros(4000).long(), torch.zeros(4000).long(), many)
    assert abs(float((picks == 1).float().mean()) - 0.5) < 0.05


def test_repr() -> None:
    assert repr(TripletMinerWithMemory(2, 3)) == "TripletMinerWithMemory(bank_size_in_batches=2, tri_expand_k=3)"
