"""Infrastructure helpers: io and downloads, images, misc, torch utilities, dataset format."""
