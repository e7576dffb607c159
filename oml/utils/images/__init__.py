"""Image reading, drawing and resizing helpers."""
