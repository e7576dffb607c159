"""Tiny models and reference (by hand) inference for the inference and retrieval tests."""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from oml.interfaces.models import IExtractor
from oml.transforms.images.torchvision import get_normalisation_resize_torch
from oml.transforms.images.utils import apply_transforms
from oml.utils.images.images import imread_pillow

IM_SIZE = 24


def tiny_transforms():
    return get_normalisation_resize_torch(im_size=IM_SIZE)


class TinyExtractor(IExtractor):
    """Conv + BatchNorm + Dropout: its output depends on eval mode, so a forgotten ``eval()`` is caught."""

    def __init__(self, feat_dim: int = 6, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(8, feat_dim),
        )
        with torch.no_grad():  # non-trivial running statistics
            self.body[1].running_mean.uniform_(-0.5, 0.5)
            self.body[1].running_var.uniform_(0.5, 2.0)
        self._feat_dim = feat_dim

    @property
    def feat_dim(self) -> int:
        return self._feat_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def read_by_hand(
    paths: Sequence[Path], transforms, bboxes: Optional[Sequence[Optional[Tuple[int, int, int, int]]]] = None
) -> Tensor:
    images: List[Tensor] = []
    for i, path in enumerate(paths):
        img = imread_pillow(path)
        if bboxes is not None and bboxes[i] is not None:
            img = img.crop(bboxes[i])
        images.append(apply_transforms(transforms, img))
    return torch.stack(images)


def embed_by_hand(model: nn.Module, paths: Sequence[Path], transforms, bboxes=None) -> Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(read_by_hand(paths, transforms, bboxes))
    model.train(was_training)
    return out
