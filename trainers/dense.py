"""The trainer of dense models (restoration and segmentation): patches of images and targets."""
from .dispatch import Trainer

TRAINER = Trainer(
    kind="a dense model (restoration or segmentation)",
    learns_from="patches of images (and, for pairs and labels, --target files of the same names)",
    fit="zoo.trainers.fit:fit_dense",
    finetune="zoo.trainers.finetune:finetune_dense",
)
