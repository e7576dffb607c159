"""``ExtractorWithMLP``: any extractor followed by an MLP projection."""

from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor
from torchvision.ops import MLP

from oml.const import STORAGE_CKPTS
from oml.interfaces.models import IExtractor, IFreezable
from oml.models.loading import load_weights, oml_prefix
from oml.models.vit_dino.extractor import ViTExtractor
from oml.models.zoo import PretrainedEntry, zoo_entry


def _random_vits16() -> ViTExtractor:
    return ViTExtractor(None, "vits16", normalise_features=False, use_multi_scale=False)


class ExtractorWithMLP(IExtractor, IFreezable):
    """``MLP(extractor(x))`` with torchvision's ``MLP`` (ReLU between the layers, none after the last one).

    The output is not normalised (only the inner extractor's own setting applies). ``freeze()`` stops the
    gradients of the backbone (only the projection trains), ``unfreeze()`` lets them flow again.

    >>> import torch
    >>> from oml.models.resnet.extractor import ResnetExtractor
    >>> backbone = ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)
    >>> extractor = ExtractorWithMLP(backbone, mlp_features=[64, 32])
    >>> extractor(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 32])
    """

    pretrained_models: Dict[str, PretrainedEntry] = {
        "vits16_224_mlp_384_inshop": zoo_entry(
            f"{STORAGE_CKPTS}/inshop/vits16_224_mlp_384_inshop.ckpt",
            "vits16_224_mlp_384_inshop.ckpt",
            {"extractor_creator": _random_vits16, "mlp_features": [384], "train_backbone": True},
            "norm_resize_hypvit_torch",
            {"im_size": 256, "crop_size": 224},
            md5="35244966",
            licence="Apache-2.0 (OML's checkpoint)",
        )
    }

    def __init__(
        self,
        extractor: IExtractor,
        mlp_features: List[int],
        weights: Optional[Union[str, Path]] = None,
        train_backbone: bool = False,
    ):
        """
        Args:
            extractor: the backbone.
            mlp_features: output sizes of the layers; the last one is ``feat_dim``.
            weights: None, a name from ``pretrained_models`` or the path of a checkpoint of the whole model
                (keys ``extractor.*`` and ``projection.*``, any prefix before ``extractor.`` is removed).
            train_backbone: let gradients flow into the backbone.
        """
        super().__init__()
        if not isinstance(extractor, IExtractor):
            raise TypeError(f"extractor must be an IExtractor, got {type(extractor).__name__}.")
        if not mlp_features or any(int(size) <= 0 for size in mlp_features):
            raise ValueError(f"mlp_features must be a non-empty list of positive sizes, got {mlp_features}.")
        self.extractor = extractor
        self.mlp_features = list(mlp_features)
        self.train_backbone = train_backbone
        self.projection = MLP(self.extractor.feat_dim, self.mlp_features)
        if weights is not None:
            load_weights(self, weights, self.pretrained_models, type(self).__name__, oml_prefix("extractor."))

    @classmethod
    def from_pretrained(cls, weights: str) -> "ExtractorWithMLP":
        """Build the zoo model ``weights``: its backbone from ``extractor_creator``, then load the weights."""
        if weights not in cls.pretrained_models:
            raise KeyError(
                f"There is no pretrained model {weights!r} for {cls.__name__}. "
                f"The available ones are: {sorted(cls.pretrained_models)}."
            )
        init_args = dict(cls.pretrained_models[weights]["init_args"])  # a copy: the zoo stays usable
        extractor = init_args.pop("extractor_creator")()
        return cls(extractor=extractor, weights=weights, **init_args)

    @property
    def feat_dim(self) -> int:
        return self.mlp_features[-1]

    def forward(self, x: Tensor) -> Tensor:
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            features = self.extractor(x)
        return self.projection(features)

    def freeze(self) -> None:
        self.train_backbone = False

    def unfreeze(self) -> None:
        self.train_backbone = True


__all__ = ["ExtractorWithMLP"]
