"""Noise2Void's network: a residual U-Net (torch only)."""
from zoo.nn.unet import UNet


def build_network(dims: int = 2, channels: int = 1, depth: int = 2, base_channels: int = 32,
                  batch_norm: bool = True) -> UNet:
    return UNet(dims=dims, in_channels=channels, out_channels=channels, depth=depth,
                base_channels=base_channels, batch_norm=batch_norm, residual=True)
