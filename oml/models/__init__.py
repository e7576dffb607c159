"""Extractors, pairwise models and their zoo of pretrained weights, and export to ONNX / TorchScript."""

from oml.models.export import export_to_onnx, export_to_torchscript
from oml.models.meta.projection import ExtractorWithMLP
from oml.models.meta.siamese import ConcatSiamese, LinearTrivialDistanceSiamese, TrivialDistanceSiamese
from oml.models.resnet.extractor import ResnetExtractor
from oml.models.timm_extractor import TimmExtractor
from oml.models.vit_clip.extractor import ViTCLIPExtractor
from oml.models.vit_dino.extractor import ViTExtractor
from oml.models.vit_unicom.extractor import ViTUnicomExtractor

__all__ = [
    "ExtractorWithMLP",
    "ConcatSiamese",
    "LinearTrivialDistanceSiamese",
    "TrivialDistanceSiamese",
    "ResnetExtractor",
    "ViTCLIPExtractor",
    "ViTExtractor",
    "ViTUnicomExtractor",
    "TimmExtractor",
    "export_to_onnx",
    "export_to_torchscript",
]
