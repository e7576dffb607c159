"""Unicom's ViT built on timm's ``VisionTransformer``: no class token, ReLU6 MLPs and a flattening head.

timm's ViT with ``class_token=False``, ``qkv_bias=False``, ReLU6, LayerNorm eps 1e-5 and drop-path 0.1 has
exactly Unicom's parameter names (``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.*``, ``norm``); the
``feature`` head (flatten all tokens -> Linear -> BatchNorm1d -> Linear -> BatchNorm1d) is added here.
"""

from functools import partial
from typing import Any, Dict

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from oml.models.timm_vit import zoo_vit_args

ARCHS: Dict[str, Dict[str, int]] = {
    "vitb32_unicom": {"img_size": 224, "patch_size": 32, "embed_dim": 768, "depth": 12, "num_heads": 12,
                      "embedding_size": 512},
    "vitb16_unicom": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12,
                      "embedding_size": 768},
    "vitl14_unicom": {"img_size": 224, "patch_size": 14, "embed_dim": 1024, "depth": 24, "num_heads": 16,
                      "embedding_size": 768},
    "vitl14_336px_unicom": {"img_size": 336, "patch_size": 14, "embed_dim": 1024, "depth": 24, "num_heads": 16,
                            "embedding_size": 768},
}  # fmt: skip


# no class token, no qkv bias, ReLU6, LayerNorm eps 1e-5, all tokens kept for the flattening head
_UNICOM_VIT = {"qkv_bias": False, "class_token": False, "global_pool": "",
               "norm_layer": partial(nn.LayerNorm, eps=1e-5), "act_layer": nn.ReLU6}  # fmt: skip


class UnicomVisionTransformer(VisionTransformer):
    """Unicom's ViT: ``feature(flatten(norm(blocks(patches + pos_embed))))``, input of the arch size only."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        embedding_size: int,
        drop_path_rate: float = 0.1,
        **kwargs: Any,
    ):
        settings = {**_UNICOM_VIT, "drop_path_rate": drop_path_rate, **kwargs}
        super().__init__(**zoo_vit_args(img_size, patch_size, embed_dim, depth, num_heads, **settings))
        self.img_size = img_size
        tokens = self.patch_embed.num_patches
        device = self.pos_embed.device
        self.feature = nn.Sequential(
            nn.Linear(tokens * embed_dim, embed_dim, bias=False, device=device),
            nn.BatchNorm1d(embed_dim, eps=2e-5, device=device),
            nn.Linear(embed_dim, embedding_size, bias=False, device=device),
            nn.BatchNorm1d(embedding_size, eps=2e-5, device=device),
        )

    @property
    def embedding_size(self) -> int:
        return self.feature[-1].num_features

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"This Unicom ViT takes images [B, 3, {self.img_size}, {self.img_size}], "
                f"got a tensor of shape {tuple(x.shape)}."
            )
        tokens = self.forward_features(x)
        return self.feature(tokens.reshape(tokens.shape[0], -1))


def build_unicom_vit(arch: str, **kwargs: Any) -> UnicomVisionTransformer:
    """Unicom's ViT for ``arch`` in ``ARCHS`` (random weights)."""
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r} for a Unicom ViT, expected one of {sorted(ARCHS)}.")
    return UnicomVisionTransformer(**ARCHS[arch], **kwargs)


__all__ = ["ARCHS", "UnicomVisionTransformer", "build_unicom_vit"]
