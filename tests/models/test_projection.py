"""ExtractorWithMLP: torchvision MLP semantics, freezing, loading and its zoo entry."""

from pathlib import Path

import pytest
import torch

from oml.interfaces.models import IExtractor
from oml.models import ExtractorWithMLP, ResnetExtractor, ViTExtractor


def _backbone() -> ResnetExtractor:
    return ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)


def test_projection_layers_and_output() -> None:
    model = ExtractorWithMLP(_backbone(), mlp_features=[64, 16]).eval()
    assert [type(layer).__name__ for layer in model.projection] == ["Linear", "ReLU", "Dropout", "Linear", "Dropout"]
    assert model.feat_dim == 16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.extractor(x)
        first, last = model.projection[0], model.projection[3]
        expected = last(torch.relu(first(features)))
        assert torch.allclose(model(x), expected)


def test_freeze_stops_backbone_gradients_only() -> None:
    model = ExtractorWithMLP(_backbone(), mlp_features=[8], train_backbone=True)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert model.extractor.model.conv1.weight.grad is not None
    model.zero_grad(set_to_none=True)
    model.freeze()
    model(x).sum().backward()
    assert model.extractor.model.conv1.weight.grad is None and model.projection[0].weight.grad is not None
    model.unfreeze()
    assert model.train_backbone
    with torch.no_grad():  # an outer no_grad is respected even with train_backbone (OML 0.4.4 re-enabled grads)
        assert not model(x).requires_grad


def test_checkpoint_with_prefix_loads(tmp_path: Path) -> None:
    saved = ExtractorWithMLP(_backbone(), mlp_features=[8])
    torch.save({"state_dict": {f"model.{k}": v for k, v in saved.state_dict().items()}}, tmp_path / "mlp.ckpt")
    loaded = ExtractorWithMLP(_backbone(), mlp_features=[8], weights=tmp_path / "mlp.ckpt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.state_dict().items())


def test_zoo_entry_builds_its_backbone_each_time() -> None:
    """from_pretrained calls extractor_creator without consuming the zoo entry (OML popped it: a second call failed)."""
    creator = ExtractorWithMLP.pretrained_models["vits16_224_mlp_384_inshop"]["init_args"]["extractor_creator"]
    first, second = creator(), creator()
    assert isinstance(first, ViTExtractor) and first is not second and first.feat_dim == 384
    assert "extractor_creator" in ExtractorWithMLP.pretrained_models["vits16_224_mlp_384_inshop"]["init_args"]
    with pytest.raises(KeyError, match="vits16_224_mlp_384_inshop"):
        ExtractorWithMLP.from_pretrained("unknown")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mlp_features"):
        ExtractorWithMLP(_backbone(), mlp_features=[])
    with pytest.raises(TypeError, match="IExtractor"):
        ExtractorWithMLP(torch.nn.Linear(2, 2), mlp_features=[4])  # type: ignore[arg-type]
    assert isinstance(ExtractorWithMLP(_backbone(), [4]), IExtractor)
