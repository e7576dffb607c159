"""``TimmExtractor``: any timm architecture as an extractor (its pooled features, without the classifier)."""

import sys
from functools import partial
from pathlib import Path
from typing import Any, Dict, Optional, Union

import timm
from torch import Tensor, nn

from oml.interfaces.models import IExtractor
from oml.models.loading import build_with_weights, strip_known_prefix
from oml.models.timm_hub import create_timm_model_from_hub, parse_timm_weights
from oml.models.utils import TStateDict, unwrap_state_dict
from oml.models.zoo import PretrainedEntry, zoo_entry
from oml.utils.misc_torch import normalise

_MIIL_URL = "https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ImageNet_21K_P/models"
# OML's and Lightning's wrappers of a timm model
_PREFIXES = ("", "model.", "module.", "model.model.", "model.module.")


def _miil(path: str, arch: str) -> PretrainedEntry:
    # MIIL trained and evaluated these models on 224 x 224 images scaled to [0, 1], not normalised; the model
    # card publishes no checksum
    return zoo_entry(f"{_MIIL_URL}/{path}", path.split("/")[-1], {"arch": arch, "normalise_features": False},
                     "norm_resize_torch", {"im_size": 224, "mean": [0.0] * 3, "std": [1.0] * 3},
                     licence="see Alibaba-MIIL/ImageNet21K (the publisher)")  # fmt: skip


def _timm_wrappers(state_dict: TStateDict, module: nn.Module) -> TStateDict:
    """timm's releases keep the weights under ``"model"`` or ``"state_dict_ema"``."""
    return unwrap_state_dict(state_dict, keys=("model", "state_dict_ema"))


def _timm_filter(state_dict: TStateDict, module: nn.Module) -> TStateDict:
    """The arch's ``checkpoint_filter_fn`` (how timm converts the originals, e.g. MIIL's TResNets)."""
    filter_fn = getattr(sys.modules[type(module).__module__], "checkpoint_filter_fn", None)
    return state_dict if filter_fn is None else filter_fn(state_dict, module)


def _drop_classifier(state_dict: TStateDict, module: nn.Module) -> TStateDict:
    own = module.state_dict()
    classifiers = module.pretrained_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    return {key: value for key, value in state_dict.items()
            if key in own or not any(key.startswith(f"{name}.") for name in classifiers)}  # fmt: skip


def _create(arch: str, **timm_kwargs: Any) -> nn.Module:
    return timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)


class TimmExtractor(IExtractor):
    """Any architecture of ``timm`` returning its pooled features (``timm.create_model(arch, num_classes=0)``).

    Weights can be:

    * ``"timm:<tag>"``, any pretrained tag of timm (``timm.list_pretrained()``), e.g.
      ``"timm:vit_small_patch14_dinov2.lvd142m"``: fetched by timm from the Hugging Face Hub (or read from its
      cache; with ``HF_HUB_OFFLINE=1`` only from the cache), loaded strictly; ``arch`` may be omitted, and
      ``get_transforms_for_pretrained("timm:<tag>")`` gives the tag's preprocessing.
    * a name of ``pretrained_models``: the ImageNet-21K-P backbones of MIIL (Ridnik et al., 2021) from the
      official model card. OFA-595 of that card is not offered: its architecture (Once-for-All) is not in
      timm. The card gives no checksums, so these downloads are not hash-checked (they are still read with
      ``weights_only=True``).
    * the path of a checkpoint: a timm state dict (with or without the classifier, which is dropped), an
      original that timm converts with the ``checkpoint_filter_fn`` of the architecture (e.g. MIIL's
      TResNets), or an OML/Lightning checkpoint of this class (prefixes ``model.``, ``module.`` are removed).

    >>> import torch
    >>> extractor = TimmExtractor(weights=None, arch="resnet18", normalise_features=True)
    >>> extractor(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """

    pretrained_models: Dict[str, PretrainedEntry] = {
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
        arch: Optional[str] = None,
        normalise_features: bool = False,
        **timm_kwargs: Any,
    ):
        """
        Args:
            weights: None (random weights), ``"timm:<tag>"``, a name from ``pretrained_models`` or the path of a
                checkpoint.
            arch: a timm model name (see ``timm.list_models()``); with ``weights="timm:<tag>"`` it may be
                omitted (it is the tag's architecture then).
            normalise_features: L2-normalise the output.
            timm_kwargs: more arguments of ``timm.create_model`` (e.g. ``global_pool``, ``drop_path_rate``).
        """
        super().__init__()
        tag = parse_timm_weights(weights)
        if arch is None and tag is None:
            raise ValueError("TimmExtractor needs an arch unless weights is a timm pretrained tag 'timm:<tag>'.")
        arch = arch if arch is not None else str(tag)
        if not timm.is_model(arch.split(".")[0]):
            raise ValueError(f"Unknown timm arch {arch!r}; see timm.list_models() for the available ones.")
        if tag is not None and arch.split(".")[0] != tag.split(".")[0]:
            raise ValueError(f"arch={arch!r} is not the architecture of the weights {weights!r}.")
        self.arch = arch
        self.normalise_features = normalise_features
        if tag is not None:
            self.model: nn.Module = create_timm_model_from_hub(tag, **timm_kwargs)
        else:
            self.model = build_with_weights(partial(_create, arch, **timm_kwargs), weights, self.pretrained_models,
                                            type(self).__name__, _timm_wrappers, strip_known_prefix(_PREFIXES),
                                            _timm_filter, _drop_classifier)  # fmt: skip

    @property
    def feat_dim(self) -> int:
        return int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.model(x)
        return normalise(x) if self.normalise_features else x


__all__ = ["TimmExtractor"]
