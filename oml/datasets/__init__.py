"""Datasets over tables in the oml CSV format, lists of images and pairs."""
