"""``zoo import bioimageio PATH_OR_ZIP``: a bioimage.io model package as a zoo package.

The description is validated by bioimageio.spec first (its messages are passed on). Supported
now: ``pytorch_state_dict`` weights whose architecture is an installed zoo architecture
(``import_from: zoo.models.<arch>.network``): every package exported by ``zoo export bioimageio``
and any other built on our architectures. The state dict is read with
``torch.load(weights_only=True)`` after its sha256 is checked; nothing is unpickled. Other
weight formats (ONNX-only, TorchScript, TensorFlow, Keras) are refused, naming the format.
"""
from __future__ import annotations

import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml

from .. import architectures, spec as specs
from ..errors import InputError, IntegrityError, SpecError, UnknownArchitectureError
from ..hashing import sha256_file
from ..package import build, files
from ..spec import Op, Training

OTHER_FORMATS = ("onnx", "torchscript", "keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle", "tensorflow_js")


def _extract(archive: Path, into: Path) -> Path:
    """Unpack a bioimage.io zip, refusing members that would land outside ``into``."""
    with zipfile.ZipFile(archive) as z:
        for member in z.infolist():
            files.safe_join(into, member.filename)
        z.extractall(into)
    return into


def _validate(rdf: Path) -> dict:
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(str(rdf), perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        problems = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in descr.validation_summary.errors]
        raise SpecError(f"{rdf} is not a valid bioimage.io model description", problems=problems, source=str(rdf))
    return yaml.safe_load(rdf.read_text(encoding="utf-8"))


def _architecture(weights: dict) -> tuple[architectures.Architecture, dict]:
    state = weights.get("pytorch_state_dict")
    if not state:
        present = [f for f in OTHER_FORMATS if f in weights]
        raise InputError(f"importing {' / '.join(present) or 'these'} weights is not supported yet: bioimage-zoo "
                         "imports pytorch_state_dict weights of an installed architecture")
    arch_descr = state.get("architecture", {})
    target = f"{arch_descr.get('import_from')}:{arch_descr.get('callable')}"
    for arch in architectures.available().values():
        if arch.network == target:
            return arch, dict(arch_descr.get("kwargs") or {})
    raise UnknownArchitectureError(f"the package's architecture {target} is not an installed bioimage-zoo "
                                   "architecture; only those can be imported from a pytorch_state_dict")


def _preprocessing(ops_in: list[dict]) -> list[Op]:
    out = []
    for op in ops_in or []:
        kwargs = op.get("kwargs") or {}
        if op["id"] == "scale_range":
            out.append(Op("percentile_normalize", {"low": float(kwargs.get("min_percentile", 0.0)),
                                                   "high": float(kwargs.get("max_percentile", 100.0))}))
        elif op["id"] == "zero_mean_unit_variance":
            out.append(Op("zero_mean_unit_variance", {}))
        else:
            raise InputError(f"the bioimage.io preprocessing '{op['id']}' has no bioimage-zoo equivalent yet")
    return out


def import_package(source: str | Path, out: str | Path, name: str | None = None, overwrite: bool = False) -> Path:
    """Validate the bioimage.io package at ``source`` (folder, rdf.yaml or .zip) and write a zoo package."""
    import torch

    source = Path(source)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _extract(source, Path(tmp)) if source.suffix == ".zip" else (source if source.is_dir() else source.parent)
        rdf_path = folder / "rdf.yaml" if (folder / "rdf.yaml").is_file() else folder / "bioimageio.yaml"
        rdf = _validate(rdf_path)
        arch, params = _architecture(rdf.get("weights", {}))
        weights = rdf["weights"]["pytorch_state_dict"]
        path = files.safe_join(folder, weights["source"])
        if weights.get("sha256") and sha256_file(path) != weights["sha256"]:
            raise IntegrityError(f"{weights['source']}: sha256 differs from the one the description pins")
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = arch.build_network(params)
        network.load_state_dict(state)

        spec = specs.load(arch.blueprint_path(int(params.get("dims", 2))))
        spec.architecture_params = params
        spec.name = name or re.sub(r"[^a-z0-9._-]+", "-", rdf["name"].lower()).strip("-")
        spec.version = str(rdf.get("version") or "0.1.0")
        spec.description = rdf.get("description") or spec.description
        spec.authors = [{"name": a["name"]} for a in rdf.get("authors", [])] or spec.authors
        spec.license = rdf.get("license", spec.license)
        spec.cite = [{"text": c["text"], **({"doi": c["doi"]} if c.get("doi") else {})} for c in rdf.get("cite", [])]
        spec.tags = list(rdf.get("tags") or spec.tags)
        inp, rdf_in = spec.inputs[0], rdf["inputs"][0]
        channel = next((a for a in rdf_in["axes"] if a.get("type") == "channel"), None)
        if channel and channel.get("channel_names"):
            inp.channels = list(channel["channel_names"])
        inp.preprocessing = _preprocessing(rdf_in.get("preprocessing"))
        ours = (rdf.get("config") or {}).get("bioimage-zoo")
        if ours:                       # our own export: the post-processing it could not express
            spec.outputs[0].postprocessing = [Op(p["op"], p.get("params") or {}) for p in ours["postprocessing"]]
        test_input = np.load(files.safe_join(folder, rdf_in["test_tensor"]["source"]), allow_pickle=False)
        from ..trainers.data import intensity_statistics

        training = Training(
            data={"description": f"not described: imported from the bioimage.io model '{rdf['name']}' "
                                 f"{rdf.get('version', '')} (n_train 0 = unknown)",
                  "source": f"bioimage.io package {source.name}", "fingerprint": sha256_file(rdf_path),
                  "n_train": 0, "n_validation": 0},
            statistics=intensity_statistics([test_input]),
            metrics={}, config={"imported_from": {"name": rdf["name"], "format_version": rdf.get("format_version"),
                                                  "statistics_from": "the package's test input"}}, parent=None)
        return build.build(spec, network, out, training, test_input, name=spec.name, version=spec.version,
                           description=spec.description, overwrite=overwrite)
