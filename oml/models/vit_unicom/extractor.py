"""``ViTUnicomExtractor``: the Unicom ViTs of DeepGlint (B/32, B/16, L/14, L/14 at 336 pixels)."""

from functools import partial
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from torch import Tensor

from oml.interfaces.models import IExtractor
from oml.models.loading import build_with_weights, oml_prefix
from oml.models.utils import check_arch
from oml.models.vit_unicom.model import ARCHS, UnicomVisionTransformer, build_unicom_vit
from oml.models.zoo import PretrainedEntry, zoo_entry
from oml.utils.misc_torch import normalise_if

_UNICOM_URL = "https://github.com/deepglint/unicom/releases/download"


def _unicom(arch: str, release: str, fname: str, sha256: str, im_size: int) -> PretrainedEntry:
    # Unicom publishes sha256 digests, not md5
    return zoo_entry(f"{_UNICOM_URL}/{release}/{fname}", fname, {"arch": arch, "normalise_features": True},
                     "unicom_transforms", {"im_size": im_size}, sha256=sha256,
                     licence="see deepglint/unicom (the publisher)")  # fmt: skip


class ViTUnicomExtractor(IExtractor):
    """Unicom ViT: a flattening head over all tokens, 512-d for B/32 and 768-d for the others.

    Inputs must have the arch size (224, or 336 for ``vitl14_336px_unicom``). The zoo names equal the arch
    names; the official FP16 releases are checked with Unicom's sha256 digests and upcast to float32.

    Example (downloads Unicom's ViT-B/32)::

        extractor = ViTUnicomExtractor.from_pretrained("vitb32_unicom").eval()
        embeddings = extractor(images)  # images: [B, 3, 224, 224] -> [B, 512]
    """

    constructors: Dict[str, Callable[..., UnicomVisionTransformer]] = {
        arch: partial(build_unicom_vit, arch) for arch in ARCHS
    }

    pretrained_models: Dict[str, PretrainedEntry] = {
        "vitb32_unicom": _unicom("vitb32_unicom", "b32", "FP16-ViT-B-32.pt",
                                 "f9d5696a9b58dbbbefee2d31615ca59084f2895a0fdd2ca4c235e0f9b2793f7a", 224),
        "vitb16_unicom": _unicom("vitb16_unicom", "b16", "FP16-ViT-B-16.pt",
                                 "c04f324f7c3b4435667236ec6c0eca1cd62f9d64fbfc2d06f8e8e60e6497edef", 224),
        "vitl14_unicom": _unicom("vitl14_unicom", "l14", "FP16-ViT-L-14.pt",
                                 "ff3ab62ff782876460099e6e0ee17b73a7c01109de2fffd595f16f4129404bbd", 224),
        "vitl14_336px_unicom": _unicom("vitl14_336px_unicom", "l14_336px", "FP16-ViT-L-14-336px.pt",
                                       "3916ab5aed3b522fc90345be8b4457fe5dad60801ad2af5a6871c0c096e8d7ea", 336),
    }  # fmt: skip

    def __init__(
        self,
        weights: Optional[Union[Path, str]],
        arch: str,
        normalise_features: bool,
        use_gradient_ckpt: bool = True,
    ):
        """
        Args:
            weights: None (random weights), a name from ``pretrained_models`` or the path of a checkpoint
                (Unicom's release or an OML checkpoint; any prefix such as ``model.`` is removed).
            arch: one of ``vitb32_unicom``, ``vitb16_unicom``, ``vitl14_unicom``, ``vitl14_336px_unicom``.
            normalise_features: L2-normalise the output (every zoo entry uses True).
            use_gradient_ckpt: recompute the blocks in the backward pass to save memory when training
                (OML 0.4.4 always did); outputs are the same either way.
        """
        super().__init__()
        self.arch = check_arch(arch, ARCHS, type(self).__name__)
        self.normalise_features = normalise_features
        self.model = build_with_weights(self.constructors[arch], weights, self.pretrained_models,
                                        type(self).__name__, oml_prefix("norm.bias"))  # fmt: skip
        self.model.set_grad_checkpointing(use_gradient_ckpt)

    @property
    def feat_dim(self) -> int:
        return self.model.embedding_size

    def forward(self, x: Tensor) -> Tensor:
        return normalise_if(self.model(x), self.normalise_features)


__all__ = ["ViTUnicomExtractor"]
