"""Image transforms (albumentations and torchvision) used by datasets and the zoo."""
