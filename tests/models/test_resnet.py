"""ResnetExtractor against torchvision itself, GeM against a loop, MoCo and torchvision checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from oml.models import ResnetExtractor
from oml.models.resnet.extractor import load_moco_weights
from oml.models.resnet.pooling import GEM
from tests.models.layout_utils import random_state_dict, read_layout


def test_gem_matches_a_loop() -> None:
    x = torch.randn(2, 3, 4, 5)
    p, eps = 3.0, 1e-6
    expected = torch.zeros(2, 3)
    for b in range(2):
        for c in range(3):
            values = [max(float(v), eps) ** p for v in x[b, c].flatten()]
            expected[b, c] = (sum(values) / len(values)) ** (1 / p)
    assert torch.allclose(GEM(p)(x), expected, atol=1e-6)
    assert torch.allclose(GEM(1.0)(x.abs()), x.abs().mean(dim=(2, 3)), atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        GEM(0.0)


@pytest.mark.parametrize(
    "arch, remove_fc, expected_dim",
    [
        ("resnet18", True, 512),
        ("resnet34", False, 1000),
        ("resnet50", True, 2048),
        ("resnet101", True, 2048),
        ("resnet152", True, 2048),
        ("resnet50_projector", False, 128),
    ],
)
def test_every_arch_forwards(arch: str, remove_fc: bool, expected_dim: int) -> None:
    extractor = ResnetExtractor(None, arch, gem_p=None, remove_fc=remove_fc, normalise_features=False).eval()
    with torch.no_grad():
        out = extractor(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, expected_dim) and extractor.feat_dim == expected_dim


def test_matches_torchvision_with_the_same_weights(tmp_path: Path) -> None:
    """A torchvision checkpoint (as downloaded for *_imagenet1k_v1) gives torchvision's outputs, fc removed."""
    reference = torchvision.models.resnet18().eval()
    weights = random_state_dict(read_layout("resnet_resnet18"), seed=2, strip="model.")
    reference.load_state_dict(weights)
    torch.save(weights, tmp_path / "resnet18-f37072fd.pth")

    extractor = ResnetExtractor(tmp_path / "resnet18-f37072fd.pth", "resnet18", None, True, False).eval()
    with_fc = ResnetExtractor(tmp_path / "resnet18-f37072fd.pth", "resnet18", None, False, True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = reference(x)
        assert torch.allclose(with_fc(x), logits / logits.norm(dim=1, keepdim=True), atol=1e-5)
        reference.fc = nn.Identity()
        assert torch.allclose(extractor(x), reference(x), atol=1e-5)


def test_moco_checkpoint_with_gem(tmp_path: Path) -> None:
    """MoCo v2's file: {"state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue", ...}}."""
    query = random_state_dict(read_layout("resnet_resnet50_projector"), seed=4, strip="model.")
    content = {f"module.encoder_q.{k}": v for k, v in query.items()}
    content.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in query.items()})
    content["module.queue"] = torch.randn(128, 16)
    content["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": content, "optimizer": {"state": {}}}, tmp_path / "moco")

    assert set(load_moco_weights(tmp_path / "moco")) == set(query)
    extractor = ResnetExtractor(tmp_path / "moco", "resnet50_projector", gem_p=5.0, remove_fc=True,
                                normalise_features=False).eval()  # fmt: skip
    reference = torchvision.models.resnet50()
    reference.fc = nn.Identity()
    reference.load_state_dict({k: v for k, v in query.items() if not k.startswith("fc.")})
    reference.avgpool = GEM(5.0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(extractor(x), reference.eval()(x), atol=1e-5)
    assert extractor.feat_dim == 2048


def test_checkpoint_without_fc_loads_with_remove_fc(tmp_path: Path) -> None:
    """OML saves remove_fc models without fc keys (resnet_resnet50_gem_nofc); 0.4.4 could not reload them."""
    saved = ResnetExtractor(None, "resnet18", gem_p=3.0, remove_fc=True, normalise_features=False).state_dict()
    assert not any(".fc." in key for key in saved)
    torch.save(saved, tmp_path / "nofc.ckpt")
    loaded = ResnetExtractor(tmp_path / "nofc.ckpt", "resnet18", gem_p=3.0, remove_fc=True, normalise_features=False)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(RuntimeError, match="fc.weight"):
        ResnetExtractor(tmp_path / "nofc.ckpt", "resnet18", gem_p=3.0, remove_fc=False, normalise_features=False)


def test_draw_gradcam() -> None:
    extractor = ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=False, normalise_features=False)
    image = np.random.default_rng(0).integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
    drawn = extractor.draw_gradcam(image)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8"):
        extractor.draw_gradcam(image.astype(np.float32))


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match="resnet42"):
        ResnetExtractor(None, "resnet42", gem_p=None, remove_fc=True, normalise_features=False)
