"""Data: ImageNet-style folders, their WebDataset / FFCV conversions, and the loaders over them."""
