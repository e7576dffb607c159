"""timm's pretrained tags (``"timm:<tag>"``, e.g. ``"timm:vit_small_patch14_dinov2.lvd142m"``) as weights.

The weights are fetched by timm's own loading from the Hugging Face Hub (``huggingface_hub``'s cache,
``HF_HUB_CACHE``; with ``HF_HUB_OFFLINE=1`` only the cache is read), the transforms come from the tag's
pretrained config (mean, std, input size, crop, interpolation).
"""

import math
from pathlib import Path
from typing import Any, Dict, Optional, Union

import timm
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from timm.models import get_pretrained_cfg
from torch import nn

from oml.models.zoo import TransformsSpec

TIMM_PREFIX = "timm:"


class HubWeightsError(FileNotFoundError):
    """The weights of a timm tag are neither in the Hugging Face cache nor downloadable (e.g. offline)."""


def parse_timm_weights(weights: Optional[Union[str, Path]]) -> Optional[str]:
    """The tag of ``weights = "timm:<tag>"``, None for any other value.

    >>> parse_timm_weights("timm:resnet50.a1_in1k"), parse_timm_weights("resnet50_moco_v2")
    ('resnet50.a1_in1k', None)
    """
    if isinstance(weights, str) and weights.startswith(TIMM_PREFIX):
        return weights[len(TIMM_PREFIX) :]
    return None


def timm_pretrained_cfg(tag: str) -> Dict[str, Any]:
    """The pretrained config timm has for ``tag`` (no network); a bare architecture means its default tag.

    Raises:
        ValueError: if timm has no such pretrained tag, or its weights are not on the Hugging Face Hub.
    """
    try:
        cfg = get_pretrained_cfg(tag, allow_unregistered=True)
    except RuntimeError:  # a known architecture with an unknown tag
        cfg = None
    if cfg is None:
        close = timm.list_pretrained(f"{tag.split('.')[0]}*")[:10]
        raise ValueError(f"timm has no pretrained tag {tag!r} (an architecture and a tag, e.g. "
                         f"'resnet50.a1_in1k'). Tags of this architecture: {close}.")  # fmt: skip
    cfg_dict = cfg.to_dict()
    if not cfg_dict.get("hf_hub_id"):
        url = cfg_dict.get("url")
        raise ValueError(
            f"The weights of the timm tag {tag!r} are not on the Hugging Face Hub (timm would download {url!r}): "
            f"download the file and pass its path as weights."
        )
    return cfg_dict


def transforms_for_timm_tag(tag: str) -> TransformsSpec:
    """timm's evaluation pipeline for ``tag`` as a ``norm_resize_crop_torch`` config: resize to
    ``floor(size / crop_pct)`` (the shorter side for ``crop_mode="center"``, both for ``"squash"``), centre
    crop ``size``, normalise with the tag's mean and std.

    Raises:
        ValueError: for tags with a non-square input or ``crop_mode="border"`` (not supported here).
    """
    cfg = timm_pretrained_cfg(tag)
    _, height, width = cfg["input_size"]
    crop_mode = cfg.get("crop_mode") or "center"
    if height != width or crop_mode not in ("center", "squash"):
        raise ValueError(f"The timm tag {tag!r} wants input {height}x{width} with crop_mode={crop_mode!r}; only "
                         f"square inputs with crop_mode 'center' or 'squash' are supported.")  # fmt: skip
    crop_pct = cfg.get("crop_pct") or 0.875  # timm's default
    args = {
        "im_size": math.floor(height / crop_pct),
        "crop_size": height,
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "interpolation": cfg.get("interpolation") or "bilinear",
        "keep_ratio": crop_mode == "center",
    }
    return TransformsSpec("norm_resize_crop_torch", args)


def _cache_help(tag: str, repo_id: str) -> str:
    cache = Path(hf_constants.HF_HUB_CACHE)
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    return (
        f"The weights of the timm tag {tag!r} (Hugging Face repo {repo_id!r}) are not in the Hugging Face cache "
        f"{cache} and could not be downloaded. To use them without network: on a machine with network run "
        f"`hf download {repo_id} model.safetensors --cache-dir <folder>` (or timm.create_model({tag!r}, "
        f"pretrained=True)), copy the folder {folder.name} from that cache to {folder}, and set HF_HUB_OFFLINE=1 "
        f"(HF_HUB_CACHE chooses another cache folder)."
    )


def create_timm_model_from_hub(tag: str, **timm_kwargs: Any) -> nn.Module:
    """``timm.create_model(tag, pretrained=True)`` without its classifier, loaded strictly.

    The model is built with the classifier of the pretrained weights so that timm loads every tensor with
    ``strict=True`` (timm loosens the check when the number of classes changes), then the classifier is removed.

    Raises:
        ValueError: for an unknown tag or one whose weights are not on the Hub.
        HubWeightsError: if the weights are neither in the cache nor downloadable; the message names the tag,
            the cache folder and how to place the files there.
    """
    cfg = timm_pretrained_cfg(tag)
    try:
        model = timm.create_model(tag, pretrained=True, num_classes=cfg.get("num_classes") or 0, **timm_kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise HubWeightsError(f"{_cache_help(tag, cfg['hf_hub_id'])} ({type(e).__name__}: {e})") from e
    model.reset_classifier(0)
    return model


__all__ = [
    "TIMM_PREFIX",
    "HubWeightsError",
    "parse_timm_weights",
    "timm_pretrained_cfg",
    "transforms_for_timm_tag",
    "create_timm_model_from_hub",
]
