"""The StarDist network: a U-Net with an object-probability head and ``n_rays`` distance heads."""
from zoo.nn.unet import SegmentationUNet


def build(dims: int = 2, channels: int = 1, n_rays: int = 32, depth: int = 3, base_channels: int = 32,
          batch_norm: bool = True, layout: str = "plain") -> SegmentationUNet:
    if n_rays % 4:
        raise ValueError(f"n_rays must be a multiple of 4 (rotation augmentation permutes rays), got {n_rays}")
    return SegmentationUNet([{"name": "probability", "channels": 1, "activation": "sigmoid"},
                             {"name": "distances", "channels": n_rays, "activation": "linear"}],
                            dims=dims, channels=channels, depth=depth, base_channels=base_channels,
                            batch_norm=batch_norm, layout=layout)
