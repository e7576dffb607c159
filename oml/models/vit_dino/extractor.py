"""``ViTExtractor``: DINO ViTs (S/16, S/8, B/16, B/8), DINOv2 ViTs (S/14, B/14, L/14, with and without registers)
and OML's checkpoints trained from them."""

from pathlib import Path
from typing import Callable, Dict, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from oml.const import STORAGE_CKPTS
from oml.interfaces.models import IExtractor
from oml.models.loading import build_with_weights, oml_prefix
from oml.models.utils import check_arch
from oml.models.vit_dino.model import ARCHS, CONSTRUCTORS, DinoVisionTransformer
from oml.models.vit_dino.visualisation import vis_vit
from oml.models.zoo import PretrainedEntry, zoo_entry
from oml.utils.misc_torch import normalise

_FB_URL = "https://dl.fbaipublicfiles.com"
_OML_LICENCE = "Apache-2.0 (OML's checkpoints, fine-tuned from DINO's vits16)"


def _dino(arch: str, release: str, md5: str) -> PretrainedEntry:
    return zoo_entry(f"{_FB_URL}/dino/{release}/{release}.pth", f"{arch}_dino.ckpt",
                     {"arch": arch, "normalise_features": False}, "norm_resize_torch", {"im_size": 224}, md5=md5,
                     licence="Apache-2.0 (Meta AI, facebookresearch/dino)")  # fmt: skip


def _dinov2(arch: str, md5: str) -> PretrainedEntry:
    size, registers = arch[:6], "_reg4" if arch.endswith("_reg") else ""
    return zoo_entry(f"{_FB_URL}/dinov2/dinov2_{size}/dinov2_{size}{registers}_pretrain.pth",
                     f"dinov2_{size}{registers}.ckpt", {"arch": arch, "normalise_features": False},
                     "norm_resize_hypvit_torch", {"im_size": 224}, md5=md5,
                     licence="Apache-2.0 (Meta AI, facebookresearch/dinov2)")  # fmt: skip


def _oml(dataset: str, file: str, drive_id: str, md5: str, normalise: bool, transforms: str, cmc1: float,
         crop: bool) -> PretrainedEntry:  # fmt: skip
    args = {"im_size": 224, "crop_size": 224} if crop else {"im_size": 224}
    return zoo_entry([f"{STORAGE_CKPTS}/{dataset}/{file}", drive_id], f"vits16_{dataset}.ckpt",
                     {"arch": "vits16", "normalise_features": normalise}, transforms, args, md5=md5,
                     metrics={"cmc@1": cmc1}, licence=_OML_LICENCE)  # fmt: skip


MULTI_SCALES = (1.0, 1 / 2 ** (1 / 2), 1 / 2)


class ViTExtractor(IExtractor):
    """DINO / DINOv2 ViT returning the CLS token after the final norm (384-d for S, 768-d for B, 1024-d for L).

    Any input size works: sides are cropped to whole patches and the positional embedding is resized with
    DINO's (or DINOv2's) rule, so outputs equal the originals' (and OML's) for every size.

    Pretrained weights (``pretrained_models``): the self-supervised DINO releases ``vits16_dino``,
    ``vits8_dino``, ``vitb16_dino``, ``vitb8_dino``, the DINOv2 releases ``vit{s,b,l}14_dinov2`` and
    ``vit{s,b,l}14_reg_dinov2`` (with 4 registers), and OML's checkpoints fine-tuned on four datasets,
    CMC@1 on 224 x 224 images (OML 0.4.4 zoo table, also in each entry's ``metrics``):

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

    constructors: Dict[str, Callable[..., DinoVisionTransformer]] = dict(CONSTRUCTORS)

    pretrained_models: Dict[str, PretrainedEntry] = {
        "vits16_dino": _dino("vits16", "dino_deitsmall16_pretrain", "cf0f22"),
        "vits8_dino": _dino("vits8", "dino_deitsmall8_pretrain", "230cd5"),
        "vitb16_dino": _dino("vitb16", "dino_vitbase16_pretrain", "552daf"),
        "vitb8_dino": _dino("vitb8", "dino_vitbase8_pretrain", "556550"),
        "vits16_inshop": _oml("inshop", "vits16_inshop_a76b85.ckpt", "1niX-TC8cj6j369t7iU2baHQSVN3MVJbW", "a76b85",
                              False, "norm_resize_hypvit_torch", 0.921, crop=True),
        "vits16_sop": _oml("sop", "vits16_sop_21e743.ckpt", "1zuGRHvF2KHd59aw7i7367OH_tQNOGz7A", "21e743",
                           True, "norm_resize_hypvit_torch", 0.866, crop=True),
        "vits16_cub": _oml("cub", "vits16_cub.ckpt", "1p2tUosFpGXh5sCCdzlXtjV87kCDfG34G", "e82633",
                           False, "norm_resize_albu", 0.837, crop=False),
        "vits16_cars": _oml("cars", "vits16_cars.ckpt", "1hcOxDRRXrKr6ZTCyBauaY8Ue-pok4Icg", "9f1e59",
                            False, "norm_resize_albu", 0.907, crop=False),
        "vits14_dinov2": _dinov2("vits14", "2e405c"),
        "vits14_reg_dinov2": _dinov2("vits14_reg", "2a50c5"),
        "vitb14_dinov2": _dinov2("vitb14", "8635e7"),
        "vitb14_reg_dinov2": _dinov2("vitb14_reg", "13d13c"),
        "vitl14_dinov2": _dinov2("vitl14", "19a02c"),
        "vitl14_reg_dinov2": _dinov2("vitl14_reg", "8b6364"),
    }  # fmt: skip

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
                DINO or DINOv2 release, an OML/Lightning checkpoint (any prefix such as ``model.`` is removed).
            arch: one of ``vits8``, ``vits16``, ``vitb8``, ``vitb16`` (DINO), ``vits14``, ``vitb14``,
                ``vitl14``, ``vits14_reg``, ``vitb14_reg``, ``vitl14_reg`` (DINOv2).
            normalise_features: L2-normalise the output.
            use_multi_scale: average the outputs at scales 1, 1/sqrt(2) and 1/2 of the input (test-time
                augmentation, 3 passes).
        """
        super().__init__()
        self.arch = check_arch(arch, self.constructors, type(self).__name__)
        self.normalise_features = normalise_features
        self.mscale = use_multi_scale
        self.model = build_with_weights(self.constructors[arch], weights, self.pretrained_models,
                                        type(self).__name__, oml_prefix("norm.bias"))  # fmt: skip

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


__all__ = ["ViTExtractor", "ARCHS", "MULTI_SCALES"]
