"""The unet-seg network: one softmax head over background, interior and boundary."""
from zoo.nn.unet import SegmentationUNet


def build(dims: int = 2, channels: int = 1, depth: int = 3, base_channels: int = 32, batch_norm: bool = True,
          layout: str = "plain") -> SegmentationUNet:
    return SegmentationUNet([{"name": "classes", "channels": 3, "activation": "softmax"}], dims=dims,
                            channels=channels, depth=depth, base_channels=base_channels, batch_norm=batch_norm,
                            layout=layout)
