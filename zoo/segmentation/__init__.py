"""Instance segmentation: classical baselines and (later) the post-processing of the
segmentation architectures."""
