"""DINO's ViT built on timm's ``VisionTransformer``, with DINO's rule for resizing the positional embedding.

timm's ViT with DINO's settings has exactly DINO's parameter names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so DINO and
OML checkpoints load as they are. Two things differ from timm and are implemented here:

* inputs whose sides are not multiples of the patch are cropped (DINO ignores the remainder; timm refuses);
* at any grid other than the native one the positional embedding is resized as DINO does it: bicubic,
  ``scale_factor=(g + 0.1) / sqrt(N)``, no antialiasing (timm resizes to a size, with antialiasing).

timm's fused attention (``scaled_dot_product_attention``) is used: it differs from DINO's explicit
softmax by float rounding only (< 1e-5).
"""

import math
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

ARCHS: Dict[str, Dict[str, int]] = {
    "vits16": {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "vits8": {"patch_size": 8, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "vitb16": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "vitb8": {"patch_size": 8, "embed_dim": 768, "depth": 12, "num_heads": 12},
}


class DinoVisionTransformer(VisionTransformer):
    """timm's ViT with DINO's input cropping and positional-embedding interpolation; returns the CLS token."""

    def __init__(self, patch_size: int, embed_dim: int, depth: int, num_heads: int, **kwargs: Any):
        super().__init__(
            img_size=224,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            num_classes=0,
            global_pool="token",
            class_token=True,
            dynamic_img_size=True,
            **kwargs,
        )

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size[0]

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int, same_sides: bool) -> Tensor:
        """The positional embedding ``[1, 1 + grid_h * grid_w, D]`` for a ``grid_h x grid_w`` patch grid.

        ``same_sides`` tells whether the input image was square: DINO keeps the embedding unchanged only for
        a square input with the native number of patches.
        """
        num_patches = self.pos_embed.shape[1] - 1
        if grid_h * grid_w == num_patches and same_sides:
            return self.pos_embed
        side = int(math.sqrt(num_patches))
        dim = self.pos_embed.shape[-1]
        class_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos,
            scale_factor=((grid_h + 0.1) / math.sqrt(num_patches), (grid_w + 0.1) / math.sqrt(num_patches)),
            mode="bicubic",
            align_corners=False,
        )
        if tuple(patch_pos.shape[-2:]) != (grid_h, grid_w):
            raise RuntimeError(
                f"Interpolated a positional grid of {tuple(patch_pos.shape[-2:])}, not {grid_h, grid_w}."
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([class_pos, patch_pos], dim=1)

    def _pos_embed(self, x: Tensor) -> Tensor:
        # x: [B, gh, gw, D] from the patch embedding (timm's entry point, used by forward_intermediates)
        batch, grid_h, grid_w, dim = x.shape
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), x.reshape(batch, grid_h * grid_w, dim)], dim=1)
        return self.pos_drop(tokens + self.interpolate_pos_encoding(grid_h, grid_w, same_sides=grid_h == grid_w))

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """Crop ``x [B, 3, H, W]`` to whole patches, embed, add the CLS token and the positional embedding."""
        if x.ndim != 4:
            raise ValueError(f"Expected images [B, C, H, W], got a tensor of shape {tuple(x.shape)}.")
        height, width = int(x.shape[-2]), int(x.shape[-1])  # python ints, also when traced: sizes are fixed
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        if grid_h == 0 or grid_w == 0:
            raise ValueError(f"The image {height}x{width} is smaller than one patch ({self.patch_size} pixels).")
        x = x[..., : grid_h * self.patch_size, : grid_w * self.patch_size]
        x = self.patch_embed(x)
        batch, dim = x.shape[0], x.shape[-1]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x.reshape(batch, grid_h * grid_w, dim)], dim=1)
        x = x + self.interpolate_pos_encoding(grid_h, grid_w, same_sides=height == width)
        return self.norm_pre(self.patch_drop(self.pos_drop(x)))

    def forward_features(self, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        x = self.prepare_tokens(x)
        if attn_mask is not None or is_causal:
            for block in self.blocks:
                x = block(x, attn_mask=attn_mask, is_causal=is_causal)
        elif self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models._manipulate import checkpoint_seq

            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    @torch.no_grad()
    def get_last_selfattention(self, x: Tensor) -> Tensor:
        """Attention weights ``[B, heads, N, N]`` of the last block (N = 1 + number of patches)."""
        x = self.prepare_tokens(x)
        for block in self.blocks[:-1]:
            x = block(x)
        last = self.blocks[-1]
        attn = last.attn
        tokens = last.norm1(x)
        batch, length, _ = tokens.shape
        qkv = attn.qkv(tokens).reshape(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def build_dino_vit(arch: str, **kwargs: Any) -> DinoVisionTransformer:
    """DINO's ViT for ``arch`` in ``ARCHS`` (random weights)."""
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r} for a DINO ViT, expected one of {sorted(ARCHS)}.")
    return DinoVisionTransformer(**ARCHS[arch], **kwargs)


def vits16(**kwargs: Any) -> DinoVisionTransformer:
    """ViT-S/16 (384-d)."""
    return build_dino_vit("vits16", **kwargs)


def vits8(**kwargs: Any) -> DinoVisionTransformer:
    """ViT-S/8 (384-d)."""
    return build_dino_vit("vits8", **kwargs)


def vitb16(**kwargs: Any) -> DinoVisionTransformer:
    """ViT-B/16 (768-d)."""
    return build_dino_vit("vitb16", **kwargs)


def vitb8(**kwargs: Any) -> DinoVisionTransformer:
    """ViT-B/8 (768-d)."""
    return build_dino_vit("vitb8", **kwargs)


__all__ = ["ARCHS", "DinoVisionTransformer", "build_dino_vit", "vits16", "vits8", "vitb16", "vitb8"]
