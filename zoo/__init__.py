"""bioimage-zoo: a model zoo and registry for deep learning on microscopy images.

    import zoo
    model = zoo.load("n2v-w2s")          # from the local registry (or a package folder)
    denoised = model.predict(image)      # numpy in, numpy out, tiled

The application layer, :mod:`zoo.api`, is re-exported here (``zoo.load``, ``zoo.predict``,
``zoo.predict_file``, ``zoo.pull``, ``zoo.publish``, ``zoo.train``, ``zoo.finetune`` ...); the
api functions named like a subpackage of ``zoo`` are reached as ``zoo.api.registry``,
``zoo.api.evaluate``, ``zoo.api.export``, ``zoo.api.serve`` and ``zoo.api.recommend``. Its imports are lazy, so
``import zoo`` stays fast.
"""
from __future__ import annotations

from . import api
from .api import (bump, check_shift, classify, compare, finetune, import_model, load, measure, predict, predict_file,
                  predict_files, prediction_figure, publish, pull, train, validate)

__version__ = "0.1.0"

__all__ = ["api", "bump", "check_shift", "classify", "compare", "finetune", "import_model", "load", "measure",
           "predict", "predict_file", "predict_files", "prediction_figure", "publish", "pull", "train", "validate", "__version__"]
