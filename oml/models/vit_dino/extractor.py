"""``ViTExtractor``: DINO ViTs (S/16, S/8, B/16, B/8) and OML's checkpoints trained from them."""

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from oml.const import STORAGE_CKPTS
from oml.interfaces.models import IExtractor
from oml.models.checkpoint import load_state_dict_file, load_state_dict_strictly, resolve_weights
from oml.models.utils import init_on_meta, materialise, remove_criterion_in_state_dict, remove_prefix_from_state_dict
from oml.models.vit_dino.model import ARCHS, DinoVisionTransformer, vitb8, vitb16, vits8, vits16
from oml.models.vit_dino.visualisation import vis_vit
from oml.utils.misc_torch import normalise

_FB_URL = "https://dl.fbaipublicfiles.com"


def _transforms(name: str, **args: int) -> Dict[str, Any]:
    return {"name": name, "args": args}  # a fresh dict per entry: editing one entry cannot change another


MULTI_SCALES = (1.0, 1 / 2 ** (1 / 2), 1 / 2)


class ViTExtractor(IExtractor):
    """DINO ViT returning the CLS token after the final norm (``[B, 384]`` for S, ``[B, 768]`` for B).

    Any input size works: sides are cropped to whole patches and the positional embedding is resized with
    DINO's rule, so outputs equal DINO's (and OML's) for every size.

    Pretrained weights (``pretrained_models``): the self-supervised DINO releases ``vits16_dino``,
    ``vits8_dino``, ``vitb16_dino``, ``vitb8_dino`` and OML's checkpoints fine-tuned on four datasets,
    CMC@1 on 224 x 224 images (OML 0.4.4 zoo table):

    ==================  =========================  =====
    weights             dataset                    CMC@1
    ==================  =========================  =====
    ``vits16_inshop``   DeepFashion In-shop        0.921
    ``vits16_sop``      Stanford Online Products   0.866
    ``vits16_cars``     CARS 196                   0.907
    ``vits16_cub``      CUB 200 2011               0.837
    ==================  =========================  =====

    The OML models expect a crop of the object rather than the whole picture.

    >>> extractor = ViTExtractor(weights=None, arch="vits16", normalise_features=True)
    >>> extractor(torch.randn(2, 3, 32, 48)).shape
    torch.Size([2, 384])
    """

    constructors: Dict[str, Callable[..., DinoVisionTransformer]] = {
        "vits8": vits8,
        "vits16": vits16,
        "vitb8": vitb8,
        "vitb16": vitb16,
    }

    pretrained_models: Dict[str, Any] = {
        "vits16_dino": {
            "url": [f"{_FB_URL}/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"],
            "hash": "cf0f22",
            "fname": "vits16_dino.ckpt",
            "init_args": {"arch": "vits16", "normalise_features": False},
            "transforms": _transforms("norm_resize_torch", im_size=224),
        },
        "vits8_dino": {
            "url": [f"{_FB_URL}/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth"],
            "hash": "230cd5",
            "fname": "vits8_dino.ckpt",
            "init_args": {"arch": "vits8", "normalise_features": False},
            "transforms": _transforms("norm_resize_torch", im_size=224),
        },
        "vitb16_dino": {
            "url": [f"{_FB_URL}/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"],
            "hash": "552daf",
            "fname": "vitb16_dino.ckpt",
            "init_args": {"arch": "vitb16", "normalise_features": False},
            "transforms": _transforms("norm_resize_torch", im_size=224),
        },
        "vitb8_dino": {
            "url": [f"{_FB_URL}/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"],
            "hash": "556550",
            "fname": "vitb8_dino.ckpt",
            "init_args": {"arch": "vitb8", "normalise_features": False},
            "transforms": _transforms("norm_resize_torch", im_size=224),
        },
        "vits16_inshop": {
            "url": [f"{STORAGE_CKPTS}/inshop/vits16_inshop_a76b85.ckpt", "1niX-TC8cj6j369t7iU2baHQSVN3MVJbW"],
            "hash": "a76b85",
            "fname": "vits16_inshop.ckpt",
            "init_args": {"arch": "vits16", "normalise_features": False},
            "transforms": _transforms("norm_resize_hypvit_torch", im_size=224, crop_size=224),
        },
        "vits16_sop": {
            "url": [f"{STORAGE_CKPTS}/sop/vits16_sop_21e743.ckpt", "1zuGRHvF2KHd59aw7i7367OH_tQNOGz7A"],
            "hash": "21e743",
            "fname": "vits16_sop.ckpt",
            "init_args": {"arch": "vits16", "normalise_features": True},
            "transforms": _transforms("norm_resize_hypvit_torch", im_size=224, crop_size=224),
        },
        "vits16_cub": {
            "url": [f"{STORAGE_CKPTS}/cub/vits16_cub.ckpt", "1p2tUosFpGXh5sCCdzlXtjV87kCDfG34G"],
            "hash": "e82633",
            "fname": "vits16_cub.ckpt",
            "init_args": {"arch": "vits16", "normalise_features": False},
            "transforms": _transforms("norm_resize_albu", im_size=224),
        },
        "vits16_cars": {
            "url": [f"{STORAGE_CKPTS}/cars/vits16_cars.ckpt", "1hcOxDRRXrKr6ZTCyBauaY8Ue-pok4Icg"],
            "hash": "9f1e59",
            "fname": "vits16_cars.ckpt",
            "init_args": {"arch": "vits16", "normalise_features": False},
            "transforms": _transforms("norm_resize_albu", im_size=224),
        },
    }

    def __init__(
        self,
        weights: Optional[Union[Path, str]],
        arch: str,
        normalise_features: bool,
        use_multi_scale: bool = False,
    ):
        """
        Args:
            weights: None (random weights), a name from ``pretrained_models`` or the path of a checkpoint: a
                DINO release, an OML/Lightning checkpoint (any prefix such as ``model.`` is removed).
            arch: one of ``vits8``, ``vits16``, ``vitb8``, ``vitb16``.
            normalise_features: L2-normalise the output.
            use_multi_scale: average the outputs at scales 1, 1/sqrt(2) and 1/2 of the input (test-time
                augmentation, 3 passes).
        """
        super().__init__()
        if arch not in self.constructors:
            raise ValueError(f"Unknown arch {arch!r} for ViTExtractor, expected one of {sorted(self.constructors)}.")
        self.arch = arch
        self.normalise_features = normalise_features
        self.mscale = use_multi_scale

        with init_on_meta(weights is not None):
            self.model = self.constructors[arch]()
        if weights is not None:
            materialise(self.model)
            self._load(resolve_weights(weights, self.pretrained_models, type(self).__name__))

    def _load(self, path: Path) -> None:
        state_dict = remove_criterion_in_state_dict(load_state_dict_file(path))
        state_dict = remove_prefix_from_state_dict(state_dict, trial_key="norm.bias")
        load_state_dict_strictly(self.model, state_dict, source=str(path))

    @property
    def feat_dim(self) -> int:
        return len(self.model.norm.bias)

    def _multi_scale(self, x: Tensor) -> Tensor:
        total = torch.zeros(x.shape[0], self.feat_dim, device=x.device, dtype=x.dtype)
        for scale in MULTI_SCALES:
            scaled = (
                x.clone() if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            )
            total = total + self.model(scaled)
        return total / len(MULTI_SCALES)

    def forward(self, x: Tensor) -> Tensor:
        x = self._multi_scale(x) if self.mscale else self.model(x)
        return normalise(x) if self.normalise_features else x

    def draw_attention(self, image: np.ndarray) -> np.ndarray:
        """The last block's attention over an RGB ``uint8`` image (``H x W x 3``), blended with the image."""
        return vis_vit(self.model, image)


__all__ = ["ViTExtractor", "ARCHS"]
