"""Postprocessors by name: ``POSTPROCESSORS_REGISTRY`` and its builders.

The ``pairwise_model`` and ``transforms`` arguments may be ``{name, args}`` configs themselves (built with
the pairwise models and transforms registries).
"""

from typing import Any, Dict, Type

from oml.const import TCfg
from oml.interfaces.retrieval import IDistancesPostprocessor
from oml.registry._base import build, check_in_registry, is_cfg, parse_cfg
from oml.registry.models import get_pairwise_model_by_cfg
from oml.registry.transforms import get_transforms_by_cfg
from oml.retrieval.postprocessors.pairwise import PairwiseEmbeddingsPostprocessor, PairwiseImagesPostprocessor

POSTPROCESSORS_REGISTRY: Dict[str, Type[IDistancesPostprocessor]] = {
    "pairwise_images": PairwiseImagesPostprocessor,
    "pairwise_embeddings": PairwiseEmbeddingsPostprocessor,
}


def get_postprocessor(name: str, **kwargs: Any) -> IDistancesPostprocessor:
    """Build the postprocessor registered as ``name``; nested ``pairwise_model`` / ``transforms`` configs are built.

    >>> model = {"name": "linear_siamese", "args": {"feat_dim": 4, "identity_init": True}}
    >>> get_postprocessor("pairwise_embeddings", top_n=3, pairwise_model=model, num_workers=0, batch_size=8)
    PairwiseEmbeddingsPostprocessor(top_n=3, model=LinearTrivialDistanceSiamese)
    """
    check_in_registry(name, POSTPROCESSORS_REGISTRY, "postprocessor")
    kwargs = dict(kwargs)
    if is_cfg(kwargs.get("pairwise_model")):
        kwargs["pairwise_model"] = get_pairwise_model_by_cfg(kwargs["pairwise_model"])
    if is_cfg(kwargs.get("transforms")):
        kwargs["transforms"] = get_transforms_by_cfg(kwargs["transforms"])
    return build(POSTPROCESSORS_REGISTRY[name], "postprocessor", name, kwargs)


def get_postprocessor_by_cfg(cfg: TCfg) -> IDistancesPostprocessor:
    """Build a postprocessor from ``{"name": ..., "args": {...}}`` (a dict or an OmegaConf config)."""
    name, args = parse_cfg(cfg, "postprocessor")
    return get_postprocessor(name, **args)


__all__ = ["POSTPROCESSORS_REGISTRY", "get_postprocessor", "get_postprocessor_by_cfg"]
