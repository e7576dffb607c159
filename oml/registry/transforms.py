"""Transforms by name: ``TRANSFORMS_REGISTRY``, and the preprocessing that belongs to zoo weights."""

from typing import Any, Callable, Dict, Tuple

from oml.const import TCfg
from oml.registry._base import build, check_in_registry, parse_cfg
from oml.transforms.images.albumentations import (
    get_augs_albu,
    get_normalisation_albu,
    get_normalisation_resize_albu,
    get_normalisation_resize_albu_clip,
)
from oml.transforms.images.torchvision import (
    get_augs_hypvit,
    get_augs_torch,
    get_normalisation_resize_crop_torch,
    get_normalisation_resize_hypvit,
    get_normalisation_resize_torch,
    get_normalisation_torch,
    get_unicom_transforms,
)
from oml.transforms.images.utils import TTransforms, get_im_reader_for_transforms
from oml.utils.images.images import TImReader

TRANSFORMS_ALBU: Dict[str, Callable[..., TTransforms]] = {
    "augs_albu": get_augs_albu,
    "norm_albu": get_normalisation_albu,
    "norm_resize_albu": get_normalisation_resize_albu,
    "norm_resize_albu_clip": get_normalisation_resize_albu_clip,
}

TRANSFORMS_TORCH: Dict[str, Callable[..., TTransforms]] = {
    "augs_torch": get_augs_torch,
    "norm_torch": get_normalisation_torch,
    "norm_resize_torch": get_normalisation_resize_torch,
    "augs_hypvit_torch": get_augs_hypvit,
    "norm_resize_hypvit_torch": get_normalisation_resize_hypvit,
    "norm_resize_crop_torch": get_normalisation_resize_crop_torch,
    "unicom_transforms": get_unicom_transforms,
}

TRANSFORMS_REGISTRY: Dict[str, Callable[..., TTransforms]] = {**TRANSFORMS_ALBU, **TRANSFORMS_TORCH}


def get_transforms(name: str, **kwargs: Any) -> TTransforms:
    """Build the transforms registered as ``name`` (users may add their own functions to the registry).

    >>> get_transforms("norm_resize_torch", im_size=32).transforms[0].size
    (32, 32)
    """
    check_in_registry(name, TRANSFORMS_REGISTRY, "transforms")
    return build(TRANSFORMS_REGISTRY[name], "transforms", name, kwargs)


def get_transforms_by_cfg(cfg: TCfg) -> TTransforms:
    """Build transforms from ``{"name": ..., "args": {...}}`` (a dict or an OmegaConf config)."""
    name, args = parse_cfg(cfg, "transforms")
    return get_transforms(name, **args)


def get_transforms_for_pretrained(weights: str) -> Tuple[TTransforms, TImReader]:
    """The preprocessing that pretrained weights were trained with, and the image reader that suits it.

    ``weights`` is a zoo name (every ``pretrained_models`` entry of the extractors in ``EXTRACTORS_REGISTRY``
    carries its transforms, so weights and preprocessing cannot drift apart) or ``"timm:<tag>"`` (the
    transforms come from the tag's pretrained config in timm: mean, std, size, crop, interpolation).

    Raises:
        KeyError: if no extractor in the zoo has weights called ``weights`` (the message lists them).
    """
    from oml.models.timm_hub import parse_timm_weights, transforms_for_timm_tag
    from oml.models.zoo import as_entry
    from oml.registry.models import EXTRACTORS_REGISTRY

    tag = parse_timm_weights(weights)
    if tag is not None:
        transforms = get_transforms_by_cfg(transforms_for_timm_tag(tag).as_cfg())
        return transforms, get_im_reader_for_transforms(transforms)
    known = []
    for extractor_class in EXTRACTORS_REGISTRY.values():
        zoo = getattr(extractor_class, "pretrained_models", {})
        if weights in zoo:
            transforms = get_transforms_by_cfg(as_entry(zoo[weights], weights).transforms.as_cfg())
            return transforms, get_im_reader_for_transforms(transforms)
        known.extend(zoo)
    raise KeyError(
        f"There are no pretrained weights called {weights!r}. The available ones are: {sorted(known)}, and any "
        f"timm pretrained tag as 'timm:<tag>' (see timm.list_pretrained())."
    )


__all__ = [
    "TRANSFORMS_ALBU",
    "TRANSFORMS_TORCH",
    "TRANSFORMS_REGISTRY",
    "get_transforms",
    "get_transforms_by_cfg",
    "get_transforms_for_pretrained",
]
