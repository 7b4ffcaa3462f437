"""Architectures shipped with bioimage-zoo, one sub-package each (installed as ``zoo.models``)."""
