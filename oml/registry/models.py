"""Models by name: ``EXTRACTORS_REGISTRY``, ``PAIRWISE_MODELS_REGISTRY`` and their builders.

Configs are ``{"name": ..., "args": {...}}``; an ``extractor`` argument may itself be such a config
(``extractor_with_mlp``, ``concat_siamese``, ``trivial_distance_siamese``).
"""

from typing import Any, Dict, Type

from oml.const import TCfg
from oml.interfaces.models import IExtractor, IPairwiseModel
from oml.models.meta.projection import ExtractorWithMLP
from oml.models.meta.siamese import ConcatSiamese, LinearTrivialDistanceSiamese, TrivialDistanceSiamese
from oml.models.resnet.extractor import ResnetExtractor
from oml.models.timm_extractor import TimmExtractor
from oml.models.vit_clip.extractor import ViTCLIPExtractor
from oml.models.vit_dino.extractor import ViTExtractor
from oml.models.vit_unicom.extractor import ViTUnicomExtractor
from oml.registry._base import build, check_in_registry, is_cfg, parse_cfg

EXTRACTORS_REGISTRY: Dict[str, Type[IExtractor]] = {
    "resnet": ResnetExtractor,
    "vit": ViTExtractor,
    "vit_clip": ViTCLIPExtractor,
    "vit_unicom": ViTUnicomExtractor,
    "extractor_with_mlp": ExtractorWithMLP,
    "timm": TimmExtractor,
}

PAIRWISE_MODELS_REGISTRY: Dict[str, Type[IPairwiseModel]] = {
    "linear_siamese": LinearTrivialDistanceSiamese,
    "concat_siamese": ConcatSiamese,
    "trivial_distance_siamese": TrivialDistanceSiamese,
}

MODELS_REGISTRY = EXTRACTORS_REGISTRY  # the name used by OML's older README


def _with_nested_extractor(kind: str, name: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Build an ``extractor`` given as a config; refuse weights given both for the outer and the inner model."""
    kwargs = dict(kwargs)
    inner = kwargs.get("extractor")
    if is_cfg(inner):
        inner_name, inner_args = parse_cfg(inner, "extractor")
        if kwargs.get("weights") is not None and inner_args.get("weights") is not None:
            raise ValueError(
                f"The {kind} {name!r} got weights both for itself ({kwargs['weights']!r}) and for its inner extractor "
                f"({inner_args['weights']!r}). The outer checkpoint holds the inner extractor too: set one of them "
                f"to null."
            )
        kwargs["extractor"] = get_extractor(inner_name, **inner_args)
    return kwargs


def _get_model(kind: str, registry: Dict[str, Type[Any]], name: str, kwargs: Dict[str, Any]) -> Any:
    check_in_registry(name, registry, kind)
    return build(registry[name], kind, name, _with_nested_extractor(kind, name, kwargs))


def get_extractor(model_name: str, **kwargs: Any) -> IExtractor:
    """Build the extractor registered as ``model_name`` with ``kwargs`` (a nested ``extractor`` may be a config).

    >>> args = {"arch": "resnet18", "gem_p": None, "remove_fc": True, "normalise_features": False, "weights": None}
    >>> get_extractor("resnet", **args).feat_dim
    512
    """
    return _get_model("extractor", EXTRACTORS_REGISTRY, model_name, kwargs)


def get_extractor_by_cfg(cfg: TCfg) -> IExtractor:
    """Build an extractor from ``{"name": ..., "args": {...}}`` (a dict or an OmegaConf config)."""
    name, args = parse_cfg(cfg, "extractor")
    return get_extractor(name, **args)


def get_pairwise_model(model_name: str, **kwargs: Any) -> IPairwiseModel:
    """Build the pairwise model registered as ``model_name`` (a nested ``extractor`` may be a config).

    >>> get_pairwise_model("linear_siamese", feat_dim=8, identity_init=True).proj.weight.shape
    torch.Size([8, 8])
    """
    return _get_model("pairwise model", PAIRWISE_MODELS_REGISTRY, model_name, kwargs)


def get_pairwise_model_by_cfg(cfg: TCfg) -> IPairwiseModel:
    """Build a pairwise model from ``{"name": ..., "args": {...}}`` (a dict or an OmegaConf config)."""
    name, args = parse_cfg(cfg, "pairwise model")
    return get_pairwise_model(name, **args)


__all__ = [
    "EXTRACTORS_REGISTRY",
    "PAIRWISE_MODELS_REGISTRY",
    "MODELS_REGISTRY",
    "get_extractor",
    "get_extractor_by_cfg",
    "get_pairwise_model",
    "get_pairwise_model_by_cfg",
]
