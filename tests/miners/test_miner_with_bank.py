import pytest
import torch

from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.miners.miner_with_bank import MinerWithBank
from tests.utils.miners import n_hard_reference, row_ids

OML_LOG_KEYS = {"positives_from_bank", "positives_from_batch", "negatives_from_bank", "negatives_from_batch"}


@pytest.mark.parametrize(
    "miner,n_pos,n_neg",
    [
        (NHardTripletsMiner(2, (2, 3)), 2, (2, 3)),
        (NHardTripletsMiner((2, 3), 1), (2, 3), 1),
        (HardTripletsMiner(), 1, 1),
    ],
)
def test_equal_to_the_loops_over_batch_and_bank(miner, n_pos, n_neg) -> None:
    bank_size = 2
    miner_with_bank = MinerWithBank(bank_size_in_batches=bank_size, miner=miner)
    history = []
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        labels = torch.randperm(5, generator=g)[:3].repeat_interleave(2)
        features = torch.randn(6, 4, generator=g, dtype=torch.float64)
        anchor, positive, negative = miner_with_bank.sample(features, labels)
        candidates = torch.cat([features] + [f for f, _ in history[-bank_size:]])
        candidate_labels = torch.cat([labels] + [lab for _, lab in history[-bank_size:]]).tolist()
        ids_p, ids_n = row_ids(positive, candidates), row_ids(negative, candidates)
        got = set(zip(row_ids(anchor, candidates), ids_p, ids_n))
        assert got == n_hard_reference(candidates, candidate_labels, n_pos, n_neg, n_anchors=6)
        assert len(anchor) == len(got)

        logs = miner_with_bank.last_logs
        assert set(logs) == OML_LOG_KEYS  # OML 0.4.4's names, no others
        for name, ids in (("positives", ids_p), ("negatives", ids_n)):
            from_bank = sum(i >= 6 for i in ids)
            expected = (from_bank / len(ids), 1 - from_bank / len(ids)) if ids else (0.0, 0.0)  # nothing mined: 0
            assert (logs[f"{name}_from_bank"], logs[f"{name}_from_batch"]) == pytest.approx(expected)
        if step == 0:
            assert logs["positives_from_bank"] == logs["negatives_from_bank"] == 0.0
        history.append((features, labels))


def test_errors() -> None:
    with pytest.raises(TypeError, match="miner must be an NHardTripletsMiner or a HardTripletsMiner"):
        MinerWithBank(bank_size_in_batches=2, miner="hard")
    with pytest.raises(ValueError, match="bank_size_in_batches must be a positive integer, got 0."):
        MinerWithBank(bank_size_in_batches=0)
    miner = MinerWithBank(bank_size_in_batches=2)
    miner.sample(torch.randn(4, 3), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="The bank stores features of dim 3, got a batch of dim 5"):
        miner.sample(torch.randn(4, 5), [0, 0, 1, 1])
