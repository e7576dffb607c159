"""ViTExtractor (DINO archs) against a plain re-implementation of DINO's ViT from the spec (explicit attention)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oml.models import ViTExtractor
from oml.models.vit_dino.model import ARCHS, DINOV2_ARCHS
from tests.models.layout_utils import random_state_dict, read_layout
from tests.models.vit_reference import dino_reference


@pytest.fixture(scope="module")
def dino_vits16(tmp_path_factory: pytest.TempPathFactory):
    """A raw DINO release in miniature: a flat state dict (no prefix) with random values, and the extractor."""
    raw = random_state_dict(read_layout("vit_vits16"), seed=3, strip="model.")
    path = tmp_path_factory.mktemp("dino") / "dino_deitsmall16_pretrain.pth"
    torch.save(raw, path)
    return raw, ViTExtractor(path, "vits16", normalise_features=False).eval()


@pytest.mark.parametrize("size", [(224, 224), (232, 232), (64, 64), (48, 80), (70, 50), (224, 240)])
def test_matches_dino_at_any_size(dino_vits16, size) -> None:
    """Native grid, cropped remainder, smaller/non-square grids, and 224x240 (native patch count, not square)."""
    raw, extractor = dino_vits16
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, reference = extractor(x), dino_reference(raw, x, patch=16, heads=6)
    assert ours.shape == (2, 384)
    assert torch.allclose(ours, reference, atol=1e-4, rtol=1e-4), (ours - reference).abs().max()


def test_multi_scale_and_normalisation(dino_vits16, tmp_path: Path) -> None:
    raw, _ = dino_vits16
    torch.save(raw, tmp_path / "raw.pth")
    extractor = ViTExtractor(tmp_path / "raw.pth", "vits16", normalise_features=True, use_multi_scale=True).eval()
    x = torch.randn(2, 3, 64, 64)
    scaled = [x] + [F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) for s in (2**-0.5, 0.5)]
    with torch.no_grad():
        ours = extractor(x)
        mean = sum(dino_reference(raw, s, patch=16, heads=6) for s in scaled) / 3
    expected = mean / mean.norm(dim=1, keepdim=True)
    assert [s.shape[-1] for s in scaled] == [64, 45, 32]
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("arch", sorted(set(ARCHS) - set(DINOV2_ARCHS)))  # DINOv2: tests/models/test_vit_dinov2.py
def test_every_arch_forwards(arch: str) -> None:
    extractor = ViTExtractor(None, arch, normalise_features=False).eval()
    with torch.no_grad():
        out = extractor(torch.randn(2, 3, 32, 32))
    expected_dim = ARCHS[arch]["embed_dim"]
    assert out.shape == (2, expected_dim) and extractor.feat_dim == expected_dim
    assert torch.isfinite(out).all()


def test_loading_changes_outputs_and_raw_keys_are_kept(dino_vits16) -> None:
    raw, loaded = dino_vits16
    random = ViTExtractor(None, "vits16", normalise_features=False).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(random(x), loaded(x))
    assert set(loaded.model.state_dict()) == set(raw)


def test_draw_attention(dino_vits16) -> None:
    _, extractor = dino_vits16
    image = np.random.default_rng(0).integers(0, 256, size=(70, 50, 3), dtype=np.uint8)
    drawn = extractor.draw_attention(image)
    assert drawn.shape == (64, 48, 3) and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, image[:64, :48])
    attention = extractor.model.get_last_selfattention(torch.randn(1, 3, 64, 48))
    assert attention.shape == (1, 6, 13, 13)
    assert torch.allclose(attention.sum(dim=-1), torch.ones(1, 6, 13))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="vits32"):
        ViTExtractor(None, "vits32", normalise_features=False)
    extractor = ViTExtractor(None, "vits16", normalise_features=False)
    with pytest.raises(ValueError, match="smaller than one patch"):
        extractor(torch.randn(1, 3, 8, 64))
    with pytest.raises(FileNotFoundError, match="vits16_unknown"):
        ViTExtractor("vits16_unknown", "vits16", normalise_features=False)
