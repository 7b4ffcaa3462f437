"""Noise2Noise (Lehtinen et al., ICML 2018): denoising from pairs of independent noisy images."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="n2n",
    package=__name__,
    network="zoo.nn.unet:restoration_unet",
    training="zoo.models.n2n.module:N2NModule",
    needs_targets=True,
)
