"""Quantification after segmentation: per-object measurements and tracking over time."""
