import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from oml.ddp.patching import DDPSamplerWrapper, check_loaders_is_patched, patch_dataloader_to_ddp


class RandomBatches:
    """A batch sampler that uses all three global RNGs, like samplers do."""

    def __init__(self, n: int, n_batches: int):
        self.n, self.n_batches = n, n_batches

    def __iter__(self):
        for _ in range(self.n_batches):
            yield [int(torch.randint(self.n, ()).item()), int(np.random.randint(self.n)), random.randrange(self.n)]

    def __len__(self) -> int:
        return self.n_batches


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n_batches", [6, 7])
@pytest.mark.parametrize("pad", [True, False])
def test_processes_share_one_epoch_disjointly(world_size: int, n_batches: int, pad: bool) -> None:
    sampler = RandomBatches(100, n_batches)
    shares = []
    for rank in range(world_size):
        torch.manual_seed(rank)  # the processes' global RNGs differ; the split must not depend on them
        np.random.seed(rank)
        wrapper = DDPSamplerWrapper(sampler, pad_data_to_num_gpus=pad, seed=5, rank=rank, world_size=world_size)
        wrapper.set_epoch(2)
        shares.append(list(wrapper))
        assert len(shares[-1]) == len(wrapper)

    reference = DDPSamplerWrapper(sampler, seed=5, rank=0, world_size=1)
    reference.set_epoch(2)
    everything = sorted(map(tuple, reference))  # what one process would get
    assert len(everything) == n_batches
    merged = sorted(tuple(batch) for share in shares for batch in share)
    if pad:
        assert {len(share) for share in shares} == {-(-n_batches // world_size)}
        assert sorted(set(merged)) == sorted(set(everything))
        assert len(merged) - n_batches == (-n_batches) % world_size  # only the padding repeats
    else:
        assert merged == everything


def test_epochs_differ_and_repeat() -> None:
    sampler = RandomBatches(1000, 5)
    wrapper = DDPSamplerWrapper(sampler, rank=0, world_size=1)
    first = list(wrapper)
    assert first == list(wrapper)
    wrapper.set_epoch(1)
    assert first != list(wrapper)


def test_patch_dataloader() -> None:
    dataset = TensorDataset(torch.arange(10))
    plain = DataLoader(dataset, batch_size=3)
    assert not check_loaders_is_patched(plain)

    import oml.ddp.patching as patching

    original = patching._world
    patching._world = lambda: (1, 2)
    try:
        patched = patch_dataloader_to_ddp(plain, pad_data_to_num_gpus=False)
        custom = patch_dataloader_to_ddp(DataLoader(dataset, batch_sampler=[[0, 1], [2, 3], [4, 5]]))
    finally:
        patching._world = original
    assert [b[0].tolist() for b in patched] == [[1, 3, 5], [7, 9]]
    assert [b[0].tolist() for b in custom] == [[2, 3], [0, 1]]  # padded with the first batch
    assert check_loaders_is_patched([patched, custom]) and check_loaders_is_patched({"a": patched})
    assert not check_loaders_is_patched([patched, plain])
