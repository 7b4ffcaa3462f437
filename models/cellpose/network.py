"""The Cellpose-style network: a U-Net with one flow head per spatial axis and a cell probability."""
from zoo.nn.unet import SegmentationUNet


def build(dims: int = 2, channels: int = 1, depth: int = 3, base_channels: int = 32, batch_norm: bool = True,
          layout: str = "plain") -> SegmentationUNet:
    return SegmentationUNet([{"name": "flows", "channels": dims, "activation": "linear"},
                             {"name": "probability", "channels": 1, "activation": "sigmoid"}],
                            dims=dims, channels=channels, depth=depth, base_channels=base_channels,
                            batch_norm=batch_norm, layout=layout)
