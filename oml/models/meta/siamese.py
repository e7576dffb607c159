"""Pairwise models: distances between embeddings, and STIR's siamese ViT over concatenated images."""

from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor, nn
from torchvision.ops import MLP

from oml.interfaces.models import IExtractor, IFreezable, IPairwiseModel
from oml.models.loading import load_weights, oml_prefix
from oml.models.zoo import PretrainedEntry
from oml.utils.misc_torch import elementwise_dist


class LinearTrivialDistanceSiamese(IPairwiseModel):
    """``|| W x1 - W x2 ||_2 + output_bias`` with a shared bias-free linear map ``W`` (``proj``).

    >>> import torch
    >>> model = LinearTrivialDistanceSiamese(feat_dim=4, identity_init=True)
    >>> model(torch.zeros(1, 4), torch.ones(1, 4))
    tensor([2.], grad_fn=<AddBackward0>)
    """

    def __init__(self, feat_dim: int, identity_init: bool, output_bias: float = 0.0):
        """
        Args:
            feat_dim: size of the input embeddings.
            identity_init: start from ``W = I`` (the plain Euclidean distance).
            output_bias: a constant added to the distance.
        """
        super().__init__()
        if feat_dim <= 0:
            raise ValueError(f"feat_dim must be positive, got {feat_dim}.")
        self.feat_dim = feat_dim
        self.output_bias = output_bias
        self.proj = nn.Linear(feat_dim, feat_dim, bias=False)
        if identity_init:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(feat_dim))

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return elementwise_dist(self.proj(x1), self.proj(x2), p=2) + self.output_bias

    def predict(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.forward(x1, x2)


class TrivialDistanceSiamese(IPairwiseModel):
    """``|| extractor(x1) - extractor(x2) ||_2 + output_bias`` (no parameters of its own)."""

    pretrained_models: Dict[str, PretrainedEntry] = {}

    def __init__(self, extractor: IExtractor, output_bias: float = 0.0):
        super().__init__()
        self.extractor = extractor
        self.output_bias = output_bias

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return elementwise_dist(self.extractor(x1), self.extractor(x2), p=2) + self.output_bias

    def predict(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.forward(x1, x2)


class ConcatSiamese(IPairwiseModel, IFreezable):
    """STIR's re-ranker: the two images stacked vertically (``[B, C, 2H, W]``) go once through the extractor,
    then an MLP head gives one logit per pair (bigger means less similar).

    The head is torchvision's ``MLP(feat_dim, [*mlp_hidden_dims, 1])`` with Sigmoid activations and dropout
    0.5, whose last linear layer has no bias and is not followed by dropout. ``predict`` returns the
    probabilities (averaged over both orders with ``use_tta``).

    >>> import torch
    >>> from oml.models.resnet.extractor import ResnetExtractor
    >>> extractor = ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)
    >>> model = ConcatSiamese(extractor, mlp_hidden_dims=[16]).eval()
    >>> model.predict(torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)).shape
    torch.Size([3])
    """

    pretrained_models: Dict[str, PretrainedEntry] = {}

    def __init__(
        self,
        extractor: IExtractor,
        mlp_hidden_dims: List[int],
        use_tta: bool = False,
        weights: Optional[Union[str, Path]] = None,
    ):
        """
        Args:
            extractor: the backbone; it must accept images twice as high as usual.
            mlp_hidden_dims: hidden sizes of the head (may be empty: then the head is one linear layer).
            use_tta: in ``predict``, average over both orders of the pair.
            weights: None or the path of a checkpoint of the whole model (``extractor.*``, ``head.*``; any
                prefix before ``extractor.`` is removed, and so are the weights of a loss saved with it, which
                OML did not drop for this model).
        """
        super().__init__()
        self.extractor = extractor
        self.use_tta = use_tta
        self.train_backbone = True
        head = MLP(
            in_channels=extractor.feat_dim,
            hidden_channels=[*mlp_hidden_dims, 1],
            activation_layer=nn.Sigmoid,
            dropout=0.5,
            inplace=None,
        )
        head[-2] = nn.Linear(head[-2].in_features, 1, bias=False)
        head[-1] = nn.Identity()
        self.head = head
        if weights is not None:
            load_weights(self, weights, self.pretrained_models, type(self).__name__, oml_prefix("extractor."))

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        if x1.shape != x2.shape:
            raise ValueError(f"The two batches of a pair must have the same shape, got {tuple(x1.shape)} and "
                             f"{tuple(x2.shape)}.")  # fmt: skip
        x = torch.concat([x1, x2], dim=2)
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            x = self.extractor(x)
        return self.head(x).view(len(x))

    def predict(self, x1: Tensor, x2: Tensor) -> Tensor:
        scores = torch.sigmoid(self.forward(x1, x2))
        if self.use_tta:
            scores = (scores + torch.sigmoid(self.forward(x2, x1))) / 2
        return scores

    def freeze(self) -> None:
        self.train_backbone = False

    def unfreeze(self) -> None:
        self.train_backbone = True


__all__ = ["LinearTrivialDistanceSiamese", "TrivialDistanceSiamese", "ConcatSiamese"]
