import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BatchHardMiner, MultiSimilarityMiner

from oml.losses.triplet import TripletLossWithMiner
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.pml import PMLMiner, pml_indices_to_triplets


def test_pml_triplet_miner_is_a_triplet_miner() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(12, 4, generator=g, dtype=torch.float64)
    labels = torch.arange(4).repeat_interleave(3)
    ours = set(zip(*(t.tolist() for t in HardTripletsMiner().sample_ids(features, labels))))
    pml_miner = PMLMiner(BatchHardMiner(distance=LpDistance(normalize_embeddings=False)))
    theirs = set(zip(*(t.tolist() for t in pml_miner.sample_ids(features, labels))))
    assert ours == theirs  # PML's batch-hard mining (on raw Euclidean distances) selects the same triplets
    assert PMLMiner(BatchHardMiner()).sample(features, labels)[0].shape == (12, 4)


def test_pair_miner_output_becomes_triplets_and_logs() -> None:
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4).repeat_interleave(3)
    miner = PMLMiner(MultiSimilarityMiner(epsilon=1.0))
    raw = miner.mine(features, labels)
    assert len(raw) == 4 and set(miner.last_logs) == {"n_pos_pairs", "n_neg_pairs"}
    ids_a, ids_p, ids_n = pml_indices_to_triplets(raw)
    assert len(ids_a) > 0
    assert (labels[ids_a] == labels[ids_p]).all() and (labels[ids_a] != labels[ids_n]).all()
    loss = TripletLossWithMiner(margin=0.1, miner=miner)(features.requires_grad_(True), labels)
    loss.backward()
    assert torch.isfinite(features.grad).all()
