"""CLIP image-tower extractor."""
