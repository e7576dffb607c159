"""``ResnetExtractor``: torchvision ResNets (18-152), MoCo v2's ResNet-50 with its projector, GeM pooling."""

from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152

from oml.const import MEAN, STD
from oml.interfaces.models import IExtractor
from oml.models.checkpoint import load_state_dict_file
from oml.models.loading import build_with_weights, oml_prefix
from oml.models.resnet.pooling import GEM
from oml.models.utils import TStateDict, check_arch
from oml.models.zoo import PretrainedEntry, zoo_entry
from oml.utils.misc_torch import normalise

_FB_URL = "https://dl.fbaipublicfiles.com"
_TORCHVISION_URL = "https://download.pytorch.org/models"
_MOCO_PREFIX = "module.encoder_q."
_RESNET_TRANSFORMS = {"im_size": 256, "crop_size": 224}


def resnet50_projector(**kwargs: Any) -> ResNet:
    """ResNet-50 whose ``fc`` is MoCo v2's projector: Linear(2048, 2048) -> ReLU -> Linear(2048, 128)."""
    model = resnet50(**kwargs)
    model.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 128))
    return model


def load_moco_weights(path_to_model: Union[str, Path]) -> TStateDict:
    """The query encoder of a MoCo checkpoint (``module.encoder_q.*``) as a torchvision-style state dict."""
    return _from_moco(load_state_dict_file(path_to_model))


def _from_moco(state_dict: TStateDict, module: Optional[nn.Module] = None) -> TStateDict:
    """MoCo's query encoder (``module.encoder_q.*``) with the prefix cut; other layouts stay as they are."""
    if not any(key.startswith(_MOCO_PREFIX) for key in state_dict):
        return state_dict
    return {key[len(_MOCO_PREFIX) :]: value for key, value in state_dict.items() if key.startswith(_MOCO_PREFIX)}


def _drop_fc(state_dict: TStateDict, module: nn.Module) -> TStateDict:
    """With ``remove_fc`` the model has no ``fc``: checkpoints with or without it load."""
    if isinstance(module.fc, nn.Identity):
        return {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
    return state_dict


def _build(arch: str, gem_p: Optional[float], remove_fc: bool) -> ResNet:
    model = ResnetExtractor.constructors[arch]()
    if gem_p is not None:
        model.avgpool = GEM(p=gem_p)
    if remove_fc:
        model.fc = nn.Identity()
    return model


def _resnet(arch: str, sources: str, fname: str, gem_p: Optional[float], **more: Any) -> PretrainedEntry:
    return zoo_entry(sources, fname, {"arch": arch, "gem_p": gem_p, "remove_fc": True, "normalise_features": False},
                     "norm_resize_hypvit_torch", _RESNET_TRANSFORMS, **more)  # fmt: skip


def _imagenet(arch: str, sha256: str) -> PretrainedEntry:
    # torchvision publishes the beginning of the sha256 digest (in the file name), not md5
    return _resnet(
        arch,
        f"{_TORCHVISION_URL}/{arch}-{sha256}.pth",
        f"{arch}-{sha256}.pth",
        None,
        sha256=sha256,
        licence="BSD-3-Clause (torchvision's IMAGENET1K_V1); ImageNet's terms apply to the training data",
    )


class ResnetExtractor(IExtractor):
    """A torchvision ResNet; with ``remove_fc`` it returns the pooled features (512-d for 18/34, else 2048-d).

    >>> import torch
    >>> extractor = ResnetExtractor(None, "resnet18", gem_p=3.0, remove_fc=True, normalise_features=True)
    >>> extractor(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 512])
    """

    constructors: Dict[str, Callable[..., ResNet]] = {
        "resnet18": resnet18,
        "resnet34": resnet34,
        "resnet50": resnet50,
        "resnet101": resnet101,
        "resnet152": resnet152,
        "resnet50_projector": resnet50_projector,
    }

    pretrained_models: Dict[str, PretrainedEntry] = {
        "resnet50_moco_v2": _resnet("resnet50_projector",
                                    f"{_FB_URL}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
                                    "moco_v2_800ep_pretrain.pth.tar", 5.0, md5="a04e12f8",
                                    licence="CC-BY-NC-4.0 (Meta AI, facebookresearch/moco): non-commercial use"),
        "resnet18_imagenet1k_v1": _imagenet("resnet18", "f37072fd"),
        "resnet34_imagenet1k_v1": _imagenet("resnet34", "b627a593"),
        "resnet50_imagenet1k_v1": _imagenet("resnet50", "0676ba61"),
        "resnet101_imagenet1k_v1": _imagenet("resnet101", "63fe2227"),
        "resnet152_imagenet1k_v1": _imagenet("resnet152", "394f9c45"),
    }  # fmt: skip

    def __init__(
        self,
        weights: Optional[Union[Path, str]],
        arch: str,
        gem_p: Optional[float],
        remove_fc: bool,
        normalise_features: bool,
    ):
        """
        Args:
            weights: None (random weights), a name from ``pretrained_models`` or the path of a checkpoint: a
                torchvision state dict, a MoCo checkpoint (``module.encoder_q.*``) or an OML/Lightning one.
            arch: one of ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``,
                ``resnet50_projector``.
            gem_p: replace the average pooling by GeM pooling with this power (None keeps average pooling).
            remove_fc: drop the classifier (or MoCo's projector) and return the pooled features. Checkpoints
                with or without ``fc`` weights both load then (OML 0.4.4 needed them).
            normalise_features: L2-normalise the output.
        """
        super().__init__()
        self.arch = check_arch(arch, self.constructors, type(self).__name__)
        self.gem_p = gem_p
        self.remove_fc = remove_fc
        self.normalise_features = normalise_features
        build = partial(_build, arch, gem_p, remove_fc)
        self.model: ResNet = build_with_weights(build, weights, self.pretrained_models, type(self).__name__,
                                                _from_moco, oml_prefix("layer4."), _drop_fc)  # fmt: skip

    @property
    def feat_dim(self) -> int:
        fc = self.model.fc
        if isinstance(fc, nn.Linear):
            return fc.out_features
        if isinstance(fc, nn.Sequential):
            return fc[-1].out_features
        last_block = self.model.layer4[-1]
        return (last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2).num_features

    def forward(self, x: Tensor) -> Tensor:
        x = self.model(x)
        return normalise(x) if self.normalise_features else x

    def draw_gradcam(self, image: np.ndarray) -> np.ndarray:
        """Grad-CAM of the last block for the largest output (class score, or feature with ``remove_fc``).

        Args:
            image: an RGB ``uint8`` array ``H x W x 3``.

        Returns:
            An RGB ``uint8`` array of the same size: the image with the heat map over it.
        """
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Expected an RGB uint8 image H x W x 3, got {image.dtype} of shape {image.shape}.")
        device = next(self.model.parameters()).device
        tensor = torch.from_numpy(image).float().div(255).permute(2, 0, 1)
        tensor = (tensor - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        with GradCAM(model=self.model, target_layers=[self.model.layer4[-1]]) as cam:
            heat = cam(input_tensor=tensor.unsqueeze(0).to(device), targets=None)
        return show_cam_on_image(image.astype(np.float32) / 255, heat[0], use_rgb=True)


__all__ = ["ResnetExtractor", "resnet50_projector", "load_moco_weights"]
