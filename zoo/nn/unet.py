"""The one N-D U-Net (Ronneberger et al. 2015) every restoration architecture shares: 2D or 3D,
configurable depth and width, optional batch norm and residual output, and the variants the
field uses:

- ``layout="csbdeep"``: CSBDeep's/CAREamics' widths: the bottleneck and every decoder block
  but the top one halve their channels on the way out (25% fewer FLOPs than ``"plain"``);
- ``blur_pool=True`` and ``top_skip=False``: Noise2Void 2 (Hoeck et al. 2022), max-blur-pooling
  and no skip connection at full resolution, which removes N2V's checkerboard artefacts.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _layers(dims: int):
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d
    if dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d
    raise ValueError(f"dims must be 2 or 3, got {dims}")


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions (``c_in -> c_mid -> c_out``), each followed by optional batch
    norm and ReLU."""

    def __init__(self, dims: int, c_in: int, c_out: int, batch_norm: bool, c_mid: int | None = None):
        conv, norm, _ = _layers(dims)
        layers: list[nn.Module] = []
        c_mid = c_out if c_mid is None else c_mid
        for a, b in ((c_in, c_mid), (c_mid, c_out)):
            layers.append(conv(a, b, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(norm(b))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MaxBlurPool(nn.Module):
    """Max over 2x2(x2) windows at stride 1, then a [1, 2, 1] binomial blur at stride 2
    (Zhang 2019, as in N2V2): shift-robust downsampling."""

    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.dims, self.channels = dims, channels
        kernel = torch.tensor([1.0, 2.0, 1.0])
        full = kernel
        for _ in range(dims - 1):
            full = full[..., None] * kernel
        full = full / full.sum()
        self.register_buffer("kernel", full.expand(channels, 1, *full.shape).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool2d if self.dims == 2 else F.max_pool3d
        conv = F.conv2d if self.dims == 2 else F.conv3d
        x = pool(F.pad(x, (0, 1) * self.dims, mode="replicate"), kernel_size=2, stride=1)
        x = F.pad(x, (1, 1) * self.dims, mode="replicate")
        return conv(x, self.kernel, stride=2, groups=self.channels)


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; spatial sizes must be multiples of ``2**depth``.

    residual: add the input to the output (CARE's and N2V's default for restoration; requires
    in_channels == out_channels).
    """

    def __init__(self, dims: int = 2, in_channels: int = 1, out_channels: int = 1, depth: int = 2,
                 base_channels: int = 32, batch_norm: bool = True, residual: bool = False,
                 layout: str = "plain", blur_pool: bool = False, top_skip: bool = True):
        super().__init__()
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        if layout not in ("plain", "csbdeep"):
            raise ValueError(f"layout must be 'plain' or 'csbdeep', got {layout!r}")
        conv, _, pool = _layers(dims)
        self.residual, self.top_skip = residual, top_skip
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        self.pools = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(ConvBlock(dims, c, w, batch_norm))
            self.pools.append(MaxBlurPool(dims, w) if blur_pool else pool(2))
            c = w
        halve = layout == "csbdeep"
        below = widths[-2] if halve else widths[-1]        # what the bottleneck hands upwards
        self.bottom = ConvBlock(dims, c, below, batch_norm, c_mid=widths[-1])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level in reversed(range(depth)):
            w_skip = widths[level]
            skip = w_skip if (level > 0 or top_skip) else 0
            out = widths[level - 1] if halve and level > 0 else w_skip
            self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.merge.append(ConvBlock(dims, below + skip, out, batch_norm, c_mid=w_skip))
            below = out
        self.head = conv(below, out_channels, 1)

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Named stages from input to output (fine-tuning freezes and schedules by stage): each
        encoder level, the bottleneck, each decoder level, the head."""
        encoder = [(f"encoder{i}", [block]) for i, block in enumerate(self.down)]
        decoder = [(f"decoder{i}", [merge]) for i, merge in enumerate(self.merge)]
        return [*encoder, ("bottleneck", [self.bottom]), *decoder, ("head", [self.head])]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck's activations (the features dataset-shift checks compare)."""
        h = x
        for block, pool in zip(self.down, self.pools):
            h = pool(block(h))
        return self.bottom(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block, pool in zip(self.down, self.pools):
            h = block(h)
            skips.append(h)
            h = pool(h)
        h = self.bottom(h)
        for level, (up, merge, skip) in enumerate(zip(self.up, self.merge, reversed(skips))):
            top = level == len(self.up) - 1
            h = up(h)
            h = merge(torch.cat([h, skip], dim=1) if self.top_skip or not top else h)
        out = self.head(h)
        return out + x if self.residual else out


def restoration_unet(dims: int = 2, channels: int = 1, depth: int = 2, base_channels: int = 32,
                     batch_norm: bool = True, layout: str = "plain", blur_pool: bool = False,
                     top_skip: bool = True, residual: bool = True) -> UNet:
    """The U-Net of CARE, Noise2Noise and Noise2Void (image in, image of the same channels out);
    the architectures' ``network`` entry.

    ``residual=False`` for N2V2: with median masking, a residual network's identity already
    predicts the masked pixels well (their input *is* the neighbourhood median), so it learns
    nothing for the unmasked ones; our first N2V2 build gained 0.2 dB for that reason."""
    return UNet(dims=dims, in_channels=channels, out_channels=channels, depth=depth,
                base_channels=base_channels, batch_norm=batch_norm, residual=residual, layout=layout,
                blur_pool=blur_pool, top_skip=top_skip)


class SegmentationUNet(nn.Module):
    """A U-Net whose output channels are split into named heads, each with its activation:
    ``sigmoid`` (probabilities), ``softmax`` (classes), ``linear`` (distances, flows).

    ``forward`` returns the activated outputs (what the package exports and the runtime tiles);
    ``logits`` the raw ones, for numerically stable losses.
    """

    ACTIVATIONS = ("linear", "sigmoid", "softmax")

    def __init__(self, heads: list[dict], dims: int = 2, channels: int = 1, depth: int = 3,
                 base_channels: int = 32, batch_norm: bool = True, layout: str = "plain",
                 channels_last_output: bool = False):
        super().__init__()
        self.channels_last_output = channels_last_output   # b, *spatial, c (bioimage.io's StarDist op)
        for head in heads:
            if head.get("activation", "linear") not in self.ACTIVATIONS:
                raise ValueError(f"head {head.get('name')}: activation must be one of {self.ACTIVATIONS}")
        self.heads = [(h["name"], int(h["channels"]), h.get("activation", "linear")) for h in heads]
        self.unet = UNet(dims=dims, in_channels=channels, out_channels=sum(c for _, c, _ in self.heads),
                         depth=depth, base_channels=base_channels, batch_norm=batch_norm, layout=layout)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        return self.unet.stages()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.encode(x)

    def split(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The output channels by head name."""
        parts = torch.split(y, [c for _, c, _ in self.heads], dim=1)
        return {name: part for (name, _, _), part in zip(self.heads, parts)}

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        parts = []
        for (_, _, activation), part in zip(self.heads, self.split(y).values()):
            if activation == "sigmoid":
                part = torch.sigmoid(part)
            elif activation == "softmax":
                part = torch.softmax(part, dim=1)
            parts.append(part)
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activate(self.logits(x))
        return y.movedim(1, -1) if self.channels_last_output else y
