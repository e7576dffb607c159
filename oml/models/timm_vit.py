"""What the ViTs of the zoo (DINO, DINOv2, CLIP, Unicom) share when they are built on timm's ``VisionTransformer``."""

from typing import Any, Dict


def zoo_vit_args(
    img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, **settings: Any
) -> Dict[str, Any]:
    """Arguments of timm's ``VisionTransformer``: the shape, an MLP ratio of 4 and no classifier head (the
    extractors return features), then the ``settings`` of one family (norms, activation, tokens, pooling).

    >>> zoo_vit_args(224, 16, 384, 12, 6, qkv_bias=True)["num_classes"]
    0
    """
    shape = {"img_size": img_size, "patch_size": patch_size, "embed_dim": embed_dim, "depth": depth}
    return {**shape, "num_heads": num_heads, "mlp_ratio": 4.0, "num_classes": 0, **settings}


__all__ = ["zoo_vit_args"]
