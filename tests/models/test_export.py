"""ONNX and TorchScript export round trips (dynamic batch size) for a ViT and a ResNet."""

from pathlib import Path

import numpy as np
import pytest
import torch

from oml.models import ResnetExtractor, ViTExtractor, export_to_onnx, export_to_torchscript

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", params=["vit", "resnet"])
def model_and_size(request: pytest.FixtureRequest):
    torch.manual_seed(0)
    if request.param == "vit":
        return ViTExtractor(None, "vits16", normalise_features=True).eval(), (48, 32)
    return ResnetExtractor(None, "resnet18", gem_p=3.0, remove_fc=True, normalise_features=False).eval(), (64, 64)


def test_onnx_matches_pytorch(model_and_size, tmp_path: Path) -> None:
    model, size = model_and_size
    # the ResNet goes through torch.export (the default), the ViT through the older exporter (5x faster for it)
    dynamo = isinstance(model, ResnetExtractor)
    path = export_to_onnx(model, tmp_path / "model.onnx", input_size=size, dynamo=dynamo)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for batch in (1, 3):
        x = torch.randn(batch, 3, *size)
        (onnx_out,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert onnx_out.shape == expected.shape
        assert np.abs(onnx_out - expected).max() < 1e-4


def test_torchscript_matches_pytorch(model_and_size, tmp_path: Path) -> None:
    model, size = model_and_size
    path = export_to_torchscript(model, tmp_path / "model.pt", input_size=size)
    with pytest.warns(FutureWarning):  # torch deprecates TorchScript; loading still works
        loaded = torch.jit.load(str(path))
    x = torch.randn(4, 3, *size)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert not model.training  # the model's mode is restored


def test_bad_arguments(tmp_path: Path) -> None:
    model = ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)
    with pytest.raises(ValueError, match="input_size"):
        export_to_torchscript(model, tmp_path / "m.pt", input_size=(32,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        export_to_onnx(model, tmp_path / "m.onnx", input_size=(32, 32), batch_size=1)
