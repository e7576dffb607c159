"""Image transforms built with albumentations or torchvision."""
