"""``zoo import bioimageio PATH_OR_ZIP``: a bioimage.io model description as a zoo package.

The description (format 0.4 or 0.5; a folder, its ``rdf.yaml`` / ``*bioimageio.yaml``, or a
zip) is read by bioimageio.spec, converted to format 0.5, and validated without any download.
Its tensors become the zoo's (:mod:`zoo.export.bioimageio_tensors`): fixed and parametrized
sizes, default axis ids, outputs scaled or cropped relative to an input, several inputs and
outputs. One weight format is imported, the first of:

- ``pytorch_state_dict`` of an installed zoo architecture (our own exports): a full package that
  torch and ONNX Runtime run and that can be fine-tuned;
- ``onnx``: a package around the graph (architecture ``onnx-graph``), run by ONNX Runtime;
- ``torchscript``, only when asked for (``weights="torchscript"``): TorchScript is a program;
- ``pytorch_state_dict`` whose architecture is the package's own Python source, only with
  ``trust_code=True``: the source runs once, here, to build the network, which is then stored
  as TorchScript, so the zoo package carries no Python code.

Keras and TensorFlow weights are refused, naming what a conversion would need. Only the chosen
weights are read, each file checked against the sha256 the description pins; a remote file is
downloaded only when it is the chosen one, and never offline. Before a package is written the
zoo's runtime must reproduce the description's own test outputs (as ``bioimage test`` does);
the largest error is recorded in the package.
"""
from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .. import spec as specs
from ..errors import InputError, IntegrityError, ReproducibilityError
from ..hashing import sha256_file
from ..package import archive, build, readers
from ..spec import Op, Spec, Training
from . import bioimageio_tensors as bt
from . import onnx_layout

from .bioimageio_read import (SUPPORTED, choose_weights, find_description, installed_architecture,  # noqa: F401
                              local_file, read_description)

log = logging.getLogger("zoo.import")


# ----------------------------------------------------------------------------- description
def _describe(spec: Spec, descr, raw: dict, name: str | None) -> None:
    """Copy the package's identity, credits and licence onto ``spec``."""
    spec.name = name or re.sub(r"[^a-z0-9._-]+", "-", str(descr.name).lower()).strip("-.")[:64] or "imported"
    spec.version = str(raw.get("version") or getattr(descr, "version", None) or "0.1.0")
    if not re.match(r"^\d+\.\d+\.\d+$", spec.version):
        spec.version = "0.1.0"
    spec.description = str(descr.description or spec.description)
    spec.authors = [{"name": str(a.name)} for a in descr.authors or []] or spec.authors
    spec.license = str(descr.license or spec.license)
    spec.cite = [{"text": str(c.text), **({"doi": str(c.doi)} if getattr(c, "doi", None) else {})}
                 for c in descr.cite or []]
    spec.tags = list(dict.fromkeys(str(t) for t in descr.tags or [])) or spec.tags


def _task(tags) -> str:
    text = " ".join(str(t) for t in tags or []).lower()
    for family in ("segmentation", "classification", "detection"):
        if family in text:
            return family
    return "restoration"


def _training(descr, rdf_path: Path, source: Path, test_input: np.ndarray, weights: str,
              reproduced: dict) -> Training:
    from ..images import intensity_statistics

    return Training(
        data={"description": f"not described: imported from the bioimage.io model '{descr.name}' "
                             "(n_train 0 = unknown)",
              "source": f"bioimage.io package {source.name}", "fingerprint": sha256_file(rdf_path),
              "n_train": 0, "n_validation": 0},
        statistics=intensity_statistics([test_input]),
        metrics={}, config={"imported_from": {"name": str(descr.name), "format_version": str(descr.format_version),
                                              "weights": weights, "statistics_from": "the package's test input",
                                              "reproduced": reproduced}},
        parent=None)


def _zoo_postprocessing(raw: dict) -> list[Op]:
    """Our own export's post-processing that bioimage.io ops cannot express (instances, the
    input's scale restored), kept in its config; nothing for anyone else's package."""
    ours = (raw.get("config") or {}).get("bioimage-zoo") or {}
    return [Op(p["op"], p.get("params") or {}) for p in ours.get("postprocessing") or []]


def _tolerance(raw: dict) -> tuple[float, float]:
    tolerances = ((raw.get("config") or {}).get("bioimageio") or {}).get("reproducibility_tolerance") or []
    first = tolerances[0] if tolerances else {}
    return float(first.get("relative_tolerance", 1e-3)), float(first.get("absolute_tolerance", 1e-4))


def to_ours(array: np.ndarray, their: str, spatial: str) -> np.ndarray:
    """A tensor in the description's axes as the zoo's ``b, c, *spatial``."""
    array = np.asarray(array)
    if "b" not in their:
        array, their = array[None], "b" + their
    return onnx_layout.to_ours(array, their, spatial)


def _test_tensors(descr, tensors: bt.Tensors, folder: Path, offline: bool, work: Path):
    """(inputs by name, expected outputs by name) in the zoo's layout."""
    def load(t, their, what):
        path = local_file(folder, t.test_tensor.source, t.test_tensor.sha256, what, offline, work)
        return to_ours(np.load(path, allow_pickle=False), their, tensors.spatial)

    xs = {str(t.id): load(t, their, f"the test input of {t.id}").astype(np.float32)
          for t, their in zip(descr.inputs, tensors.their_inputs)}
    ys = {str(t.id): load(t, their, f"the test output of {t.id}")
          for t, their in zip(descr.outputs, tensors.their_outputs)}
    return xs, ys


# ----------------------------------------------------------------------------- reproduction
def predict_whole(spec: Spec, runner, xs: dict, raw: bool = True) -> dict:
    """The outputs of a zoo package for whole input tensors, run as ``bioimageio test`` runs a
    description: one tile, no halo, and an output the network crops (``offset``) cropped."""
    from ..runtime.predictor import Predictor

    whole = spec.copy()
    for inp in whole.inputs:
        inp.halo = None
    size = list(next(iter(xs.values())).shape[2:])
    got = Predictor(whole, runner).predict_tensors(xs, tile=size, batch_size=1, blend=0, raw=raw)
    for out in spec.outputs:
        crop = [max(0, -int(o)) // 2 for o in out.offset or []]
        if any(crop):
            y = got[out.name]
            got[out.name] = y[(slice(None), slice(None)) + tuple(slice(c, s - c) for c, s in zip(crop, y.shape[2:]))]
    return got


def check_reproduces(spec: Spec, runner, xs: dict, expected: dict, tolerance: tuple[float, float]) -> float:
    """The zoo's runtime (ops and the runner) must give the package's own test outputs when it
    runs the network on the whole test input at once, as ``bioimageio test`` does; returns the
    largest absolute error. (Tiled prediction is then checked against the zoo's own test
    tensors, which the package gets from the zoo.)"""
    from ..opnames import makes_instances

    try:
        got = predict_whole(spec, runner, xs, raw=not makes_instances(spec))
    except (InputError, ReproducibilityError):
        raise
    except Exception as e:   # noqa: BLE001 - runtimes' errors name nodes; say what failed first
        shapes = ", ".join(f"{k} {v.shape}" for k, v in xs.items())
        raise InputError(f"the imported network does not run on the package's test input ({shapes}): {e}") from None
    if makes_instances(spec):       # labels: the same objects (an NMS may differ in a few), not the same ids
        from ..segmentation.metrics import evaluate

        name = spec.outputs[0].name
        f1 = evaluate([e[0] for e in expected[name]], [g[0] for g in got[name]], [0.5])[0]["f1"]
        if f1 < 0.9:
            raise ReproducibilityError(f"the imported network's objects match the package's test output with F1 "
                                       f"{f1:.3f} at IoU 0.5 (at least 0.9 expected)")
        return 0.0
    rtol, atol, worst = *tolerance, 0.0
    for out in spec.outputs:
        y, want = got[out.name], expected[out.name]
        if y.shape != want.shape:
            raise ReproducibilityError(f"output {out.name}: the imported network gives shape {y.shape} on the test "
                                       f"input; the package's test output has shape {want.shape}")
        error = np.abs(y.astype(np.float64) - want)
        allowed = atol + rtol * np.abs(want.astype(np.float64))
        if error.size and not np.all(error <= allowed):
            raise ReproducibilityError(f"output {out.name}: the imported network does not reproduce the package's "
                                       f"own test output (max error {float(error.max()):.3g}, tolerance rtol={rtol}, "
                                       f"atol={atol}); its pre/post-processing may not map exactly onto the zoo's "
                                       "ops")
        worst = max(worst, float(error.max()) if error.size else 0.0)
    return worst


# ----------------------------------------------------------------------------- the importers
def _graph_spec(descr, raw: dict, tensors: bt.Tensors, arch_id: str, name) -> Spec:
    spec = Spec(kind="package", name="imported", version="0.1.0", description="imported", authors=[{"name": "-"}],
                license="CC-BY-4.0", task=_task(descr.tags), architecture_id=arch_id, architecture_params={},
                inputs=tensors.inputs, outputs=tensors.outputs)
    _describe(spec, descr, raw, name)
    return spec


def _import_onnx(descr, raw, tensors: bt.Tensors, folder, out, name, overwrite, offline, work, xs, ys):
    import onnx

    from ..runtime.onnx_session import check_self_contained
    from ..runtime.runners import OnnxRunner

    entry = descr.weights.onnx
    model = onnx.load(str(local_file(folder, entry.source, entry.sha256, "weights.onnx", offline, work)),
                      load_external_data=False)
    check_self_contained(model, str(entry.source))
    ours = "bc" + tensors.spatial
    if len(tensors.inputs) == 1 and len(tensors.outputs) == 1:
        model = onnx_layout.adapt(model, tensors.their_inputs[0], tensors.their_outputs[0], tensors.spatial)
    elif any(t != ours for t in tensors.their_inputs + tensors.their_outputs):
        raise InputError(f"weights.onnx: a graph with several tensors must take and give them as {ours} "
                         f"(it declares {', '.join(tensors.their_inputs + tensors.their_outputs)})")
    graph = onnx_layout.save(model, work / "graph.onnx")
    spec = _graph_spec(descr, raw, tensors, specs.ONNX_GRAPH, name)
    error = check_reproduces(spec, OnnxRunner(graph, device="cpu"), xs, ys, _tolerance(raw))
    spec.outputs[0].postprocessing = _zoo_postprocessing(raw) or spec.outputs[0].postprocessing
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return spec, graph, opset, {"onnx": error}


def _permuting(module, tensors: bt.Tensors):
    """``module`` behind a torch module that takes and gives the zoo's ``b, c, *spatial``."""
    import torch

    ours = "bc" + tensors.spatial

    def perm(src: str, dst: str) -> list[int]:
        return [src.index(a) for a in dst]

    class Permuted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *xs):
            theirs = []
            for x, their in zip(xs, tensors.their_inputs):
                full = their if "b" in their else "b" + their
                full = full if "c" in full else full + "c"
                x = x.permute(*perm(ours, full))
                if "c" not in their:
                    x = x[..., 0]
                if "b" not in their:
                    x = x[0]
                theirs.append(x)
            ys = self.inner(*theirs)
            ys = ys if isinstance(ys, (tuple, list)) else (ys,)
            outs = []
            for y, their in zip(ys, tensors.their_outputs):
                if "b" not in their:
                    y, their = y[None], "b" + their
                if "c" not in their:
                    y, their = y[..., None], their + "c"
                outs.append(y.permute(*perm(their, ours)))
            return tuple(outs) if len(outs) > 1 else outs[0]

    return Permuted().eval()


def _script(module, tensors: bt.Tensors, xs: dict, path: Path) -> Path:
    """Save ``module`` (taking the zoo's layout) as TorchScript: scripted where TorchScript can
    compile it, else traced on the test input and checked at a second size."""
    import torch

    examples = tuple(torch.from_numpy(xs[t.name]) for t in tensors.inputs)
    try:
        scripted = torch.jit.script(module)
    except Exception:   # noqa: BLE001 - arbitrary code; tracing is the fallback
        with torch.no_grad():
            scripted = torch.jit.trace(module, examples, check_trace=False)
        _check_trace(module, scripted, tensors, examples)
    scripted.save(str(path))
    return path


def _check_trace(module, traced, tensors: bt.Tensors, examples) -> None:
    """A traced network must also run correctly at another valid size (tiles differ from the test input)."""
    import torch

    inp = tensors.inputs[0]
    steps = inp.shape_step or [0] * len(inp.spatial_axes)
    if not any(steps):
        return
    grown = [s + st for s, st in zip(examples[0].shape[2:], steps)]
    other = tuple(torch.nn.functional.pad(x, [p for s, g in reversed(list(zip(x.shape[2:], grown))) for p in (0, g - s)],
                                          mode="reflect" if x.ndim in (4, 5) else "constant") for x in examples)
    with torch.no_grad():
        want, got = module(*other), traced(*other)
    want = want if isinstance(want, (tuple, list)) else (want,)
    got = got if isinstance(got, (tuple, list)) else (got,)
    if any(w.shape != g.shape or not torch.allclose(w, g, rtol=1e-3, atol=1e-4) for w, g in zip(want, got)):
        raise InputError("the network's code depends on its input's size in a way TorchScript cannot trace: it gives "
                         "other results at another tile size; ask its authors for onnx or torchscript weights")


def _import_torchscript(descr, raw, tensors: bt.Tensors, folder, out, name, overwrite, offline, work, xs, ys):
    import torch

    from ..runtime.runners import TorchScriptRunner

    entry = descr.weights.torchscript
    path = local_file(folder, entry.source, entry.sha256, "weights.torchscript", offline, work)
    ours = "bc" + tensors.spatial
    if any(t != ours for t in tensors.their_inputs + tensors.their_outputs):
        module = torch.jit.load(str(path), map_location="cpu").eval()
        path = _script(_permuting(module, tensors), tensors, xs, work / "module.pt")
    spec = _graph_spec(descr, raw, tensors, specs.TORCHSCRIPT, name)
    error = check_reproduces(spec, TorchScriptRunner(path, device="cpu"), xs, ys, _tolerance(raw))
    return spec, path, {"torchscript": error}


def _import_trusted(descr, raw, tensors: bt.Tensors, folder, out, name, overwrite, offline, work, xs, ys,
                    announce: Callable[[str], None]):
    import importlib.util

    import torch

    from ..runtime.runners import TorchScriptRunner

    entry = descr.weights.pytorch_state_dict
    arch = entry.architecture
    if not hasattr(arch, "source"):
        raise InputError(f"weights.pytorch_state_dict.architecture: imports {arch.import_from}:{arch.callable} from an "
                         "installed library; bioimage-zoo runs only the package's own source file (--trust-code) or "
                         "its installed architectures")
    source = local_file(folder, arch.source, arch.sha256, "the architecture source", offline, work)
    kwargs = dict(arch.kwargs or {})
    announce(f"--trust-code: running {arch.source} (sha256 {sha256_file(source)[:16]}...) to build "
             f"{arch.callable}(**{kwargs}) for its state dict {entry.source}")
    loader = importlib.util.spec_from_file_location(f"_bioimageio_source_{sha256_file(source)[:12]}", source)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    network = getattr(module, str(arch.callable))(**kwargs)
    state = readers.torch_state_dict(local_file(folder, entry.source, entry.sha256, "weights.pytorch_state_dict",
                                                offline, work))
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise IntegrityError(f"weights.pytorch_state_dict: {entry.source} does not fit {arch.callable}(**{kwargs}): "
                             f"{str(e).splitlines()[0][:300]}") from None
    with torch.no_grad():
        path = _script(_permuting(network.eval(), tensors), tensors, xs, work / "module.pt")
    spec = _graph_spec(descr, raw, tensors, specs.TORCHSCRIPT, name)
    error = check_reproduces(spec, TorchScriptRunner(path, device="cpu"), xs, ys, _tolerance(raw))
    return spec, path, {"pytorch_state_dict (as TorchScript)": error}


def _import_installed(descr, raw, tensors: bt.Tensors, folder, out, name, overwrite, offline, work, xs, ys):

    entry = descr.weights.pytorch_state_dict
    arch, params = installed_architecture(raw, entry)
    params.pop("channels_last_output", None)       # our StarDist export's layout for bioimage.io's op
    state = readers.torch_state_dict(local_file(folder, entry.source, entry.sha256, "weights.pytorch_state_dict",
                                                offline, work))
    network = arch.build_network(params)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise IntegrityError(f"weights.pytorch_state_dict: {entry.source} does not fit {arch.id} with the kwargs the "
                             f"description gives: {str(e).splitlines()[0][:300]}") from None
    spec = specs.load(arch.blueprint_path(int(params.get("dims", 2))))
    spec.architecture_params = params
    _describe(spec, descr, raw, name)
    inp = spec.inputs[0]
    inp.channels = tensors.inputs[0].channels
    inp.preprocessing = tensors.inputs[0].preprocessing
    spec.outputs[0].postprocessing = _zoo_postprocessing(raw) or spec.outputs[0].postprocessing
    return spec, network, {"pytorch_state_dict": None}


def import_package(source: str | Path, out: str | Path, name: str | None = None, overwrite: bool = False,
                   weights: str | None = None, offline: bool | None = None, trust_code: bool = False,
                   announce: Callable[[str], None] | None = None) -> Path:
    """Validate the bioimage.io package at ``source`` (folder, description file or .zip) and write
    a zoo package to ``out``. ``weights`` picks the format; ``trust_code`` lets a state dict's own
    architecture source run once (``announce`` is told what runs; default: a warning in the
    log); ``offline`` (default: ZOO_OFFLINE / HF_HUB_OFFLINE) downloads nothing."""
    from ..registry.remote import offline_by_default

    offline = offline_by_default() if offline is None else offline
    announce = announce or log.warning
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source} does not exist: give a bioimage.io package folder, its description file or "
                         "its .zip")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if source.suffix == ".zip":
            folder = archive.extract(source, work / "package")
            rdf_path = find_description(folder)
        elif source.is_dir():
            folder, rdf_path = source, find_description(source)
        else:
            folder, rdf_path = source.parent, source
        descr, raw = read_description(rdf_path)
        fmt = choose_weights(descr, raw, weights, trust_code)
        tensors = bt.tensors(descr)
        xs, ys = _test_tensors(descr, tensors, folder, offline, work)
        first = next(iter(xs.values()))
        args = (descr, raw, tensors, folder, Path(out), name, overwrite, offline, work, xs, ys)
        if fmt == "onnx":
            spec, graph, opset, reproduced = _import_onnx(*args)
            training = _training(descr, rdf_path, source, first, fmt, reproduced)
            return build.build_graph(spec, graph, opset, out, training, _samples(spec, xs), name=spec.name,
                                     version=spec.version, description=spec.description, overwrite=overwrite)
        if fmt == "pytorch_state_dict" and installed_architecture(raw, descr.weights.pytorch_state_dict):
            spec, network, reproduced = _import_installed(*args)
            training = _training(descr, rdf_path, source, first, fmt, reproduced)
            return build.build(spec, network, out, training, _samples(spec, xs), name=spec.name,
                               version=spec.version, description=spec.description, overwrite=overwrite)
        if fmt == "torchscript":
            spec, module, reproduced = _import_torchscript(*args)
        else:
            spec, module, reproduced = _import_trusted(*args, announce=announce)
        training = _training(descr, rdf_path, source, first, fmt, reproduced)
        return build.build_script(spec, module, out, training, _samples(spec, xs), name=spec.name,
                                  version=spec.version, description=spec.description, overwrite=overwrite)


def _samples(spec: Spec, xs: dict):
    """The test inputs as the package's sample images (``b, c, *spatial`` -> natural layout)."""
    images = {inp.name: (x[0, 0] if x.shape[1] == 1 else np.moveaxis(x[0], 0, -1)) for inp, x in
              zip(spec.inputs, xs.values())}
    return images if len(images) > 1 else next(iter(images.values()))
