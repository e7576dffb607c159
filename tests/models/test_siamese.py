"""Pairwise models against explicit formulas."""

from pathlib import Path

import pytest
import torch

from oml.models import ConcatSiamese, LinearTrivialDistanceSiamese, ResnetExtractor, TrivialDistanceSiamese
from tests.models.layout_utils import random_state_dict, read_layout


def _backbone() -> ResnetExtractor:
    return ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)


def test_linear_siamese_matches_a_loop() -> None:
    model = LinearTrivialDistanceSiamese(feat_dim=5, identity_init=False, output_bias=0.5)
    x1, x2 = torch.randn(4, 5), torch.randn(4, 5)
    weight = model.proj.weight.detach()
    expected = torch.tensor(
        [sum(float(v) ** 2 for v in (weight @ x1[i] - weight @ x2[i])) ** 0.5 + 0.5 for i in range(4)]
    )
    assert torch.allclose(model(x1, x2), expected, atol=1e-5)
    assert torch.equal(model.predict(x1, x2), model(x1, x2))
    identity = LinearTrivialDistanceSiamese(feat_dim=5, identity_init=True)
    assert torch.allclose(identity(x1, x2), (x1 - x2).norm(dim=1), atol=1e-6)


def test_trivial_distance_siamese() -> None:
    extractor = _backbone().eval()
    model = TrivialDistanceSiamese(extractor).eval()
    x1, x2 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.predict(x1, x2), (extractor(x1) - extractor(x2)).norm(dim=1), atol=1e-5)


def test_concat_siamese_head_and_tta() -> None:
    model = ConcatSiamese(_backbone(), mlp_hidden_dims=[16, 8], use_tta=True).eval()
    kinds = [type(layer).__name__ for layer in model.head]
    assert kinds == ["Linear", "Sigmoid", "Dropout", "Linear", "Sigmoid", "Dropout", "Linear", "Identity"]
    assert model.head[6].bias is None and model.head[2].p == 0.5
    x1, x2 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stacked = torch.cat([x1, x2], dim=2)  # vertically: [B, 3, 64, 32]
        logits = model.head(model.extractor(stacked)).view(2)
        assert torch.allclose(model(x1, x2), logits)
        swapped = model.head(model.extractor(torch.cat([x2, x1], dim=2))).view(2)
        assert torch.allclose(model.predict(x1, x2), (torch.sigmoid(logits) + torch.sigmoid(swapped)) / 2)
    assert [type(layer).__name__ for layer in ConcatSiamese(_backbone(), mlp_hidden_dims=[]).head] == [
        "Linear",
        "Identity",
    ]
    with pytest.raises(ValueError, match="same shape"):
        model(x1, x2[:1])


def test_concat_siamese_vit_checkpoint(tmp_path: Path) -> None:
    """OML's STIR layout (ViT-S/16 + [192] head) loads, with a Lightning-style prefix; pairs are 2H x W."""
    from oml.models import ViTExtractor

    saved = random_state_dict(read_layout("concat_siamese_vits16_192"), seed=9)
    torch.save({"state_dict": {f"model.{k}": v for k, v in saved.items()}}, tmp_path / "stir.ckpt")
    model = ConcatSiamese(ViTExtractor(None, "vits16", False), mlp_hidden_dims=[192], weights=tmp_path / "stir.ckpt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    with torch.no_grad():
        assert model.eval().predict(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)).shape == (1,)


def test_freeze() -> None:
    model = ConcatSiamese(_backbone(), mlp_hidden_dims=[4])
    model.freeze()
    model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.extractor.model.conv1.weight.grad is None and model.head[0].weight.grad is not None
    model.unfreeze()
    assert model.train_backbone
