"""Noise2Void (Krull et al., CVPR 2019): self-supervised denoising with blind-spot masking."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="n2v",
    package=__name__,
    network="zoo.nn.unet:restoration_unet",
    training="zoo.models.n2v.module:N2VModule",
)
