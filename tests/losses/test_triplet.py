import math

import pytest
import torch

from oml.interfaces.miners import ITripletsMinerInBatch
from oml.losses.triplet import TripletLoss, TripletLossPlain, TripletLossWithMiner, get_tri_ids_in_plain
from oml.miners.cross_batch import TripletMinerWithMemory
from oml.miners.inbatch_all_tri import AllTripletsMiner, get_available_triplets
from oml.miners.inbatch_hard_cluster import HardClusterMiner
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.miners.miner_with_bank import MinerWithBank
from tests.utils.miners import pk_batch


def loops_reference(anchor, positive, negative, margin, reduction):
    losses = []
    for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist()):
        d_ap = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, p)))
        d_an = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, n)))
        losses.append(math.log1p(math.exp(d_ap - d_an)) if margin is None else max(0.0, margin + d_ap - d_an))
    if reduction == "mean":
        return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)
    if reduction == "sum":
        return torch.tensor(sum(losses), dtype=torch.float64)
    return torch.tensor(losses, dtype=torch.float64)


def triplets(n=10, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("margin", [None, 0.0, 0.3, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_triplet_loss_equals_the_loops(margin, reduction) -> None:
    anchor, positive, negative = triplets()
    loss = TripletLoss(margin=margin, reduction=reduction)(anchor, positive, negative)
    assert torch.allclose(loss, loops_reference(anchor, positive, negative, margin, reduction))
    loss.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (anchor, positive, negative))


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0])
def test_triplet_loss_equals_torch_triplet_margin_loss(margin: float) -> None:
    anchor, positive, negative = triplets(seed=1)
    ours = TripletLoss(margin=margin)(anchor, positive, negative)
    theirs = torch.nn.TripletMarginLoss(margin=margin, p=2, eps=0.0)(anchor, positive, negative)
    assert torch.allclose(ours, theirs)


def test_logs_and_zero_distances_have_finite_gradients() -> None:
    anchor = torch.zeros(3, 4, requires_grad=True)
    positive = torch.zeros(3, 4)  # the same sample twice (an upsampled label): distance 0
    negative = torch.tensor([[1.0, 0, 0, 0], [0.1, 0, 0, 0], [3.0, 0, 0, 0]])
    criterion = TripletLoss(margin=0.5, need_logs=True)
    criterion(anchor, positive, negative).backward()
    assert torch.isfinite(anchor.grad).all()
    assert criterion.last_logs == pytest.approx({"active_tri": 1 / 3, "pos_dist": 0.0, "neg_dist": 4.1 / 3})


def test_no_triplets_give_zero_not_nan() -> None:
    features = torch.randn(3, 4, requires_grad=True)
    for reduction in ("mean", "sum"):
        loss = TripletLossWithMiner(margin=0.1, reduction=reduction)(features, [0, 1, 2])
        assert loss == 0
        loss.backward()
        assert torch.isfinite(features.grad).all()
    assert TripletLossWithMiner(margin=0.1, reduction="none")(features, [0, 1, 2]).shape == (0,)


def test_plain_layout() -> None:
    assert get_tri_ids_in_plain(9) == ([0, 3, 6], [1, 4, 7], [2, 5, 8])
    with pytest.raises(ValueError, match="divisible by 3"):
        get_tri_ids_in_plain(7)
    anchor, positive, negative = triplets(n=4)
    flat = torch.stack([anchor, positive, negative], dim=1).reshape(12, -1)
    assert torch.allclose(TripletLossPlain(margin=0.2)(flat), TripletLoss(margin=0.2)(anchor, positive, negative))


def batch(p=4, k=3, dim=6, seed=0):
    features, labels = pk_batch(p, k, seed, dim=dim, shuffle=False)
    return features.requires_grad_(True), labels


@pytest.mark.parametrize(
    "miner",
    [AllTripletsMiner(), HardTripletsMiner(), NHardTripletsMiner(2, (1, 3)), HardClusterMiner()],
    ids=lambda m: type(m).__name__,
)
@pytest.mark.parametrize("margin", [None, 0.2])
def test_with_miner_equals_loss_on_mined_triplets(miner, margin) -> None:
    features, labels = batch()
    criterion = TripletLossWithMiner(margin=margin, miner=miner, need_logs=True)
    loss = criterion(features, labels)
    anchor, positive, negative = miner.sample(features, labels)
    assert torch.allclose(loss, loops_reference(anchor, positive, negative, margin, "mean"))
    assert {"active_tri", "pos_dist", "neg_dist"} <= set(criterion.last_logs)
    loss.backward()
    assert torch.isfinite(features.grad).all()


# the keys OML 0.4.4 logs for TripletLossWithMiner with TripletMinerWithMemory
OML_MEMORY_LOG_KEYS = {
    "active_tri",
    "pos_dist",
    "neg_dist",
    "bank_active_tri",
    "orig_active_tri",
    "pos_dist_bank",
    "pos_dist_orig",
    "neg_dist_bank",
    "neg_dist_orig",
}


@pytest.mark.parametrize("margin", [0.1, 1.5])
def test_with_memory_miner_logs_original_and_bank_triplets_under_oml_names(margin: float) -> None:
    torch.manual_seed(0)
    miner = TripletMinerWithMemory(2, 3)
    criterion = TripletLossWithMiner(margin=margin, miner=miner, need_logs=True)
    for step in range(3):
        features, labels = batch(seed=step)
        criterion(features, labels).backward()
        logs = criterion.last_logs
        assert set(logs) == OML_MEMORY_LOG_KEYS
        # as OML checks: the parts, weighted by their sizes, average to the overall figures
        n_orig = len(get_available_triplets(labels))
        n_bank = 2 * n_orig  # tri_expand_k = 3
        for overall, orig, bank in (
            ("active_tri", "orig_active_tri", "bank_active_tri"),
            ("pos_dist", "pos_dist_orig", "pos_dist_bank"),
            ("neg_dist", "neg_dist_orig", "neg_dist_bank"),
        ):
            weighted = (n_orig * logs[orig] + n_bank * logs[bank]) / (n_orig + n_bank)
            assert weighted == pytest.approx(logs[overall], rel=1e-6)  # active_tri is a float32 mean
        assert 0 < logs["orig_active_tri"] <= 1 and logs["pos_dist_bank"] > 0


def test_with_miner_merges_miner_logs() -> None:
    features, labels = batch()
    criterion = TripletLossWithMiner(margin=0.1, miner=MinerWithBank(2, NHardTripletsMiner()), need_logs=True)
    criterion(features, labels)
    assert set(criterion.last_logs) == {
        "active_tri",
        "pos_dist",
        "neg_dist",
        "positives_from_bank",
        "positives_from_batch",
        "negatives_from_bank",
        "negatives_from_batch",
    }


def test_errors() -> None:
    with pytest.raises(ValueError, match="margin must be a non-negative number or None"):
        TripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        TripletLossWithMiner(margin=0.1, reduction="mean_")
    with pytest.raises(TypeError, match="miner must be an ITripletsMiner"):
        TripletLossWithMiner(margin=0.1, miner="hard")
    with pytest.raises(ValueError, match="of the same shape"):
        TripletLoss(margin=0.1)(torch.randn(3, 2), torch.randn(3, 2), torch.randn(2, 2))


def test_distance_matrix_path_equals_gathered_triplets_with_duplicates() -> None:
    # many triplets per sample: distances are read from one distance matrix; check values and gradients
    features, labels = batch(p=5, k=4, seed=3)
    with torch.no_grad():
        features[1] = features[0]  # an upsampled duplicate: distance 0
    miner = AllTripletsMiner()
    ids_a, ids_p, ids_n = miner.sample_ids(features, labels)
    assert len(ids_a) > 8 * len(features)
    fast = TripletLossWithMiner(margin=0.3, miner=miner)(features, labels)
    (grad_fast,) = torch.autograd.grad(fast, features)
    slow = TripletLoss(margin=0.3)(features[ids_a], features[ids_p], features[ids_n])
    (grad_slow,) = torch.autograd.grad(slow, features)
    assert torch.allclose(fast, slow)
    assert torch.isfinite(grad_fast).all()
    assert torch.allclose(grad_fast, grad_slow, atol=1e-6)


class OMLStyleMiner(ITripletsMinerInBatch):
    """A user miner written for OML 0.4.4: ``_sample`` indexes the labels and returns lists of ids."""

    def __init__(self):
        self.received = []

    def _sample(self, features, labels):
        self.received.append(labels)
        assert labels[0] == labels[1] and labels[2] != labels[0]
        return [0, 1], [1, 0], [2, 3]


def test_user_in_batch_miner_gets_labels_as_a_tensor_and_may_return_lists() -> None:
    features, labels = batch(p=2, k=2)
    miner = OMLStyleMiner()
    loss = TripletLossWithMiner(margin=0.5, miner=miner)(features, labels.tolist())
    anchor, positive, negative = features[[0, 1]], features[[1, 0]], features[[2, 3]]
    assert torch.allclose(loss, loops_reference(anchor, positive, negative, 0.5, "mean"))
    assert isinstance(miner.received[0], torch.Tensor) and miner.received[0].dtype == torch.long


class CountingNHard(NHardTripletsMiner):
    """A subclass of a built-in miner: the loss must treat it like the built-in one."""

    calls = 0

    def sample_ids(self, features, labels):
        CountingNHard.calls += 1
        return super().sample_ids(features, labels)


@pytest.mark.parametrize("labels_as", [list, torch.tensor])
def test_subclass_of_a_built_in_miner_behaves_like_it(labels_as) -> None:
    features, labels = batch(p=5, k=4, seed=4)
    CountingNHard.calls = 0
    builtin = TripletLossWithMiner(margin=0.3, miner=NHardTripletsMiner(2, (2, 4)))(features, labels)
    subclass = TripletLossWithMiner(margin=0.3, miner=CountingNHard(2, (2, 4)))(features, labels_as(labels.tolist()))
    assert torch.equal(builtin, subclass)
    assert CountingNHard.calls == 1  # the loss goes through the public method
