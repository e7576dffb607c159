"""ViTExtractor's DINOv2 archs: Meta's release layout (checked against timm's documented conversion), strict
loading for every arch (on the meta device for the big ones), outputs equal to a plain re-implementation."""

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import Tensor

from oml.models import ViTExtractor
from oml.models.loading import convert_state_dict, oml_prefix
from oml.models.vit_dino.model import ARCHS, DINOV2_ARCHS, build_dino_vit
from oml.registry.transforms import get_transforms_for_pretrained
from tests.models.layout_utils import TLayout, layout_of, random_state_dict
from tests.models.vit_reference import dino_reference

DIMS = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16)}  # width, depth, heads
TIMM_NAMES = {"s": "vit_small", "b": "vit_base", "l": "vit_large"}


def official_layout(arch: str) -> TLayout:
    """The keys and shapes of Meta's ``dinov2_<arch>_pretrain.pth`` (DINOv2's ``DinoVisionTransformer`` with
    ``block_chunks=0``), written out from its source: 37 x 37 positions + CLS, LayerScale, mask token."""
    dim, depth, _ = DIMS[arch[3]]
    shapes: Dict[str, Tuple[int, ...]] = {"cls_token": (1, 1, dim), "pos_embed": (1, 1370, dim)}
    if arch.endswith("_reg"):
        shapes["register_tokens"] = (1, 4, dim)
    shapes.update(
        {"mask_token": (1, dim), "patch_embed.proj.weight": (dim, 3, 14, 14), "patch_embed.proj.bias": (dim,)}
    )
    for i in range(depth):
        block = {"norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim),
                 "attn.qkv.bias": (3 * dim,), "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
                 "ls1.gamma": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,), "mlp.fc1.weight": (4 * dim, dim),
                 "mlp.fc1.bias": (4 * dim,), "mlp.fc2.weight": (dim, 4 * dim), "mlp.fc2.bias": (dim,),
                 "ls2.gamma": (dim,)}  # fmt: skip
        shapes.update({f"blocks.{i}.{key}": shape for key, shape in block.items()})
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return {key: (shape, "torch.float32") for key, shape in shapes.items()}


def _meta_state_dict(arch: str) -> Dict[str, Tensor]:
    return {key: torch.empty(shape, device="meta") for key, (shape, _) in official_layout(arch).items()}


@pytest.mark.parametrize("arch", DINOV2_ARCHS)
def test_state_dict_is_the_official_layout(arch: str) -> None:
    with torch.device("meta"):
        extractor = ViTExtractor(None, arch, normalise_features=False)
    assert layout_of(extractor.model) == official_layout(arch)
    assert extractor.feat_dim == DIMS[arch[3]][0]


@pytest.mark.parametrize("arch", DINOV2_ARCHS)
def test_timm_converts_our_layout_to_its_own(arch: str) -> None:
    """timm documents how it converts Meta's files (``checkpoint_filter_fn``: drops ``mask_token``, renames
    ``register_tokens``, folds the CLS position into ``cls_token``). Our state dict, run through it, loads
    strictly into timm's DINOv2 model: so ours is the layout timm expects from Meta's files."""
    name = f"{TIMM_NAMES[arch[3]]}_patch14_{'reg4_' if arch.endswith('_reg') else ''}dinov2"
    with torch.device("meta"):
        ours = build_dino_vit(arch)
        theirs = timm.create_model(name, pretrained=False)
    converted = checkpoint_filter_fn(dict(ours.state_dict()), theirs)
    assert theirs.load_state_dict(converted, strict=True) is not None


@pytest.mark.parametrize("arch", DINOV2_ARCHS)
def test_official_and_lightning_layouts_load_strictly(arch: str) -> None:
    """Meta's layout loads strictly; so does an OML/Lightning checkpoint of it (``model.`` prefix), after the
    loader's prefix rule. A missing key is an error naming it."""
    with torch.device("meta"):
        model = build_dino_vit(arch)
    official = _meta_state_dict(arch)
    assert model.load_state_dict(official, strict=True) is not None
    lightning = {f"model.{key}": value for key, value in official.items()}
    assert model.load_state_dict(convert_state_dict(lightning, model, oml_prefix("norm.bias")), strict=True)
    official.pop("blocks.3.ls2.gamma")
    with pytest.raises(RuntimeError, match=r"blocks\.3\.ls2\.gamma"):
        model.load_state_dict(official, strict=True)


SMALL = ["vits14", "vits14_reg"]


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Dict[str, Tensor], ViTExtractor]]:
    """Miniature Meta releases (the official layout with random values) loaded through the constructor."""
    result = {}
    for seed, arch in enumerate(SMALL):
        raw = random_state_dict(official_layout(arch), seed=seed)
        path = tmp_path_factory.mktemp("dinov2") / f"dinov2_{arch}_pretrain.pth"
        torch.save(raw, path)
        result[arch] = (raw, ViTExtractor(path, arch, normalise_features=False).eval())
    return result


@pytest.mark.parametrize("arch", SMALL)
@pytest.mark.parametrize("size", [(56, 56), (70, 42), (60, 45), (98, 98)])
def test_matches_dinov2_at_any_size(released, arch: str, size: Tuple[int, int]) -> None:
    """Resized grids (square, non-square, cropped remainder): DINOv2's rule without registers (offset 0.1, no
    antialias) and with registers (resize to the grid size, antialias)."""
    raw, extractor = released[arch]
    registers = arch.endswith("_reg")
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = extractor(x)
        expected = dino_reference(raw, x, patch=14, heads=6, offset=0.0 if registers else 0.1, antialias=registers)
    assert ours.shape == (2, 384)
    assert torch.allclose(ours, expected, atol=1e-4, rtol=1e-4), (ours - expected).abs().max()


def test_native_grid_keeps_the_positional_embedding(released) -> None:
    model = released["vits14"][1].model
    assert model.interpolate_pos_encoding(37, 37, same_sides=True) is model.pos_embed
    assert model.interpolate_pos_encoding(37, 37, same_sides=False).shape == model.pos_embed.shape


def test_registers_match_timm(released) -> None:
    """A second oracle for the register archs: timm's model, loaded with timm's conversion of the same file,
    resizes its grid the way DINOv2 with registers does (bicubic to the size, antialiased)."""
    raw, extractor = released["vits14_reg"]
    theirs = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0,
                               dynamic_img_size=True).eval()  # fmt: skip
    theirs.load_state_dict(checkpoint_filter_fn(dict(raw), theirs), strict=True)
    x = torch.randn(2, 3, 70, 56)
    with torch.no_grad():
        assert torch.allclose(extractor(x), theirs(x), atol=1e-4, rtol=1e-4)


def test_random_weights_register_tokens_and_attention(released) -> None:
    raw, extractor = released["vits14_reg"]
    assert torch.equal(extractor.model.register_tokens, raw["register_tokens"])
    assert extractor.model.num_prefix_tokens == 5
    attention = extractor.model.get_last_selfattention(torch.randn(1, 3, 42, 28))
    assert attention.shape == (1, 6, 5 + 6, 5 + 6)
    image = np.random.default_rng(0).integers(0, 256, size=(45, 30, 3), dtype=np.uint8)
    assert extractor.draw_attention(image).shape == (42, 28, 3)


@pytest.mark.parametrize("name", sorted(n for n in ViTExtractor.pretrained_models if n.endswith("_dinov2")))
def test_zoo_entries(name: str) -> None:
    entry = ViTExtractor.pretrained_models[name]
    arch = entry.init_args["arch"]
    registers = "_reg4" if arch.endswith("_reg") else ""
    assert arch in ARCHS and name == f"{arch}_dinov2"
    assert entry.sources == (f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch[:6]}/dinov2_{arch[:6]}{registers}"
                             f"_pretrain.pth",)  # fmt: skip
    assert entry.fname == f"dinov2_{arch[:6]}{registers}.ckpt" and len(entry.md5) == 6
    assert entry.transforms.as_cfg() == {"name": "norm_resize_hypvit_torch", "args": {"im_size": 224}}
    assert "Apache-2.0" in entry.licence
    transforms, _ = get_transforms_for_pretrained(name)
    assert "size=224" in repr(transforms)


def test_lightning_checkpoint_of_a_small_arch(released, tmp_path: Path) -> None:
    raw, extractor = released["vits14"]
    torch.save({"state_dict": {f"model.model.{k}": v for k, v in raw.items()}, "epoch": 1}, tmp_path / "l.ckpt")
    loaded = ViTExtractor(tmp_path / "l.ckpt", "vits14", normalise_features=True).eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        expected = extractor(x)
        assert torch.allclose(loaded(x), expected / expected.norm(dim=1, keepdim=True), atol=1e-6)
