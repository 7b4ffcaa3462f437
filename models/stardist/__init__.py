"""StarDist (Schmidt et al., MICCAI 2018): star-convex polygons from object probability and
radial distances, with polygon non-maximum suppression (2D)."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="stardist",
    package=__name__,
    network="zoo.models.stardist.network:build",
    training="zoo.models.stardist.module:StarDistModule",
    needs_targets=True,
    task="segmentation",
    describe_outputs="zoo.models.stardist.network:describe_outputs",
)
