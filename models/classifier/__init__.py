"""A compact ResNet classifier (He et al., CVPR 2016) for whole images or object crops (2D,
any number of channels and classes)."""
from zoo.architectures import Architecture

architecture = Architecture(
    id="classifier",
    package=__name__,
    network="zoo.nn.resnet:build",
    training="zoo.models.classifier.module:ClassifierModule",
    task="classification",
)
