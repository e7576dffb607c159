"""Scores of a pairwise model on pairs of images or of embeddings."""

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import Tensor

from oml.datasets.list_dataset import TBBox
from oml.datasets.pairs import EmbeddingPairsDataset, ImagePairsDataset
from oml.inference.abstract import inference
from oml.interfaces.models import IPairwiseModel
from oml.transforms.images.utils import TTransforms, get_im_reader_for_transforms
from oml.utils.images.images import TImReader

TPath = Union[str, Path]


def pairwise_inference_on_images(
    model: IPairwiseModel,
    paths1: Sequence[TPath],
    paths2: Sequence[TPath],
    transform: TTransforms,
    num_workers: int,
    batch_size: int,
    verbose: bool = True,
    f_imread: Optional[TImReader] = None,
    use_fp16: bool = False,
    accumulate_on_cpu: bool = True,
    bboxes1: Optional[Sequence[Optional[TBBox]]] = None,
    bboxes2: Optional[Sequence[Optional[TBBox]]] = None,
    use_bf16_on_cpu: bool = False,
) -> Tensor:
    """``model.predict`` on the image pairs ``(paths1[i], paths2[i])``; returns ``[N]`` scores in pair order.

    ``f_imread`` defaults to the reader that suits ``transform``; ``bboxes1``/``bboxes2`` optionally crop the
    images (beyond OML 0.4.4). See ``oml.inference.abstract.inference`` for the other arguments (``use_fp16``
    is ignored on the CPU, ``use_bf16_on_cpu`` opts in to bfloat16 there).
    """
    if len(paths1) != len(paths2):
        raise ValueError(f"paths1 and paths2 must have the same length, got {len(paths1)} and {len(paths2)}.")
    dataset = ImagePairsDataset(
        paths1=paths1,
        paths2=paths2,
        bboxes1=bboxes1,
        bboxes2=bboxes2,
        transform=transform,
        f_imread=f_imread or get_im_reader_for_transforms(transform),
    )
    key1, key2, key_in = dataset.pair_1st_key, dataset.pair_2nd_key, dataset.dataset1.input_tensors_key

    def apply(model_: IPairwiseModel, batch: Dict[str, Any]) -> Tensor:
        return model_.predict(batch[key1][key_in], batch[key2][key_in])

    return inference(
        model, apply, dataset, num_workers, batch_size, verbose, use_fp16, accumulate_on_cpu, use_bf16_on_cpu
    )


def pairwise_inference_on_embeddings(
    model: IPairwiseModel,
    embeddings1: Tensor,
    embeddings2: Tensor,
    num_workers: int,
    batch_size: int,
    verbose: bool = False,
    use_fp16: bool = False,
    accumulate_on_cpu: bool = True,
    use_bf16_on_cpu: bool = False,
) -> Tensor:
    """``model.predict`` on the pairs ``(embeddings1[i], embeddings2[i])``; returns ``[N]`` scores in pair order.

    See ``oml.inference.abstract.inference`` for the other arguments.
    """
    dataset = EmbeddingPairsDataset(embeddings1=embeddings1, embeddings2=embeddings2)
    key1, key2 = dataset.pair_1st_key, dataset.pair_2nd_key

    def apply(model_: IPairwiseModel, batch: Dict[str, Any]) -> Tensor:
        return model_.predict(batch[key1], batch[key2])

    return inference(
        model, apply, dataset, num_workers, batch_size, verbose, use_fp16, accumulate_on_cpu, use_bf16_on_cpu
    )


__all__ = ["pairwise_inference_on_images", "pairwise_inference_on_embeddings"]
