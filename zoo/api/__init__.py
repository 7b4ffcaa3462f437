"""The application layer: one function for each thing a user does with the zoo.

Every face (the ``zoo`` command, the HTTP server, the napari plugin, the Dask runner) parses its
input, calls one function here and shows the result; nothing below this layer knows about faces.
The functions are re-exported from :mod:`zoo` (``zoo.load``, ``zoo.predict``, ``zoo.publish``
...). Imports are lazy, so that ``import zoo`` stays fast.

One module per group: :mod:`.sharing` (registries, pull, publish, validate), :mod:`.predicting`
(arrays and files), :mod:`.training` (train, fine-tune, evaluate, compare) and :mod:`.exchange`
(export, import, bump, serve).
"""
from __future__ import annotations

from ..loading import load    # one path from a reference to a ready model, shared with the server
from .batch import BatchReport, predict, predict_files
from .distributed import predict_distributed
from .exchange import bump, export, import_model, serve
from .predicting import (FilePrediction, check_shift, classify, measure, predict_file, predict_tensors_files,
                         prediction_figure)
from .recommending import recommend
from .sharing import (Pulled, Validated, lineage, pull, publish, registry, registry_and_ref, reproduce_test_tensors,
                      search, validate)
from .uncertainty import predict_uncertain
from .training import blueprint_path, compare, evaluate, finetune, train

__all__ = ["registry", "load", "pull", "publish", "validate", "predict", "predict_file", "check_shift",
           "prediction_figure", "measure", "classify", "train", "finetune", "evaluate", "compare", "export",
           "import_model", "bump", "serve", "Pulled", "Validated", "FilePrediction", "registry_and_ref",
           "reproduce_test_tensors", "blueprint_path", "predict_tensors_files", "predict_files", "BatchReport", "recommend", "predict_distributed",
           "search", "lineage", "predict_uncertain"]
