"""Unicom ViT extractor."""
