"""The StarDist network: a U-Net with an object-probability head and ``n_rays`` distance heads."""
from zoo.nn.unet import SegmentationUNet


def build(dims: int = 2, channels: int = 1, n_rays: int = 32, depth: int = 3, base_channels: int = 32,
          batch_norm: bool = True, layout: str = "plain", channels_last_output: bool = False) -> SegmentationUNet:
    """``channels_last_output``: outputs as ``b, *spatial, c``, the layout bioimage.io's
    ``stardist_postprocessing`` leaves its labels in (used by the bioimage.io export only)."""
    if n_rays % 4:
        raise ValueError(f"n_rays must be a multiple of 4 (rotation augmentation permutes rays), got {n_rays}")
    return SegmentationUNet([{"name": "probability", "channels": 1, "activation": "sigmoid"},
                             {"name": "distances", "channels": n_rays, "activation": "linear"}],
                            dims=dims, channels=channels, depth=depth, base_channels=base_channels,
                            batch_norm=batch_norm, layout=layout, channels_last_output=channels_last_output)


def describe_outputs(params: dict, output) -> None:
    """Name the output channels (``probability``, ``ray00`` ...) for ``params['n_rays']`` rays."""
    n = int(params.get("n_rays", 32))
    output.channels = ["probability"] + [f"ray{k:02d}" for k in range(n)]
    output.description = ("instance labels (0 = background, int32) from polygon non-maximum suppression; raw "
                          f"outputs on request: the object probability, then {n} ray distances in pixels (ray k at "
                          f"angle 2*pi*k/{n} from the x axis towards y)")
