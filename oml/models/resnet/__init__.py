"""torchvision ResNet extractor and GeM pooling."""
