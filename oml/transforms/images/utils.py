"""What kind of transforms a pipeline holds, and which image reader suits it."""

from typing import Any, Union

import albumentations as albu
import torchvision.transforms as T

from oml.utils.images.images import TImReader, imread_cv2, imread_pillow

TTransforms = Union[albu.Compose, T.Compose]


def is_albumentations(transforms: Any) -> bool:
    """True for albumentations pipelines (they take ``image=`` numpy arrays)."""
    return isinstance(transforms, albu.BaseCompose | albu.BasicTransform)


def get_im_reader_for_transforms(transforms: TTransforms) -> TImReader:
    """``imread_cv2`` (numpy RGB) for albumentations, ``imread_pillow`` (PIL RGB) for torchvision."""
    return imread_cv2 if is_albumentations(transforms) else imread_pillow


def apply_transforms(transforms: TTransforms, image: Any) -> Any:
    """Call a pipeline of either kind on one image."""
    return transforms(image=image)["image"] if is_albumentations(transforms) else transforms(image)


__all__ = ["TTransforms", "is_albumentations", "get_im_reader_for_transforms", "apply_transforms"]
