"""Embeddings of images: from a list of paths, or of every row of a dataset table (with an optional cache)."""

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from oml.const import BBOXES_COLUMNS, PATHS_COLUMN, SPLIT_COLUMN, X1_COLUMN, X2_COLUMN, Y1_COLUMN, Y2_COLUMN
from oml.datasets.list_dataset import ListDataset, TBBox
from oml.inference.abstract import inference
from oml.transforms.images.utils import TTransforms
from oml.utils.dataframe_format import check_retrieval_dataframe_format
from oml.utils.images.images import TImReader
from oml.utils.io import atomic_write

TPath = Union[str, Path]
CACHE_FORMAT = "oml-embeddings-cache-v1"


def inference_on_images(
    model: nn.Module,
    paths: Sequence[TPath],
    transform: TTransforms,
    num_workers: int,
    batch_size: int,
    verbose: bool = False,
    f_imread: Optional[TImReader] = None,
    use_fp16: bool = False,
    accumulate_on_cpu: bool = True,
    bboxes: Optional[Sequence[Optional[TBBox]]] = None,
    use_bf16_on_cpu: bool = False,
) -> Tensor:
    """Outputs ``[N, ...]`` of ``model`` on the images ``paths`` (in their order).

    Args:
        model: e.g. an extractor; its inputs are moved to the device of its parameters.
        paths: image paths.
        transform: albumentations or torchvision transforms that give a tensor.
        num_workers: DataLoader workers.
        batch_size: images per batch.
        verbose: show a progress bar.
        f_imread: image reader (default: the one that suits ``transform``).
        use_fp16: float16 autocast on CUDA; ignored on the CPU as in OML, so CPU embeddings are float32 and do not
            depend on the batch size beyond float32 rounding (``oml.inference.abstract.get_autocast``).
        accumulate_on_cpu: keep the outputs on the CPU.
        bboxes: optional ``(x1, y1, x2, y2)`` box (or None for the whole image) per path (beyond OML 0.4.4).
        use_bf16_on_cpu: opt in to bfloat16 autocast on the CPU (beyond OML 0.4.4): faster on some CPUs, but
            the embeddings change at the 3rd digit and depend on the batching.

    Under DDP every process embeds its share and gets all the embeddings.
    """
    dataset = ListDataset(paths, bboxes=bboxes, transform=transform, f_imread=f_imread)
    key = dataset.input_tensors_key

    def apply(model_: nn.Module, batch: Dict[str, Any]) -> Tensor:
        return model_(batch[key])

    return inference(
        model, apply, dataset, num_workers, batch_size, verbose, use_fp16, accumulate_on_cpu, use_bf16_on_cpu
    )


def _hash_module(model: nn.Module, digest: "hashlib._Hash") -> None:
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())


def embeddings_cache_key(
    model: nn.Module,
    transform: Any,
    paths: Sequence[TPath],
    bboxes: Optional[Sequence[Optional[TBBox]]] = None,
    use_fp16: bool = False,
    use_bf16_on_cpu: bool = False,
) -> str:
    """md5 of everything the embeddings depend on: the model (class and every weight), the transforms (their
    ``repr`` with all parameters), the image paths with their size and modification time, the boxes and the
    precision. A cache saved under another key is stale.
    """
    digest = hashlib.md5()
    _hash_module(model, digest)
    digest.update(repr(transform).encode())
    digest.update(f"fp16={bool(use_fp16)}".encode())
    if use_bf16_on_cpu:  # only then, so that the keys of existing caches stay valid
        digest.update(b"bf16_on_cpu=True")
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    digest.update(repr(list(bboxes) if bboxes is not None else None).encode())
    return digest.hexdigest()


def load_embeddings_cache(path: TPath, key: str) -> Optional[Tensor]:
    """The cached embeddings if ``path`` holds a cache saved under ``key`` (read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not our format, a truncated file, an unsafe pickle: recompute
        return None
    if not isinstance(content, dict) or content.get("format") != CACHE_FORMAT or content.get("key") != key:
        return None
    embeddings = content.get("embeddings")
    return embeddings if isinstance(embeddings, Tensor) else None


def save_embeddings_cache(path: TPath, key: str, embeddings: Tensor) -> None:
    """Save ``embeddings`` with their cache ``key`` (plain tensors and strings; written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save({"format": CACHE_FORMAT, "key": key, "embeddings": embeddings.detach().cpu()}, tmp)


def _bboxes_of(df: pd.DataFrame) -> Optional[List[Optional[TBBox]]]:
    if not all(c in df.columns for c in BBOXES_COLUMNS):
        return None
    boxes: List[Optional[TBBox]] = []
    for x1, y1, x2, y2 in df[[X1_COLUMN, Y1_COLUMN, X2_COLUMN, Y2_COLUMN]].to_numpy(dtype=np.float64):
        boxes.append(None if np.isnan([x1, y1, x2, y2]).any() else (int(x1), int(y1), int(x2), int(y2)))
    return boxes


def inference_on_dataframe(
    dataset_root: TPath,
    dataframe_name: str,
    extractor: nn.Module,
    transforms: TTransforms,
    output_cache_path: Optional[TPath] = None,
    num_workers: int = 0,
    batch_size: int = 128,
    use_fp16: bool = False,
    verbose: bool = True,
    use_bf16_on_cpu: bool = False,
    allow_paths_outside_root: bool = False,
) -> Tuple[Tensor, Tensor, pd.DataFrame, pd.DataFrame]:
    """Embeddings of every row of the table ``dataset_root/dataframe_name`` (boxes are used if present).

    Args:
        dataset_root: the dataset folder.
        dataframe_name: the table in the oml format (checked first).
        extractor: the model.
        transforms: the transforms of the images.
        output_cache_path: a file for the embeddings. It is used when it was saved for the same extractor
            weights, transforms, images (paths, sizes, modification times), boxes and precision, and it is
            (re)written otherwise. OML 0.4.4 reused any file at this path, even one made by another model.
        num_workers: DataLoader workers.
        batch_size: images per batch.
        use_fp16: float16 on CUDA, ignored on the CPU (see ``inference_on_images``).
        verbose: progress bar and cache messages.
        use_bf16_on_cpu: bfloat16 on the CPU (see ``inference_on_images``).
        allow_paths_outside_root: accept paths that leave ``dataset_root`` (see ``check_retrieval_dataframe_format``).

    Returns:
        ``(embeddings_train, embeddings_val, df_train, df_val)``, the tables with a fresh index.
    """
    dataset_root = Path(dataset_root)
    df = pd.read_csv(dataset_root / dataframe_name)
    check_retrieval_dataframe_format(
        df, dataset_root=dataset_root, verbose=verbose, allow_paths_outside_root=allow_paths_outside_root
    )
    paths = [dataset_root / p for p in df[PATHS_COLUMN]]
    bboxes = _bboxes_of(df)

    embeddings = None
    key = ""
    if output_cache_path is not None:
        key = embeddings_cache_key(extractor, transforms, paths, bboxes, use_fp16, use_bf16_on_cpu)
        embeddings = load_embeddings_cache(output_cache_path, key)
        if verbose:
            state = "loaded from" if embeddings is not None else "not found (or stale) in"
            print(f"Embeddings were {state} the cache {output_cache_path}.")
    if embeddings is None:
        embeddings = inference_on_images(
            extractor,
            paths=paths,
            transform=transforms,
            num_workers=num_workers,
            batch_size=batch_size,
            verbose=verbose,
            use_fp16=use_fp16,
            bboxes=bboxes,
            use_bf16_on_cpu=use_bf16_on_cpu,
        )
        if output_cache_path is not None:
            save_embeddings_cache(output_cache_path, key, embeddings)

    is_train = torch.tensor((df[SPLIT_COLUMN] == "train").to_numpy(dtype=bool))
    is_val = torch.tensor((df[SPLIT_COLUMN] == "validation").to_numpy(dtype=bool))
    df_train = df[is_train.numpy()].reset_index(drop=True)
    df_val = df[is_val.numpy()].reset_index(drop=True)
    return embeddings[is_train], embeddings[is_val], df_train, df_val


__all__ = [
    "inference_on_images",
    "inference_on_dataframe",
    "embeddings_cache_key",
    "load_embeddings_cache",
    "save_embeddings_cache",
]
