"""``ViTCLIPExtractor``: the image tower of OpenAI CLIP and Sber ruCLIP."""

from functools import partial
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from torch import Tensor

from oml.interfaces.models import IExtractor
from oml.models.loading import build_with_weights, cut_through, keep_own_keys
from oml.models.utils import check_arch
from oml.models.vit_clip.model import ARCHS, CLIPVisionTransformer, build_clip_vit
from oml.models.zoo import PretrainedEntry, zoo_entry
from oml.utils.misc_torch import normalise_if

_OPENAI_URL = "https://openaipublic.azureedge.net/clip/models"
_SBER_URL = "https://huggingface.co/sberbank-ai"


def _clip(name: str, url: str, md5: str, arch: str, im_size: int, **more: str) -> PretrainedEntry:
    return zoo_entry(url, f"{name}.ckpt", {"arch": arch, "normalise_features": False}, "norm_resize_albu_clip",
                     {"im_size": im_size}, md5=md5, **more)  # fmt: skip


def _openai(name: str, digest: str, file: str, md5: str, arch: str, im_size: int = 224) -> PretrainedEntry:
    return _clip(name, f"{_OPENAI_URL}/{digest}/{file}", md5, arch, im_size, torchscript_submodule="visual",
                 licence="MIT (OpenAI, openai/CLIP)")  # fmt: skip


def _sber(name: str, repo: str, md5: str, arch: str) -> PretrainedEntry:
    return _clip(name, f"{_SBER_URL}/{repo}/resolve/main/pytorch_model.bin", md5, arch, 224,
                 licence="Apache-2.0 (Sber AI, ai-forever/ru-clip)")  # fmt: skip


class ViTCLIPExtractor(IExtractor):
    """The CLIP image tower: ``ln_post(CLS token) @ proj``, 512-d for B/16 and B/32, 768-d for L/14.

    Inputs must have the arch resolution (224, or 336 for ``vitl14_336``). Weights: OpenAI's TorchScript
    releases (opened only after their md5 matched the zoo), ruCLIP's ``pytorch_model.bin`` (the text tower
    is dropped) and OML checkpoints (keys ``visual.*``, with any prefix before ``visual``).

    Fixed OML 0.4.4 bug: ``vitl14_336`` is built at 336 pixels (577 positions), so ``openai_vitl14_336``
    loads, and its zoo transforms resize to 336 (0.4.4 built the model at 224, could not load those weights
    and listed 224 transforms for them).

    Example (downloads OpenAI's ViT-B/32, 338 MB)::

        extractor = ViTCLIPExtractor.from_pretrained("openai_vitb32_224").eval()
        embeddings = extractor(images)  # images: [B, 3, 224, 224] -> [B, 512]
    """

    constructors: Dict[str, Callable[..., CLIPVisionTransformer]] = {
        arch: partial(build_clip_vit, arch) for arch in ARCHS
    }

    pretrained_models: Dict[str, PretrainedEntry] = {
        "openai_vitb16_224": _openai("openai_vitb16_224",
                                     "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                                     "ViT-B-16.pt", "44c3d804ecac03d9545ac1a3adbca3a6", "vitb16_224"),
        "openai_vitb32_224": _openai("openai_vitb32_224",
                                     "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                                     "ViT-B-32.pt", "3ba34e387b24dfe590eeb1ae6a8a122b", "vitb32_224"),
        "openai_vitl14_224": _openai("openai_vitl14_224",
                                     "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
                                     "ViT-L-14.pt", "096db1af569b284eb76b3881534822d9", "vitl14_224"),
        "openai_vitl14_336": _openai("openai_vitl14_336",
                                     "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
                                     "ViT-L-14-336px.pt", "b311058cae50cb10fbfa2a44231c9473", "vitl14_336",
                                     im_size=336),
        "sber_vitb16_224": _sber("sber_vitb16_224", "ruclip-vit-base-patch16-224",
                                 "7882e07674d78c674e33cb892a68bbfc", "vitb16_224"),
        "sber_vitb32_224": _sber("sber_vitb32_224", "ruclip-vit-base-patch32-224",
                                 "e2c4dab46a3cfa608bdd762973e90d32", "vitb32_224"),
        "sber_vitl14_224": _sber("sber_vitl14_224", "ruclip-vit-large-patch14-224",
                                 "9b4a1cd25d15bad4ffd2ba6e34b8a67c", "vitl14_224"),
    }  # fmt: skip

    def __init__(self, weights: Optional[Union[str, Path]], arch: str, normalise_features: bool = True):
        """
        Args:
            weights: None (random weights), a name from ``pretrained_models`` or the path of a checkpoint
                (an OpenAI TorchScript release with a known md5, a ruCLIP ``pytorch_model.bin`` or an OML
                checkpoint).
            arch: one of ``vitb16_224``, ``vitb32_224``, ``vitl14_224``, ``vitl14_336``.
            normalise_features: L2-normalise the output (note: every zoo entry uses False).
        """
        super().__init__()
        self.arch = check_arch(arch, ARCHS, type(self).__name__)
        self.normalise_features = normalise_features
        # ruCLIP and OML keep the tower under "visual." (after any other prefix); the rest is the text tower
        self.visual = build_with_weights(self.constructors[arch], weights, self.pretrained_models,
                                         type(self).__name__, cut_through("visual."), keep_own_keys)  # fmt: skip

    @property
    def feat_dim(self) -> int:
        return self.visual.output_dim

    def forward(self, x: Tensor) -> Tensor:
        return normalise_if(self.visual(x), self.normalise_features)


__all__ = ["ViTCLIPExtractor"]
