import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import MultiSimilarityLoss, TripletMarginLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner

from oml.losses.pml import PMLCriterion
from oml.losses.triplet import TripletLossWithMiner
from oml.miners.inbatch_hard_tri import HardTripletsMiner


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True), torch.arange(4).repeat_interleave(
        3
    )


def test_pml_loss_with_pml_miner() -> None:
    features, labels = batch()
    criterion = PMLCriterion(MultiSimilarityLoss(), miner=MultiSimilarityMiner(epsilon=0.5))
    loss = criterion(features, labels.tolist())
    indices = MultiSimilarityMiner(epsilon=0.5)(features, labels)
    assert torch.isclose(loss, MultiSimilarityLoss()(features, labels, indices))
    assert set(criterion.last_logs) == {"n_pos_pairs", "n_neg_pairs"}
    loss.backward()
    assert torch.isfinite(features.grad).all()
    assert criterion.criterion_name == "multi_similarity"


def test_pml_triplet_loss_with_our_miner_equals_our_loss() -> None:
    features, labels = batch(1)
    pml_loss = TripletMarginLoss(margin=0.3, distance=LpDistance(normalize_embeddings=False))
    criterion = PMLCriterion(pml_loss, miner=HardTripletsMiner())
    ours = TripletLossWithMiner(margin=0.3, miner=HardTripletsMiner())(features, labels)
    # PML averages over the triplets with a non-zero loss only ("AvgNonZeroReducer")
    ours_nonzero = TripletLossWithMiner(margin=0.3, miner=HardTripletsMiner(), reduction="none")(features, labels)
    assert torch.isclose(criterion(features, labels), ours_nonzero[ours_nonzero > 0].mean())
    assert ours > 0
    assert criterion.last_logs == {"n_triplets": 12.0}
