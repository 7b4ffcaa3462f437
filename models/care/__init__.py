"""CARE (Weigert et al., Nature Methods 2018): supervised restoration from low-/high-SNR pairs."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="care",
    package=__name__,
    network="zoo.nn.unet:restoration_unet",
    training="zoo.models.care.module:CAREModule",
    needs_targets=True,
)
