"""Export of extractors to ONNX and TorchScript, with a dynamic batch size.

The image size is fixed at export (ViTs resize their positional embedding for the given size). ONNX export
needs the optional packages ``onnx`` and ``onnxscript`` (``pip install "oml[onnx]"``).
"""

import warnings
from pathlib import Path
from typing import Sequence, Tuple, Union

import torch
from torch import nn

from oml.utils.misc_torch import temporary_setting_model_mode

TPath = Union[str, Path]

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


def _example_input(model: nn.Module, input_size: Sequence[int], batch_size: int) -> torch.Tensor:
    if len(input_size) != 2 or any(int(side) <= 0 for side in input_size):
        raise ValueError(f"input_size must be (height, width) with positive sides, got {tuple(input_size)}.")
    if batch_size < 2:
        raise ValueError(f"Export with batch_size >= 2 so that the batch dimension stays dynamic, got {batch_size}.")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    return torch.randn(batch_size, 3, int(input_size[0]), int(input_size[1]), device=device)


def export_to_onnx(
    model: nn.Module,
    path: TPath,
    input_size: Tuple[int, int] = (224, 224),
    opset: int = 18,
    batch_size: int = 2,
    dynamo: bool = True,
) -> Path:
    """Write ``model`` (in eval mode) as an ONNX graph with input ``images [B, 3, H, W]`` and output ``embeddings``.

    Args:
        model: an extractor (or any module mapping images to a tensor).
        path: the ``.onnx`` file to write.
        input_size: ``(H, W)`` of the images the graph will take.
        opset: the ONNX opset version.
        batch_size: batch size of the example used for tracing (the exported batch size is dynamic).
        dynamo: use torch's ``torch.export``-based exporter (the supported one); False uses the older
            TorchScript-based exporter, which is several times faster but deprecated by torch.

    Returns:
        The path of the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = _example_input(model, input_size, batch_size)
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    with temporary_setting_model_mode(model, set_train=False), torch.no_grad():
        if dynamo:
            dynamic = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)}
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, optimize=False,
                              verbose=False, **dynamic, **names)  # fmt: skip
        else:
            with warnings.catch_warnings():  # it traces: the notes about shapes fixed at export are expected
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                dynamic = {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
                torch.onnx.export(model, (example,), str(path), dynamo=False, **dynamic, **names)
    return path


def export_to_torchscript(
    model: nn.Module,
    path: TPath,
    input_size: Tuple[int, int] = (224, 224),
    batch_size: int = 2,
) -> Path:
    """Trace ``model`` (in eval mode) on a batch of ``input_size`` images and save it with ``torch.jit.save``.

    Load it with ``torch.jit.load(path)``; any batch size works, the image size is the one given here.

    Returns:
        The path of the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = _example_input(model, input_size, batch_size)
    with temporary_setting_model_mode(model, set_train=False), torch.no_grad(), warnings.catch_warnings():
        # the image size is fixed on purpose, so the tracer's notes about constant shapes are expected
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch, but asked for here
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))
    return path


__all__ = ["export_to_onnx", "export_to_torchscript"]
