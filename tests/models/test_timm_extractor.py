"""TimmExtractor: any timm arch, timm/original checkpoints with a classifier, the ImageNet-21K-P zoo."""

from pathlib import Path

import pytest
import timm
import torch

from oml.models import TimmExtractor


def test_forward_and_feat_dim() -> None:
    extractor = TimmExtractor(None, "resnet18", normalise_features=True).eval()
    with torch.no_grad():
        out = extractor(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 512) == (2, extractor.feat_dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_checkpoint_with_a_21k_classifier(prefix: str, tmp_path: Path) -> None:
    """A classifier trained on 11221 classes (as MIIL's files) is dropped; the backbone gives timm's features."""
    reference = timm.create_model("resnet18", pretrained=False, num_classes=11221).eval()
    torch.save({"state_dict": {prefix + k: v for k, v in reference.state_dict().items()}}, tmp_path / "r18_21k.pth")
    extractor = TimmExtractor(tmp_path / "r18_21k.pth", "resnet18").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(extractor(x), reference.forward_head(reference.forward_features(x), pre_logits=True))


def test_own_checkpoint_round_trip(tmp_path: Path) -> None:
    saved = TimmExtractor(None, "mobilenetv3_small_050", drop_rate=0.0)
    torch.save(saved.state_dict(), tmp_path / "own.ckpt")
    loaded = TimmExtractor(tmp_path / "own.ckpt", "mobilenetv3_small_050")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.state_dict().items())
    assert saved.feat_dim == 1024  # the features after the head convolution


@pytest.mark.parametrize("name", sorted(TimmExtractor.pretrained_models))
def test_miil_21k_archs_build(name: str) -> None:
    """Every ImageNet-21K-P backbone is a timm arch; built on the meta device (shapes only) to stay fast."""
    entry = TimmExtractor.pretrained_models[name]
    assert entry["url"][0].startswith("https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ImageNet_21K_P/")
    with torch.device("meta"):
        extractor = TimmExtractor(None, **entry["init_args"]).eval()
        out = extractor(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, extractor.feat_dim)


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match="not_a_model"):
        TimmExtractor(None, "not_a_model")
