"""Noise2Void 2 (Hoeck et al., ECCV workshops 2022): N2V without checkerboard artefacts."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="n2v2",
    package=__name__,
    network="zoo.nn.unet:restoration_unet",
    training="zoo.models.n2v2.module:N2V2Module",
)
