"""A plain N-D U-Net (Ronneberger et al. 2015), as used by CARE and Noise2Void: 2D or 3D,
configurable depth and width, optional batch norm and residual output."""
from __future__ import annotations

import torch
from torch import nn


def _layers(dims: int):
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d
    if dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d
    raise ValueError(f"dims must be 2 or 3, got {dims}")


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by optional batch norm and ReLU."""

    def __init__(self, dims: int, c_in: int, c_out: int, batch_norm: bool):
        conv, norm, _ = _layers(dims)
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers.append(conv(c, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(norm(c_out))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; spatial sizes must be multiples of ``2**depth``.

    residual: add the input to the output (CARE's and N2V's default for restoration; requires
    in_channels == out_channels).
    """

    def __init__(self, dims: int = 2, in_channels: int = 1, out_channels: int = 1, depth: int = 2,
                 base_channels: int = 32, batch_norm: bool = True, residual: bool = False):
        super().__init__()
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        conv, _, pool = _layers(dims)
        self.residual = residual
        self.pool = pool(2)
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(ConvBlock(dims, c, w, batch_norm))
            c = w
        self.bottom = ConvBlock(dims, c, widths[-1], batch_norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w_skip, w_below in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.merge.append(ConvBlock(dims, w_below + w_skip, w_skip, batch_norm))
        self.head = conv(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            h = merge(torch.cat([up(h), skip], dim=1))
        out = self.head(h)
        return out + x if self.residual else out
