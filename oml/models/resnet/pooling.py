"""Generalized-mean (GeM) pooling."""

from torch import Tensor, nn


class GEM(nn.Module):
    """``(mean over H, W of clamp(x, min=eps) ** p) ** (1 / p)``: ``[B, C, H, W] -> [B, C]``.

    ``p = 1`` is average pooling of the clamped input, large ``p`` tends to max pooling. ``p`` is a fixed
    number, not a parameter.

    >>> import torch
    >>> GEM(p=3.0)(torch.ones(2, 5, 4, 4)).shape
    torch.Size([2, 5])
    """

    def __init__(self, p: float, eps: float = 1e-6):
        super().__init__()
        if p <= 0:
            raise ValueError(f"GEM needs a positive power p, got p={p}.")
        self.p = float(p)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"GEM pools feature maps [B, C, H, W], got a tensor of shape {tuple(x.shape)}.")
        x = x.clamp(min=self.eps).pow(self.p)
        return x.flatten(2).mean(dim=-1).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"


__all__ = ["GEM"]
