"""Attention map of a DINO or DINOv2 ViT drawn over the image (register tokens are left out)."""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from oml.const import MEAN, STD, TNormParam
from oml.models.vit_dino.model import DinoVisionTransformer
from oml.utils.misc_torch import temporary_setting_model_mode


def vis_vit(
    vit: DinoVisionTransformer, image: np.ndarray, mean: TNormParam = MEAN, std: TNormParam = STD
) -> np.ndarray:
    """Blend the last block's CLS-to-patch attention (averaged over heads) with the image.

    Args:
        vit: the backbone.
        image: an RGB ``uint8`` array ``H x W x 3``.
        mean: normalisation applied before the model.
        std: normalisation applied before the model.

    Returns:
        An RGB ``uint8`` array of the image cropped to whole patches, half image and half heat map.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"Expected an RGB uint8 image H x W x 3, got {image.dtype} of shape {image.shape}.")
    patch = vit.patch_size
    height, width = (image.shape[0] // patch) * patch, (image.shape[1] // patch) * patch
    if height == 0 or width == 0:
        raise ValueError(f"The image {image.shape[:2]} is smaller than one patch ({patch} pixels).")
    image = np.ascontiguousarray(image[:height, :width])

    device = vit.pos_embed.device
    tensor = torch.from_numpy(image).float().div(255).permute(2, 0, 1)
    tensor = (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    with temporary_setting_model_mode(vit, set_train=False):
        attention = vit.get_last_selfattention(tensor.unsqueeze(0).to(device))

    cls_to_patches = (
        attention[0, :, 0, vit.num_prefix_tokens :].mean(dim=0).reshape(1, 1, height // patch, width // patch)
    )
    heat = F.interpolate(cls_to_patches.float().cpu(), size=(height, width), mode="nearest")[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    heat_map = cv2.applyColorMap((heat.numpy() * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat_map = cv2.cvtColor(heat_map, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 0.5, heat_map, 0.5, 0)


__all__ = ["vis_vit"]
