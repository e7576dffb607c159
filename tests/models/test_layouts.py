"""Our state dicts have OML's layouts (keys, shapes, dtypes), and checkpoints in those layouts load strictly."""

import re
from pathlib import Path
from typing import Callable, Dict

import pytest
import torch
from torch import nn

from oml.models import (
    ConcatSiamese,
    ExtractorWithMLP,
    LinearTrivialDistanceSiamese,
    ResnetExtractor,
    ViTCLIPExtractor,
    ViTExtractor,
    ViTUnicomExtractor,
)
from tests.models.layout_utils import LAYOUTS_DIR, layout_of, random_state_dict, read_layout


def _vits16() -> ViTExtractor:
    return ViTExtractor(None, "vits16", normalise_features=False)


BUILDERS: Dict[str, Callable[[], nn.Module]] = {
    "concat_siamese_vits16_192": lambda: ConcatSiamese(_vits16(), mlp_hidden_dims=[192]),
    "extractor_with_mlp_vits16_384": lambda: ExtractorWithMLP(_vits16(), mlp_features=[384]),
    "linear_siamese_16": lambda: LinearTrivialDistanceSiamese(16, identity_init=True),
    "resnet_resnet50_gem_nofc": lambda: ResnetExtractor(None, "resnet50", gem_p=3.0, remove_fc=True,
                                                        normalise_features=False),
    "resnet_resnet50_projector": lambda: ResnetExtractor(None, "resnet50_projector", gem_p=None, remove_fc=False,
                                                         normalise_features=False),
    **{f"resnet_{arch}": (lambda arch=arch: ResnetExtractor(None, arch, gem_p=None, remove_fc=False,
                                                            normalise_features=False))
       for arch in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]},
    **{f"vit_clip_{arch}": (lambda arch=arch: ViTCLIPExtractor(None, arch, normalise_features=False))
       for arch in ["vitb16_224", "vitb32_224", "vitl14_224", "vitl14_336"]},
    **{f"vit_unicom_{arch}": (lambda arch=arch: ViTUnicomExtractor(None, arch, normalise_features=True))
       for arch in ["vitb32_unicom", "vitb16_unicom", "vitl14_unicom", "vitl14_336px_unicom"]},
    **{f"vit_{arch}": (lambda arch=arch: ViTExtractor(None, arch, normalise_features=False))
       for arch in ["vits8", "vits16", "vitb8", "vitb16"]},
}  # fmt: skip

LAYOUT_NAMES = sorted(path.stem for path in LAYOUTS_DIR.glob("*.txt"))


def _on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return BUILDERS[name]()


def _feat_dim_in_header(name: str) -> str:
    header = (LAYOUTS_DIR / f"{name}.txt").read_text().splitlines()[0]
    return re.search(r"feat_dim=(\w+)", header).group(1)


def test_every_layout_has_a_builder() -> None:
    assert len(LAYOUT_NAMES) == 22
    assert set(LAYOUT_NAMES) == set(BUILDERS)


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_state_dict_has_the_layout(name: str) -> None:
    model = _on_meta(name)
    ours, expected = layout_of(model), read_layout(name)
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {key: ours[key] for key in expected} == expected
    header_dim = _feat_dim_in_header(name)
    if header_dim != "None":
        assert model.feat_dim == int(header_dim)


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_layout_loads_strictly(name: str) -> None:
    """A state dict with exactly the layout loads with strict=True; a missing key is reported by its layout name."""
    model = _on_meta(name)
    state_dict = {key: torch.empty(shape, dtype=getattr(torch, dtype[6:]), device="meta")
                  for key, (shape, dtype) in read_layout(name).items()}  # fmt: skip
    assert model.load_state_dict(state_dict, strict=True) is not None

    # (BatchNorm fills a missing num_batches_tracked in by itself, so take another key)
    missing = [key for key in state_dict if not key.endswith("num_batches_tracked")][len(state_dict) // 2]
    state_dict.pop(missing)
    with pytest.raises(RuntimeError, match=re.escape(missing)):
        model.load_state_dict(state_dict, strict=True)


# (layout, how the checkpoint is wrapped): each small layout once, both wrappings covered
SMALL_LAYOUTS = [
    ("vit_vits16", "lightning"),
    ("vit_clip_vitb32_224", "plain"),
    ("vit_unicom_vitb32_unicom", "lightning"),
    ("resnet_resnet18", "plain"),
    ("resnet_resnet50_projector", "lightning"),
    ("extractor_with_mlp_vits16_384", "plain"),
    ("concat_siamese_vits16_192", "lightning"),
]


def _rebuild_with_weights(name: str, path: Path) -> nn.Module:
    if name == "vit_vits16":
        return ViTExtractor(path, "vits16", normalise_features=False)
    if name == "vit_clip_vitb32_224":
        return ViTCLIPExtractor(path, "vitb32_224", normalise_features=False)
    if name == "vit_unicom_vitb32_unicom":
        return ViTUnicomExtractor(path, "vitb32_unicom", normalise_features=True)
    if name == "resnet_resnet18":
        return ResnetExtractor(path, "resnet18", gem_p=None, remove_fc=False, normalise_features=False)
    if name == "resnet_resnet50_projector":
        return ResnetExtractor(path, "resnet50_projector", gem_p=None, remove_fc=False, normalise_features=False)
    if name == "extractor_with_mlp_vits16_384":
        return ExtractorWithMLP(_vits16(), mlp_features=[384], weights=path)
    return ConcatSiamese(_vits16(), mlp_hidden_dims=[192], weights=path)


@pytest.mark.parametrize("name, wrapping", SMALL_LAYOUTS)
def test_oml_checkpoint_round_trip(name: str, wrapping: str, tmp_path: Path) -> None:
    """A checkpoint in the layout (as OML saves it, or inside Lightning's {"state_dict": {"model." + key}})
    loads through the constructor and the model then holds exactly its tensors."""
    saved = random_state_dict(read_layout(name), seed=1)
    content = saved if wrapping == "plain" else {"state_dict": {f"model.{k}": v for k, v in saved.items()}, "epoch": 3}
    torch.save(content, tmp_path / "model.ckpt")

    model = _rebuild_with_weights(name, tmp_path / "model.ckpt")
    loaded = model.state_dict()
    assert list(loaded) == list(saved) or set(loaded) == set(saved)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
