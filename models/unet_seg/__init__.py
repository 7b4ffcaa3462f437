"""U-Net semantic segmentation (background / interior / boundary) with seeded instance growth
as the instance step (Ronneberger et al. 2015; Caicedo et al. 2019), 2D and 3D."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="unet-seg",
    package=__name__,
    network="zoo.models.unet_seg.network:build",
    training="zoo.models.unet_seg.module:UNetSegModule",
    needs_targets=True,
    task="segmentation",
)
