"""Make any sampler or DataLoader work under DDP: each process gets its own share of the items.

OML 0.4.4 relied on every process drawing the same random batches from the same global seed. Here
the wrapper draws the epoch's items once per process inside a forked RNG seeded with
``seed + epoch``, so all processes agree on the epoch whatever else consumed random numbers, then
gives process ``r`` the items ``r, r + W, r + 2W, ...``.
"""

import random
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Sampler

TLoaders = Union[DataLoader, Sequence[DataLoader], Dict[str, DataLoader]]


def _world() -> tuple:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DDPSamplerWrapper(Sampler):
    """Splits what a sampler or a batch sampler yields in an epoch between the DDP processes.

    Args:
        sampler: any iterable of indices or of batches (lists of indices); it is iterated once per
            epoch in every process.
        shuffle_samples_between_gpus: shuffle the items (with the same permutation in all
            processes) before splitting them, so no process always gets the same positions.
        pad_data_to_num_gpus: repeat the first items so that every process gets the same number
            (needed for training, where every process must take the same number of optimizer steps).
            Without padding, process ``r`` may get one item less — right for validation and inference,
            where a duplicate would otherwise be counted twice.
        seed: base of the per-epoch seed; call ``set_epoch`` to change the epoch.
        rank, world_size: taken from ``torch.distributed`` when not given.
    """

    def __init__(
        self,
        sampler: Iterable[Any],
        shuffle_samples_between_gpus: bool = True,
        pad_data_to_num_gpus: bool = True,
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        default_rank, default_world = _world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}.")
        self.sampler = sampler
        self.shuffle = shuffle_samples_between_gpus
        self.pad = pad_data_to_num_gpus
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _draw_epoch(self) -> List[Any]:
        seed = self.seed + self.epoch
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            try:
                items = list(self.sampler)
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)
        if self.shuffle:
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
            items = [items[i] for i in order]
        return items

    def _n_items(self, n_total: int) -> int:
        if self.pad:
            return -(-n_total // self.world_size)
        return len(range(self.rank, n_total, self.world_size))

    def __iter__(self) -> Iterator[Any]:
        items = self._draw_epoch()
        if self.pad and len(items) % self.world_size:
            n_missing = self.world_size - len(items) % self.world_size
            items = items + [items[i % len(items)] for i in range(n_missing)]
        return iter(items[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self._n_items(len(self.sampler))  # type: ignore[arg-type]


def extract_loader_parameters(loader: DataLoader, ignore_data_related_parameters: bool = False) -> Dict[str, Any]:
    """The constructor arguments of a DataLoader, to rebuild it (without dataset/sampler/batch arguments if asked)."""
    params = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
    }
    if loader.num_workers > 0:
        params["prefetch_factor"] = loader.prefetch_factor
    if not ignore_data_related_parameters:
        params.update(
            {
                "dataset": loader.dataset,
                "sampler": loader.sampler,
                "batch_sampler": loader.batch_sampler,
                "batch_size": loader.batch_size,
                "drop_last": loader.drop_last,
            }
        )
    return params


def patch_dataloader_to_ddp(loader: DataLoader, pad_data_to_num_gpus: bool = True, seed: int = 0) -> DataLoader:
    """A copy of ``loader`` whose (batch) sampler is wrapped in ``DDPSamplerWrapper``.

    A custom batch sampler (e.g. ``BalanceSampler``) is split batch by batch; a plain loader is split
    sample by sample and then batched. Items are not shuffled between processes (the loader's own
    sampler decides the order). Pass ``pad_data_to_num_gpus=False`` for validation and inference.
    """
    params = extract_loader_parameters(loader, ignore_data_related_parameters=True)
    wrap = {"shuffle_samples_between_gpus": False, "pad_data_to_num_gpus": pad_data_to_num_gpus, "seed": seed}
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        patched = DDPSamplerWrapper(batch_sampler, **wrap)
        return DataLoader(loader.dataset, batch_sampler=patched, **params)
    patched = DDPSamplerWrapper(loader.sampler, **wrap)
    return DataLoader(
        loader.dataset, sampler=patched, batch_size=loader.batch_size, drop_last=loader.drop_last, **params
    )


def _is_patched(loader: DataLoader) -> bool:
    return isinstance(loader.sampler, DDPSamplerWrapper) or isinstance(loader.batch_sampler, DDPSamplerWrapper)


def check_loaders_is_patched(loaders: TLoaders) -> bool:
    """True if every loader (one, a sequence or a dict of them) was patched with ``patch_dataloader_to_ddp``."""
    if isinstance(loaders, DataLoader):
        return _is_patched(loaders)
    values = loaders.values() if isinstance(loaders, dict) else loaders
    return all(_is_patched(loader) for loader in values)


__all__ = ["DDPSamplerWrapper", "extract_loader_parameters", "patch_dataloader_to_ddp", "check_loaders_is_patched"]
