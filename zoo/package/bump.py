"""``zoo bump PACKAGE --version V --out DIR``: the next version of a package, written beside it.

What may change: the weights (a new ``.onnx`` graph for an imported graph, a new ``.safetensors``
state dict for an architecture's package), the test input, the halo and the pre/post-processing
ops, the description. Everything that depends on them is recomputed as a first build would:
ONNX export, the test output with the zoo's own runtime, the sha256 of every file, the cover
and the card. The old package is left as it is, and a version number that is not higher than
its own is refused (published versions are immutable).
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from packaging.version import InvalidVersion, Version

from .. import architectures, spec as specs
from ..errors import InputError
from ..hashing import sha256_file
from ..spec import Spec, Training
from . import build, files, readers


def _check_newer(spec: Spec, version: str) -> None:
    try:
        newer = Version(version) > Version(spec.version)
    except InvalidVersion:
        raise InputError(f"--version '{version}' is not a version: expected MAJOR.MINOR.PATCH, e.g. 1.1.0") from None
    if not newer:
        raise InputError(f"--version {version} is not higher than {spec.ref}'s own: versions are immutable, so a new "
                         f"version needs a new, higher number (e.g. {_next(spec.version)})")


def _next(version: str) -> str:
    major, minor, patch = (list(Version(version).release) + [0, 0])[:3]
    return f"{major}.{minor}.{patch + 1}"


def _training(old: Training | None, previous: str, weights: Path | None, graph_only: bool) -> Training | None:
    """The old training record, pointing back to the version it came from; new weights drop
    the metrics measured on the old ones (and, for a graph, fingerprint the new file)."""
    if old is None:
        return None
    training = copy.deepcopy(old)
    training.config["previous_version"] = previous
    if weights is not None:
        training.metrics = {}
        training.config["weights_from"] = weights.name
        if graph_only:
            training.data["fingerprint"] = sha256_file(weights)
    return training


def _changed(spec: Spec, version: str, halo, input_ops, output_ops, description) -> Spec:
    from ..export.onnx_import import parse_ops, per_axis
    from ..runtime.ops import POSTPROCESSING, PREPROCESSING

    new = spec.copy()
    new.version = version
    inp, out = new.inputs[0], new.outputs[0]
    if halo is not None:
        inp.halo = per_axis(halo, inp.spatial_axes, "--halo")
    if input_ops is not None:
        inp.preprocessing = parse_ops(input_ops, PREPROCESSING, "--input-op")
    if output_ops is not None:
        out.postprocessing = parse_ops(output_ops, POSTPROCESSING, "--output-op")
    new.description = description or new.description
    return new


def _graph(spec: Spec, root: Path, weights: Path | None, axes: str | None, work: Path) -> tuple[Path, int]:
    """The ONNX graph of the new version: ``weights`` fitted as the first import fitted its
    graph (the axes it recorded, unless ``axes``), or the package's own."""
    from ..export import onnx_import

    if weights is None:
        return files.safe_join(root, spec.weights.onnx.file), spec.weights.onnx_opset
    inp = spec.inputs[0]
    recorded = ((spec.training.config if spec.training else {}).get("imported_from") or {})
    their_in = axes or recorded.get("axes") or inp.axes
    their_out = axes or recorded.get("output_axes") or their_in
    spatial = onnx_import.check_axes(their_in, "--axes")
    graph, opset, _ = onnx_import.prepare_graph(weights, their_in, their_out, spatial, inp.n_channels, work)
    n_out = onnx_import.output_channels(graph, inp.n_channels, inp.shape_step or [1] * len(spatial),
                                        inp.shape_min or [1] * len(spatial))
    if n_out != spec.outputs[0].n_channels:
        raise InputError(f"{weights.name} gives {n_out} output channel(s); {spec.ref} gives "
                         f"{spec.outputs[0].n_channels}. A different output is a different model: import it with "
                         "`zoo import onnx` under its own name")
    return graph, opset


def _network(spec: Spec, root: Path, weights: Path | None):
    """The architecture's network with the new (or the package's own) safetensors weights."""
    if weights is not None and weights.suffix != ".safetensors":
        raise InputError(f"{spec.ref} is a '{spec.architecture_id}' package: its weights are a safetensors state "
                         f"dict, so give --weights NEW.safetensors (to publish an ONNX graph instead, use "
                         "`zoo import onnx`)")
    if weights is not None and not weights.is_file():
        raise InputError(f"{weights} is not a file")
    network = architectures.get(spec.architecture_id).build_network(spec.architecture_params)
    readers.load_weights(network, weights or files.safe_join(root, spec.weights.safetensors.file))
    return network


def bump(package: str | Path, out: str | Path, version: str, *, weights: str | Path | None = None,
         test_input: str | Path | np.ndarray | None = None, halo: int | Sequence[int] | None = None,
         input_ops: Sequence | None = None, output_ops: Sequence | None = None, axes: str | None = None,
         description: str | None = None, overwrite: bool = False) -> Path:
    """Write version ``version`` of the package folder ``package`` to ``out`` and return its path.

    ``weights``: new weights (``.onnx`` for an imported graph, in the axes it was imported with
    unless ``axes``; ``.safetensors`` otherwise); ``test_input``: a new raw test input (array or
    ``.npy``, natural layout or the tensor's axes), else the package's own; ``halo``,
    ``input_ops``, ``output_ops`` (replacing the lists), ``description``: new values. The package's
    shift check (``trust``) is not carried over: it was calibrated for the old version."""
    from ..export.onnx_import import raw_test_input

    root, out = Path(package), Path(out)
    if not (root / specs.SPEC_FILE).is_file():
        raise InputError(f"{root} is not a package folder (no {specs.SPEC_FILE}): give the folder of the version "
                         "to start from (`zoo pull NAME` prints where it is)")
    if out.resolve() == root.resolve():
        raise InputError(f"--out {out} is the package itself: the new version is written beside the old one, "
                         "which stays as it is")
    spec = specs.load(root)
    files.verify(spec, root)
    _check_newer(spec, version)
    new = _changed(spec, version, halo, input_ops, output_ops, description)
    specs.validate({**new.to_dict(), "kind": "blueprint"}, source=f"{new.ref}")
    inp, n = new.inputs[0], len(new.inputs[0].spatial_axes)
    sample = readers.array(files.safe_join(root, spec.test.inputs[0].file)) if test_input is None else \
        raw_test_input(test_input, inp.axes, inp.spatial_axes, inp.n_channels, inp.shape_step or [1] * n,
                       inp.shape_min or [1] * n)[0]
    weights = Path(weights) if weights is not None else None
    if not spec.graph_only:
        network = _network(spec, root, weights)
        return build.build(new, network, out, _training(spec.training, spec.ref, weights, False), sample,
                           overwrite=overwrite)
    with tempfile.TemporaryDirectory() as tmp:
        graph, opset = _graph(spec, root, weights, axes, Path(tmp))
        return build.build_graph(new, graph, opset, out, _training(spec.training, spec.ref, weights, True), sample,
                                 overwrite=overwrite)
