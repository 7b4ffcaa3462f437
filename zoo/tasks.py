"""What a model does, as one table: the task families a spec's ``task`` names, what a prediction
of each gives, and how the Predictor runs it. The Predictor, the faces and the trainers ask the
task instead of branching on task names, so a new kind of model (keypoints, localisation ...)
is one entry here and its strategy module. Imports nothing but errors, like the spec.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import SpecError


@dataclass(frozen=True)
class Task:
    """name: the family (the part of ``task`` before ``/``).
    per_image: a prediction gives one answer per image (a class), not an image: no tiles, and
        faces show it as a row (a table, JSON) rather than an image file.
    strategy: ``module:object`` whose ``predict(predictor, image, axes)`` and
        ``predict_tensor(predictor, x, raw)`` run it; None for the tiled pipeline.
    trainer: ``module:object``, the :class:`zoo.trainers.dispatch.Trainer` that trains and
        fine-tunes its models (an Architecture may name its own); None: not trainable here.
    """

    name: str
    per_image: bool = False
    strategy: str | None = None
    trainer: str | None = "zoo.trainers.dense:TRAINER"


TASKS = {task.name: task for task in (
    Task("restoration"),
    Task("segmentation"),
    Task("classification", per_image=True, strategy="zoo.classification.predict:STRATEGY",
         trainer="zoo.trainers.classification:TRAINER"),
    Task("detection"),          # maps over the image (e.g. spot probabilities), tiled like restoration
    Task("quantification", trainer=None),
)}
"""Every family the spec schema allows (specs/model.schema.json, ``task``) has an entry."""


def of(spec) -> Task:
    """The task of a spec (package or blueprint)."""
    family = spec.task.split("/")[0]
    if family not in TASKS:
        raise SpecError(f"{spec.name}: unknown task '{spec.task}' (known families: {', '.join(sorted(TASKS))}); "
                        "upgrade bioimage-zoo")
    return TASKS[family]
