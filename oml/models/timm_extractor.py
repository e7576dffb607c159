"""``TimmExtractor``: any timm architecture as an extractor (its pooled features, without the classifier)."""

import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import timm
from torch import Tensor, nn

from oml.interfaces.models import IExtractor
from oml.models.checkpoint import load_state_dict_file, load_state_dict_strictly, resolve_weights
from oml.models.utils import TStateDict, init_on_meta, materialise, remove_criterion_in_state_dict
from oml.utils.misc_torch import normalise

_MIIL_URL = "https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ImageNet_21K_P/models"


def _miil(path: str, arch: str) -> Dict[str, Any]:
    # MIIL trained and evaluated these models on 224 x 224 images scaled to [0, 1], not normalised
    return {
        "url": [f"{_MIIL_URL}/{path}"],
        "hash": None,  # the model card publishes no checksum
        "fname": path.split("/")[-1],
        "init_args": {"arch": arch, "normalise_features": False},
        "transforms": {"name": "norm_resize_torch", "args": {"im_size": 224, "mean": [0.0] * 3, "std": [1.0] * 3}},
    }


def _unwrap(checkpoint: TStateDict) -> TStateDict:
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(checkpoint.get(key), dict):
            return dict(checkpoint[key])
    return checkpoint


class TimmExtractor(IExtractor):
    """Any architecture of ``timm`` returning its pooled features (``timm.create_model(arch, num_classes=0)``).

    Checkpoints may be timm state dicts (with or without the classifier, which is dropped), the originals
    that timm converts with the ``checkpoint_filter_fn`` of the architecture (e.g. MIIL's TResNets), or
    OML/Lightning checkpoints of this class (prefixes ``model.``, ``module.`` are removed).

    ``pretrained_models`` holds the ImageNet-21K-P backbones of MIIL (Ridnik et al., 2021) from the
    official model card. OFA-595 of that card is not offered: its architecture (Once-for-All) is not in
    timm. The card gives no checksums, so these downloads are not hash-checked (they are still read
    with ``weights_only=True``).

    >>> import torch
    >>> extractor = TimmExtractor(weights=None, arch="resnet18", normalise_features=True)
    >>> extractor(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """

    pretrained_models: Dict[str, Any] = {
        "mobilenetv3_large_100_miil_21k": _miil("mobilenetv3_large_100_miil_21k.pth", "mobilenetv3_large_100"),
        "resnet50_miil_21k": _miil("resnet50_miil_21k.pth", "resnet50"),
        "mixer_b16_224_miil_in21k": _miil("timm/mixer_b16_224_miil_in21k.pth", "mixer_b16_224"),
        "tresnet_m_miil_21k": _miil("tresnet_m_miil_21k.pth", "tresnet_m"),
        "tresnet_l_v2_miil_21k": _miil("tresnet_l_v2_miil_21k.pth", "tresnet_v2_l"),
        "vit_base_patch16_224_miil_21k": _miil("vit_base_patch16_224_miil_21k.pth", "vit_base_patch16_224_miil"),
    }

    def __init__(
        self,
        weights: Optional[Union[str, Path]],
        arch: str,
        normalise_features: bool = False,
        **timm_kwargs: Any,
    ):
        """
        Args:
            weights: None (random weights), a name from ``pretrained_models`` or the path of a checkpoint.
            arch: a timm model name (see ``timm.list_models()``); no weights are fetched by timm.
            normalise_features: L2-normalise the output.
            timm_kwargs: more arguments of ``timm.create_model`` (e.g. ``global_pool``, ``drop_path_rate``).
        """
        super().__init__()
        if not timm.is_model(arch.split(".")[0]):
            raise ValueError(f"Unknown timm arch {arch!r}; see timm.list_models() for the available ones.")
        self.arch = arch
        self.normalise_features = normalise_features
        with init_on_meta(weights is not None):
            self.model: nn.Module = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
        if weights is not None:
            materialise(self.model)
            self._load(resolve_weights(weights, self.pretrained_models, type(self).__name__))

    def _checkpoint_filter(self) -> Optional[Callable[..., TStateDict]]:
        return getattr(sys.modules[type(self.model).__module__], "checkpoint_filter_fn", None)

    def _strip_prefix(self, state_dict: TStateDict) -> TStateDict:
        own = self.model.state_dict()
        for prefix in ("", "model.", "module.", "model.model.", "model.module."):
            if any(key.startswith(prefix) and key[len(prefix) :] in own for key in state_dict):
                return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
        return state_dict

    def _load(self, path: Path) -> None:
        state_dict = _unwrap(remove_criterion_in_state_dict(load_state_dict_file(path)))
        state_dict = self._strip_prefix(state_dict)
        filter_fn = self._checkpoint_filter()
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, self.model)
        own = self.model.state_dict()
        classifiers = self.model.pretrained_cfg.get("classifier") or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        state_dict = {
            key: value
            for key, value in state_dict.items()
            if key in own or not any(key.startswith(f"{name}.") for name in classifiers)
        }
        load_state_dict_strictly(self.model, state_dict, source=str(path))

    @property
    def feat_dim(self) -> int:
        return int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.model(x)
        return normalise(x) if self.normalise_features else x


__all__ = ["TimmExtractor"]
