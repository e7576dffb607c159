"""The loop shared by all inference helpers: batches, eval mode, mixed precision, progress bar, DDP gathering."""

import warnings
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, List, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from oml.ddp.patching import patch_dataloader_to_ddp
from oml.ddp.utils import get_world_size_safe, is_ddp, is_main_process, sync_dicts_ddp
from oml.utils.checks import check_int
from oml.utils.misc_torch import first_occurrences, get_device, temporary_setting_model_mode

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


def get_autocast(device: torch.device, use_fp16: bool, use_bf16_on_cpu: bool = False) -> ContextManager:
    """The mixed precision context of an inference run.

    ``use_fp16`` keeps OML 0.4.4's meaning: float16 autocast on CUDA, ignored on the CPU (the model runs
    in float32). On other devices (e.g. MPS) it is ignored with a warning.

    ``use_bf16_on_cpu`` is the explicit opt-in for low precision on the CPU: bfloat16 autocast (CPU
    autocast has no float16 convolutions). It is faster on CPUs with bfloat16 units but changes the
    numbers at the 3rd significant digit, and the result then depends on how the items were batched:
    the same image embedded in batches of other sizes gets other vectors, distances tie or swap, and
    re-ranking with a pairwise model can reorder results that a float32 run keeps in order.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16) if use_fp16 else nullcontext()
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16_on_cpu else nullcontext()
    if use_fp16:
        warnings.warn(f"use_fp16 is not supported on {device.type}: running in float32.", stacklevel=3)
    return nullcontext()


def check_loader_args(num_workers: Any, batch_size: Any) -> Tuple[int, int]:
    """``(num_workers, batch_size)`` as python ints, after checking: a non-negative and a positive integer."""
    return check_int(num_workers, "num_workers", minimum=0), check_int(batch_size, "batch_size")


def order_by_ids(outputs: Tensor, ids: Tensor, n: int) -> Tensor:
    """Rows of ``outputs`` sorted by their dataset index ``ids``; the first copy of a duplicate is kept.

    Raises:
        RuntimeError: if some of the indices ``0..n-1`` are missing or unknown indices are present.
    """
    if len(outputs) != len(ids):
        raise RuntimeError(f"Got {len(outputs)} outputs for {len(ids)} dataset indices.")
    sorted_ids, order = first_occurrences(ids)
    if len(sorted_ids) != n or not torch.equal(sorted_ids, torch.arange(n)):
        missing = n - int(((sorted_ids >= 0) & (sorted_ids < n)).sum())
        raise RuntimeError(
            f"Inference did not cover the dataset exactly once: {missing} of {n} items are missing "
            f"(got indices {sorted_ids[:10].tolist()}...). Was every process given the whole dataset?"
        )
    return outputs[order.to(outputs.device)]


def inference(
    model: nn.Module,
    apply_model: TApplyModel,
    dataset: Dataset,
    num_workers: int,
    batch_size: int,
    verbose: bool,
    use_fp16: bool,
    accumulate_on_cpu: bool = True,
    use_bf16_on_cpu: bool = False,
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
        use_fp16: float16 autocast on CUDA; ignored on the CPU, as in OML (see ``get_autocast``).
        accumulate_on_cpu: move every batch of outputs to the CPU (saves accelerator memory).
        use_bf16_on_cpu: bfloat16 autocast when the model is on the CPU: faster on some CPUs, but the outputs
            are no longer reproducible across batch sizes (see ``get_autocast``).

    Floating outputs of a low precision run are returned in float32.
    """
    num_workers, batch_size = check_loader_args(num_workers, batch_size)
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
    autocast = get_autocast(device, use_fp16, use_bf16_on_cpu)
    with torch.no_grad(), temporary_setting_model_mode(model, set_train=False), autocast:
        for batch in bar:
            batch_ids = torch.as_tensor(batch[index_key]).long().cpu()
            out = apply_model(model, move_to_device(batch, device)).detach()
            if len(out) != len(batch_ids):
                raise RuntimeError(f"apply_model returned {len(out)} outputs for a batch of {len(batch_ids)} items.")
            if isinstance(autocast, torch.autocast) and out.is_floating_point():
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


# OML 0.4.4's name of the shared loop
_inference = inference

__all__ = ["TApplyModel", "move_to_device", "get_autocast", "check_loader_args", "order_by_ids", "inference"]
