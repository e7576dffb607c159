"""A plain re-implementation of DINO's and DINOv2's ViT forward, written from the papers' code (explicit attention),
working directly on a state dict in the official key layout."""

import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor


def _pos_embed(pos: Tensor, grid_h: int, grid_w: int, square: bool, offset: float, antialias: bool) -> Tensor:
    n, dim = pos.shape[1] - 1, pos.shape[2]
    if grid_h * grid_w == n and square:
        return pos
    side = int(math.sqrt(n))
    grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if offset:
        scale = ((grid_h + offset) / math.sqrt(n), (grid_w + offset) / math.sqrt(n))
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False, antialias=antialias)
    else:
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False, antialias=antialias)
    assert grid.shape[-2:] == (grid_h, grid_w)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def dino_reference(
    sd: Dict[str, Tensor], x: Tensor, patch: int, heads: int, offset: float = 0.1, antialias: bool = False
) -> Tensor:
    """DINO's (or DINOv2's: LayerScale ``ls{1,2}.gamma``, ``register_tokens``) forward, step by step; returns the
    CLS token after the final norm. ``offset``/``antialias``: the resize of the positional grid (DINOv2 with
    registers: 0 and True)."""
    batch, _, height, width = x.shape
    grid_h, grid_w = height // patch, width // patch
    x = x[:, :, : grid_h * patch, : grid_w * patch]
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([sd["cls_token"].expand(batch, -1, -1), tokens], dim=1)
    tokens = tokens + _pos_embed(sd["pos_embed"], grid_h, grid_w, height == width, offset, antialias)
    if "register_tokens" in sd:
        registers = sd["register_tokens"].expand(batch, -1, -1)
        tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)
    length, dim = tokens.shape[1], tokens.shape[2]
    head_dim = dim // heads
    depth = len({key.split(".")[1] for key in sd if key.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        ls1, ls2 = sd.get(p + "ls1.gamma", 1.0), sd.get(p + "ls2.gamma", 1.0)
        y = F.layer_norm(tokens, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * head_dim**-0.5).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, length, dim)
        tokens = tokens + ls1 * F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(tokens, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        hidden = F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        tokens = tokens + ls2 * F.linear(hidden, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    tokens = F.layer_norm(tokens, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return tokens[:, 0]


__all__ = ["dino_reference"]
