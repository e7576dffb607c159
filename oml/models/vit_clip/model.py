"""The image tower of OpenAI CLIP built on timm's ``VisionTransformer``, saved under OpenAI's parameter names.

timm's ViT with ``pre_norm=True``, QuickGELU, LayerNorm eps 1e-5 and a bias-free patch convolution computes
CLIP's image tower; the final projection ``proj`` (a plain matrix, ``x @ proj``) is added here. The state
dict uses OpenAI's names (``class_embedding``, ``positional_embedding``, ``conv1``, ``ln_pre``,
``transformer.resblocks.{i}.{attn.in_proj_*, attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj, ln_2}``, ``ln_post``,
``proj``) through ``oml.models.state_dict_mapping``, so OpenAI, ruCLIP and OML checkpoints load as they are.
"""

from functools import partial
from typing import Any, Dict, Tuple

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from oml.models.state_dict_mapping import KeyMapping, KeyRule, attach_key_mapping
from oml.models.timm_vit import zoo_vit_args

# width, layers, heads, patch, input resolution, output dim
ARCHS: Dict[str, Dict[str, int]] = {
    "vitb16_224": {
        "width": 768,
        "layers": 12,
        "heads": 12,
        "patch_size": 16,
        "input_resolution": 224,
        "output_dim": 512,
    },
    "vitb32_224": {
        "width": 768,
        "layers": 12,
        "heads": 12,
        "patch_size": 32,
        "input_resolution": 224,
        "output_dim": 512,
    },
    "vitl14_224": {
        "width": 1024,
        "layers": 24,
        "heads": 16,
        "patch_size": 14,
        "input_resolution": 224,
        "output_dim": 768,
    },
    "vitl14_336": {
        "width": 1024,
        "layers": 24,
        "heads": 16,
        "patch_size": 14,
        "input_resolution": 336,
        "output_dim": 768,
    },
}

_BLOCK = "transformer.resblocks.{i}"
CLIP_KEY_MAPPING = KeyMapping(
    rules=[
        KeyRule("cls_token", "class_embedding", lambda x: x.reshape(-1), lambda x: x.reshape(1, 1, -1)),
        KeyRule("pos_embed", "positional_embedding", lambda x: x[0], lambda x: x.unsqueeze(0)),
        KeyRule("proj", "proj"),
        KeyRule("patch_embed.proj.weight", "conv1.weight"),
        KeyRule("norm_pre.{p}", "ln_pre.{p}"),
        KeyRule("blocks.{i}.norm1.{p}", f"{_BLOCK}.ln_1.{{p}}"),
        KeyRule("blocks.{i}.attn.qkv.{p}", f"{_BLOCK}.attn.in_proj_{{p}}"),
        KeyRule("blocks.{i}.attn.proj.{p}", f"{_BLOCK}.attn.out_proj.{{p}}"),
        KeyRule("blocks.{i}.norm2.{p}", f"{_BLOCK}.ln_2.{{p}}"),
        KeyRule("blocks.{i}.mlp.fc1.{p}", f"{_BLOCK}.mlp.c_fc.{{p}}"),
        KeyRule("blocks.{i}.mlp.fc2.{p}", f"{_BLOCK}.mlp.c_proj.{{p}}"),
        KeyRule("norm.{p}", "ln_post.{p}"),
    ],
)

_TOP_ORDER = ["class_embedding", "positional_embedding", "proj", "conv1", "ln_pre", "transformer", "ln_post"]
_BLOCK_ORDER = [
    "attn.in_proj_weight",
    "attn.in_proj_bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "ln_1.weight",
    "ln_1.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
]


def _openai_order(key: str) -> Tuple[int, int, int, str]:
    """OpenAI's registration order: the three parameters, then conv1, ln_pre, the blocks and ln_post."""
    head = key.split(".")[0]
    top = _TOP_ORDER.index(head) if head in _TOP_ORDER else len(_TOP_ORDER)
    if head == "transformer" and key.count(".") >= 3:
        _, _, index, rest = key.split(".", 3)
        inner = _BLOCK_ORDER.index(rest) if rest in _BLOCK_ORDER else len(_BLOCK_ORDER)
        return top, int(index) if index.isdigit() else 0, inner, key
    return top, 0, 0 if key.endswith("weight") else 1, key


CLIP_KEY_MAPPING.external_order = _openai_order


# pre-norm, QuickGELU, LayerNorm eps 1e-5, the CLS token after ln_post
_CLIP_VIT = {"qkv_bias": True, "pre_norm": True, "norm_layer": partial(nn.LayerNorm, eps=1e-5),
             "act_layer": "quick_gelu", "global_pool": "token", "class_token": True}  # fmt: skip


class CLIPVisionTransformer(VisionTransformer):
    """CLIP's image tower: ``proj(ln_post(CLS token))``, input ``[B, 3, R, R]`` with R the arch resolution."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        patch_size: int,
        input_resolution: int,
        output_dim: int,
        **kwargs: Any,
    ):
        super().__init__(**zoo_vit_args(input_resolution, patch_size, width, layers, heads, **_CLIP_VIT, **kwargs))
        self.input_resolution = input_resolution
        self.proj = nn.Parameter(width**-0.5 * torch.randn(width, output_dim, device=self.pos_embed.device))
        attach_key_mapping(self, CLIP_KEY_MAPPING)

    @property
    def output_dim(self) -> int:
        return self.proj.shape[-1]

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.input_resolution, self.input_resolution):
            raise ValueError(
                f"This CLIP image tower takes images [B, 3, {self.input_resolution}, {self.input_resolution}], "
                f"got a tensor of shape {tuple(x.shape)}."
            )
        return self.forward_head(self.forward_features(x), pre_logits=True) @ self.proj


def build_clip_vit(arch: str, **kwargs: Any) -> CLIPVisionTransformer:
    """CLIP's image tower for ``arch`` in ``ARCHS`` (random weights).

    ``vitl14_336`` is built for 336 x 336 inputs (577 positions), so OpenAI's ``ViT-L-14-336px`` loads;
    OML 0.4.4 built it at 224 by mistake.
    """
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r} for a CLIP ViT, expected one of {sorted(ARCHS)}.")
    return CLIPVisionTransformer(**ARCHS[arch], **kwargs)


__all__ = ["ARCHS", "CLIP_KEY_MAPPING", "CLIPVisionTransformer", "build_clip_vit"]
