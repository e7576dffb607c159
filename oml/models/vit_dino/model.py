"""DINO's and DINOv2's ViTs built on timm's ``VisionTransformer``, with their rules for the positional embedding.

timm's ViT with DINO's settings has exactly DINO's parameter names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so DINO and
OML checkpoints load as they are. DINOv2 (Oquab et al., 2023) adds LayerScale (``blocks.{i}.ls1.gamma``,
``ls2.gamma``, timm's names too), a ``mask_token`` used only in its training, a 37 x 37 positional grid (518
pixels at patch 14) and, for the ``_reg`` archs, 4 ``register_tokens`` (Darcet et al., 2024) that get no
positional embedding. These are parameters of the model under the official names, so its state dict is the
layout of Meta's releases and they load strictly. (timm stores the registered models in another layout: it
folds the class position into ``cls_token`` and renames ``register_tokens`` to ``reg_token``.)

What differs from timm and is implemented here:

* inputs whose sides are not multiples of the patch are cropped (DINO ignores the remainder; timm refuses);
* at any grid other than the native one the positional embedding is resized as DINO and DINOv2 do it:
  bicubic, ``scale_factor=(g + 0.1) / sqrt(N)``, no antialiasing (DINO, DINOv2); bicubic to the grid size
  with antialiasing (DINOv2 with registers). timm resizes to a size, always with antialiasing.

timm's fused attention (``scaled_dot_product_attention``) is used: it differs from the explicit softmax of
the originals by float rounding only (< 1e-5).
"""

import math
from functools import partial
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from oml.models.timm_vit import zoo_vit_args

# any input size (cropped to whole patches), the CLS token after the final norm
_DINO_VIT = {"qkv_bias": True, "global_pool": "token", "class_token": True, "dynamic_img_size": True}
# DINOv2's hub models: 518-pixel grid, LayerScale; with registers the grid is resized by size with antialiasing
_DINOV2 = {"img_size": 518, "init_values": 1.0, "with_mask_token": True}
_DINOV2_REG = {**_DINOV2, "num_register_tokens": 4, "interpolate_offset": 0.0, "interpolate_antialias": True}
_SIZES = {
    "s": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "b": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "l": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}

ARCHS: Dict[str, Dict[str, Any]] = {
    **{f"vit{size}{patch}": {"patch_size": patch, **_SIZES[size]} for size in "sb" for patch in (16, 8)},
    **{f"vit{size}14": {"patch_size": 14, **_SIZES[size], **_DINOV2} for size in "sbl"},
    **{f"vit{size}14_reg": {"patch_size": 14, **_SIZES[size], **_DINOV2_REG} for size in "sbl"},
}
DINOV2_ARCHS = tuple(arch for arch in ARCHS if "14" in arch)


class DinoVisionTransformer(VisionTransformer):
    """timm's ViT with DINO's (or DINOv2's) input cropping, positional embedding and tokens; returns the CLS token.

    Args:
        patch_size, embed_dim, depth, num_heads, img_size: the architecture (``img_size`` sets the native grid).
        init_values: LayerScale's initial value (DINOv2), None for none (DINO).
        num_register_tokens: register tokens put after the CLS token, after the positional embedding is added.
        interpolate_offset: DINO's offset in the scale factor of the resize; 0 resizes to the grid size.
        interpolate_antialias: antialias the bicubic resize (DINOv2 with registers).
        with_mask_token: hold DINOv2's ``mask_token`` (unused at inference) so that its releases load strictly.
    """

    def __init__(
        self,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        img_size: int = 224,
        init_values: Optional[float] = None,
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        with_mask_token: bool = False,
        **kwargs: Any,
    ):
        settings = {**_DINO_VIT, "init_values": init_values, **kwargs}
        super().__init__(**zoo_vit_args(img_size, patch_size, embed_dim, depth, num_heads, **settings))
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        device = self.pos_embed.device
        self.register_tokens: Optional[nn.Parameter] = None
        if num_register_tokens > 0:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim, device=device))
        self.num_prefix_tokens = 1 + num_register_tokens  # timm's name: tokens before the patches
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, device=device)) if with_mask_token else None

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
        if self.interpolate_offset:
            offset = self.interpolate_offset
            resize: Dict[str, Any] = {"scale_factor": ((grid_h + offset) / side, (grid_w + offset) / side)}
        else:
            resize = {"size": (grid_h, grid_w)}
        patch_pos = F.interpolate(
            patch_pos, mode="bicubic", align_corners=False, antialias=self.interpolate_antialias, **resize
        )
        if tuple(patch_pos.shape[-2:]) != (grid_h, grid_w):
            raise RuntimeError(
                f"Interpolated a positional grid of {tuple(patch_pos.shape[-2:])}, not {grid_h, grid_w}."
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([class_pos, patch_pos], dim=1)

    def _add_tokens(self, patches: Tensor, same_sides: bool, grid_h: int, grid_w: int) -> Tensor:
        """CLS token + patches ``[B, gh * gw, D]`` + positional embedding, then the registers after the CLS token."""
        x = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        x = x + self.interpolate_pos_encoding(grid_h, grid_w, same_sides=same_sides)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        return x

    def _pos_embed(self, x: Tensor) -> Tensor:
        # x: [B, gh, gw, D] from the patch embedding (timm's entry point, used by forward_intermediates)
        batch, grid_h, grid_w, dim = x.shape
        patches = x.reshape(batch, grid_h * grid_w, dim)
        return self.pos_drop(self._add_tokens(patches, same_sides=grid_h == grid_w, grid_h=grid_h, grid_w=grid_w))

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """Crop ``x [B, 3, H, W]`` to whole patches, embed, add the CLS token, the positional embedding and the
        register tokens."""
        if x.ndim != 4:
            raise ValueError(f"Expected images [B, C, H, W], got a tensor of shape {tuple(x.shape)}.")
        height, width = int(x.shape[-2]), int(x.shape[-1])  # python ints, also when traced: sizes are fixed
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        if grid_h == 0 or grid_w == 0:
            raise ValueError(f"The image {height}x{width} is smaller than one patch ({self.patch_size} pixels).")
        x = self.patch_embed(x[..., : grid_h * self.patch_size, : grid_w * self.patch_size])
        patches = x.reshape(x.shape[0], grid_h * grid_w, x.shape[-1])
        x = self._add_tokens(patches, same_sides=height == width, grid_h=grid_h, grid_w=grid_w)
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
        """Attention weights ``[B, heads, N, N]`` of the last block (N = ``num_prefix_tokens`` + number of patches)."""
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
    """DINO's or DINOv2's ViT for ``arch`` in ``ARCHS`` (random weights)."""
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r} for a DINO ViT, expected one of {sorted(ARCHS)}.")
    return DinoVisionTransformer(**ARCHS[arch], **kwargs)


CONSTRUCTORS: Dict[str, Callable[..., DinoVisionTransformer]] = {arch: partial(build_dino_vit, arch) for arch in ARCHS}

# OML 0.4.4's names of the DINO constructors
vits16, vits8, vitb16, vitb8 = (CONSTRUCTORS[arch] for arch in ("vits16", "vits8", "vitb16", "vitb8"))

__all__ = ["ARCHS", "DINOV2_ARCHS", "CONSTRUCTORS", "DinoVisionTransformer", "build_dino_vit",
           "vits16", "vits8", "vitb16", "vitb8"]  # fmt: skip
