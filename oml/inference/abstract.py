"""The loop shared by all inference helpers: batches, eval mode, mixed precision, progress bar, DDP gathering."""

import warnings
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, List

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from oml.ddp.patching import patch_dataloader_to_ddp
from oml.ddp.utils import get_world_size_safe, is_ddp, is_main_process, sync_dicts_ddp
from oml.utils.misc_torch import get_device, temporary_setting_model_mode

TApplyModel = Callable[[nn.Module, Any], Tensor]


def move_to_device(data: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to ``device``; other values are returned as they are."""
    if isinstance(data, Tensor):
        return data.to(device, non_blocking=True)
    if isinstance(data, dict):
        return {key: move_to_device(value, device) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(move_to_device(value, device) for value in data)
    return data


def get_autocast(device: torch.device, use_fp16: bool) -> ContextManager:
    """Mixed precision that the device supports.

    ``use_fp16`` means float16 autocast on CUDA and bfloat16 autocast on CPU (CPU autocast has no float16
    kernels for convolutions; OML always asked for CUDA autocast, which does nothing for a model on the CPU).
    On other devices (e.g. MPS) the model runs in float32 with a warning.
    """
    if not use_fp16:
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    warnings.warn(f"use_fp16 is not supported on {device.type}: running in float32.", stacklevel=3)
    return nullcontext()


def _check_loader_args(num_workers: Any, batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}.")


def order_by_ids(outputs: Tensor, ids: Tensor, n: int) -> Tensor:
    """Rows of ``outputs`` sorted by their dataset index ``ids``; the first copy of a duplicate is kept.

    Raises:
        RuntimeError: if some of the indices ``0..n-1`` are missing or unknown indices are present.
    """
    if len(outputs) != len(ids):
        raise RuntimeError(f"Got {len(outputs)} outputs for {len(ids)} dataset indices.")
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    first = torch.ones(len(ids), dtype=torch.bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    sorted_ids, order = sorted_ids[first], order[first]
    if len(sorted_ids) != n or not torch.equal(sorted_ids, torch.arange(n)):
        missing = n - int(((sorted_ids >= 0) & (sorted_ids < n)).sum())
        raise RuntimeError(
            f"Inference did not cover the dataset exactly once: {missing} of {n} items are missing "
            f"(got indices {sorted_ids[:10].tolist()}...). Was every process given the whole dataset?"
        )
    return outputs[order.to(outputs.device)]


def _inference(
    model: nn.Module,
    apply_model: TApplyModel,
    dataset: Dataset,
    num_workers: int,
    batch_size: int,
    verbose: bool,
    use_fp16: bool,
    accumulate_on_cpu: bool = True,
) -> Tensor:
    """Run ``apply_model(model, batch)`` over ``dataset`` and return the outputs of all items in dataset order.

    The model is in eval mode (restored afterwards) under ``torch.no_grad``. Under DDP every process computes
    its share of the items (no padding, so each item is computed once), the outputs are gathered and every
    process gets all of them, ordered like the dataset.

    Args:
        model: the model; the batch tensors are moved to the device of its first parameter.
        apply_model: ``(model, batch) -> Tensor [B, ...]``.
        dataset: a map-style dataset whose items hold their index under ``dataset.index_key``.
        num_workers: DataLoader workers.
        batch_size: items per batch.
        verbose: show a progress bar (on the main process).
        use_fp16: mixed precision (see ``get_autocast``); the outputs are returned in float32.
        accumulate_on_cpu: move every batch of outputs to the CPU (saves accelerator memory).
    """
    _check_loader_args(num_workers, batch_size)
    index_key = getattr(dataset, "index_key", None)
    if index_key is None:
        raise TypeError(f"The dataset {type(dataset).__name__} must have an `index_key` attribute (key of item ids).")
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("Cannot run inference on an empty dataset.")

    device = torch.device(get_device(model))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if is_ddp():
        loader = patch_dataloader_to_ddp(loader, pad_data_to_num_gpus=False)

    outputs: List[Tensor] = []
    ids: List[Tensor] = []
    bar = tqdm(loader, desc=f"Inference on {device}", disable=not (verbose and is_main_process()))
    with torch.no_grad(), temporary_setting_model_mode(model, set_train=False), get_autocast(device, use_fp16):
        for batch in bar:
            batch_ids = torch.as_tensor(batch[index_key]).long().cpu()
            out = apply_model(model, move_to_device(batch, device)).detach()
            if len(out) != len(batch_ids):
                raise RuntimeError(f"apply_model returned {len(out)} outputs for a batch of {len(batch_ids)} items.")
            if use_fp16 and out.is_floating_point():
                out = out.float()
            outputs.append(out.cpu() if accumulate_on_cpu else out)
            ids.append(batch_ids)

    out_device = outputs[0].device if outputs else (torch.device("cpu") if accumulate_on_cpu else device)
    if is_ddp():
        local = {"outputs": [o.cpu() for o in outputs], "ids": ids}
        synced = sync_dicts_ddp(local, world_size=get_world_size_safe(), device="cpu")
        outputs, ids = synced["outputs"], synced["ids"]
        outputs = [o.to(out_device) for o in outputs]
    return order_by_ids(torch.cat(outputs), torch.cat(ids), n)


__all__ = ["TApplyModel", "move_to_device", "get_autocast", "order_by_ids", "_inference"]
