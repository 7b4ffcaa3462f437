"""Cellpose-style flows (Stringer et al., Nature Methods 2021): spatial gradients of a diffusion
from each object's centre plus cell probability; masks by following the flows. 2D and 3D."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="cellpose",
    package=__name__,
    network="zoo.models.cellpose.network:build",
    training="zoo.models.cellpose.module:CellposeModule",
    needs_targets=True,
    task="segmentation",
)
