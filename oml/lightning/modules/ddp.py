"""A LightningModule mix-in that owns its DataLoaders and patches them for DDP."""

from typing import Any, Dict, Optional, Sequence, Union

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from oml.ddp.patching import patch_dataloader_to_ddp

TLoaders = Union[DataLoader, Sequence[DataLoader], Dict[str, DataLoader]]


def _patch(loaders: TLoaders, pad: bool) -> TLoaders:
    if isinstance(loaders, DataLoader):
        return patch_dataloader_to_ddp(loaders, pad_data_to_num_gpus=pad)
    if isinstance(loaders, dict):
        return {key: patch_dataloader_to_ddp(loader, pad_data_to_num_gpus=pad) for key, loader in loaders.items()}
    return [patch_dataloader_to_ddp(loader, pad_data_to_num_gpus=pad) for loader in loaders]


def set_batch_samplers_epoch(loaders: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the batch samplers of the loaders that have it.

    Lightning does this for samplers but not for custom batch samplers such as ``BalanceSampler``;
    without it a resumed run would draw the batches of epoch 0 again instead of those of its epoch.
    """
    if isinstance(loaders, DataLoader):
        loaders = [loaders]
    elif isinstance(loaders, dict):
        loaders = list(loaders.values())
    for loader in loaders or []:
        set_epoch = getattr(getattr(loader, "batch_sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


class ModuleDDP(pl.LightningModule):
    """Returns its loaders patched for DDP from ``train_dataloader`` / ``val_dataloader``.

    The patching happens there, after the processes were started, so it sees the real rank and
    world size. Do not pass loaders to ``trainer.fit`` when you use it, and build the Trainer with
    ``use_distributed_sampler=False`` (Lightning 1.x called it ``replace_sampler_ddp``).
    Training loaders are padded so that every process makes the same number of steps; validation
    loaders are not, so that no sample is counted twice.
    """

    def __init__(
        self,
        loaders_train: Optional[TLoaders] = None,
        loaders_val: Optional[TLoaders] = None,
        *args: Any,
        **kwargs: Any,
    ):
        # cooperative: in ``class ExtractorModuleDDP(ModuleDDP, ExtractorModule)`` the other arguments go on to
        # ``ExtractorModule.__init__``
        super().__init__(*args, **kwargs)
        if loaders_train is None and loaders_val is None:
            raise ValueError("Give at least one of loaders_train and loaders_val.")
        self.loaders_train = loaders_train
        self.loaders_val = loaders_val

    def train_dataloader(self) -> TLoaders:
        if self.loaders_train is None:
            raise ValueError("This module was built without loaders_train.")
        return _patch(self.loaders_train, pad=True)

    def val_dataloader(self) -> TLoaders:
        if self.loaders_val is None:
            raise ValueError("This module was built without loaders_val.")
        return _patch(self.loaders_val, pad=False)


__all__ = ["ModuleDDP", "set_batch_samplers_epoch"]
