"""ArcFace: additive angular margin softmax loss."""

import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import MLP

from oml.functional.label_smoothing import label_smoothing
from oml.functional.losses import check_reduction, get_reduced
from oml.utils.checks import check_int, check_ints
from oml.utils.misc_torch import labels_to_tensor


class ArcFaceLoss(nn.Module):
    """ArcFace (`Deng et al., 2019 <https://arxiv.org/abs/1801.07698>`_): a classification loss on cosines.

    The logits are the cosines between the normalised features and the normalised class weights
    (``fc``). For the true class, the angle gets the margin: ``cos(theta + m)``, replaced by
    ``cos(theta) - m * sin(m)`` when ``theta + m`` would exceed pi (``cos(theta) <= -cos(m)``), so the
    logit stays monotonic. Logits are scaled by ``s`` and go into cross entropy, optionally with label
    smoothing (restricted to the classes of the same category if ``label2category`` is given).
    ``last_logs["accuracy"]``: batch accuracy of the plain cosine logits.

    Args:
        in_features: the feature dimension.
        num_classes: the number of classes; labels must be ``0 .. num_classes - 1``.
        m: the angular margin (radians).
        s: the scale of the logits.
        smoothing_epsilon: label smoothing power in ``[0, 1)``.
        label2category: class -> category; used by label smoothing (ignored when ``smoothing_epsilon == 0``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    >>> criterion = ArcFaceLoss(in_features=8, num_classes=3)
    >>> criterion(torch.randn(4, 8), torch.tensor([0, 1, 2, 2])).shape
    torch.Size([])
    """

    criterion_name = "arcface"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        m: float = 0.5,
        s: float = 64,
        smoothing_epsilon: float = 0,
        label2category: Optional[Dict[Any, Any]] = None,
        reduction: str = "mean",
    ):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.num_classes = check_int(num_classes, "num_classes")
        if not 0 <= smoothing_epsilon < 1:
            raise ValueError(f"smoothing_epsilon must be in [0, 1), got {smoothing_epsilon}.")
        check_reduction(reduction)
        self.m = m
        self.s = s
        self.smoothing_epsilon = smoothing_epsilon
        self.reduction = reduction
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = -math.cos(m)  # = cos(pi - m)
        self.mm = math.sin(m) * m  # = sin(pi - m) * m
        self.label2category = label2category
        categories = None
        if label2category is not None and smoothing_epsilon > 0:
            missing = [c for c in range(num_classes) if c not in label2category]
            if missing:
                raise ValueError(f"label2category has no category for class(es) {missing[:10]} (of {num_classes}).")
            names = [label2category[c] for c in range(num_classes)]
            index = {name: i for i, name in enumerate(dict.fromkeys(names))}
            categories = torch.tensor([index[name] for name in names], dtype=torch.long)
        self.register_buffer("categories", categories, persistent=False)
        self.last_logs: Dict[str, float] = {}

    def fc(self, x: Tensor) -> Tensor:
        """Cosines ``[B, num_classes]`` between the features and the class weights."""
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def _check_labels(self, x: Tensor, y: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Expected features [batch_size, {self.in_features}], got {tuple(x.shape)}.")
        if y.shape != (x.shape[0],):
            raise ValueError(f"Expected {x.shape[0]} labels, got a tensor of shape {tuple(y.shape)}.")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            bad = int(y[(y < 0) | (y >= self.num_classes)][0])
            raise ValueError(
                f"ArcFaceLoss got label {bad}, but labels must be in [0, {self.num_classes - 1}] "
                f"(num_classes={self.num_classes}). Remap the labels to 0..num_classes-1 or increase num_classes."
            )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        y = labels_to_tensor(y, device=x.device, allow_non_integer=False)
        self._check_labels(x, y)
        cos = self.fc(x).clamp(-1.0, 1.0)
        cos_y = cos.gather(1, y.unsqueeze(1))
        sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp_min(1e-12))
        phi = cos_y * self.cos_m - sin_y * self.sin_m
        phi = torch.where(cos_y > self.th, phi, cos_y - self.mm)
        logits = cos.scatter(1, y.unsqueeze(1), phi) * self.s
        if self.smoothing_epsilon > 0:
            target = label_smoothing(y, self.num_classes, self.smoothing_epsilon, self.categories)
            losses = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
        else:
            losses = F.cross_entropy(logits, y, reduction="none")
        self.last_logs = {"accuracy": float((cos.detach().argmax(dim=1) == y).float().mean())} if len(y) else {}
        return get_reduced(losses, self.reduction)


class ArcFaceLossWithMLP(nn.Module):
    """An MLP (``torchvision.ops.MLP``, ReLU between the layers) followed by ``ArcFaceLoss``.

    Args:
        in_features: the feature dimension.
        num_classes: the number of classes.
        mlp_features: sizes of the MLP layers; the last one is the input of ArcFace.
        m, s, smoothing_epsilon, label2category, reduction: as in ``ArcFaceLoss``.
    """

    criterion_name = "arcface"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        mlp_features: List[int],
        m: float = 0.5,
        s: float = 64,
        smoothing_epsilon: float = 0,
        label2category: Optional[Dict[Any, Any]] = None,
        reduction: str = "mean",
    ):
        super().__init__()
        mlp_features = list(check_ints(mlp_features, "mlp_features"))
        self.mlp = MLP(in_features, mlp_features)
        self.arcface = ArcFaceLoss(mlp_features[-1], num_classes, m, s, smoothing_epsilon, label2category, reduction)

    @property
    def last_logs(self) -> Dict[str, float]:
        return self.arcface.last_logs

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.arcface(self.mlp(x), y)


__all__ = ["ArcFaceLoss", "ArcFaceLossWithMLP"]
