"""DINO ViT extractor."""
