"""Reading a bioimage.io model description for import: finding it, validating it with
bioimageio.spec (format 0.4 converted to 0.5, nothing downloaded), fetching one file it names
(its sha256 checked; a URL only online), and choosing the weight format to import without running
a package's code unless asked (see :mod:`zoo.export.bioimageio_import`).
"""
from __future__ import annotations

import re
from pathlib import Path

from .. import architectures
from ..errors import InputError, IntegrityError, SpecError
from ..hashing import sha256_file
from ..package import files
from ..spec import load_yaml_file

SUPPORTED = ("onnx", "pytorch_state_dict", "torchscript")
CONVERTIBLE = {"keras_hdf5": "tf2onnx with TensorFlow/Keras", "keras_v3": "tf2onnx with Keras 3",
               "tensorflow_saved_model_bundle": "tf2onnx with TensorFlow",
               "tensorflow_js": "tfjs-to-tf and tf2onnx with TensorFlow"}
DOWNLOAD_LIMIT = 4 << 30


def find_description(folder: Path) -> Path:
    """The description file in a package folder: ``rdf.yaml``, ``bioimageio.yaml``, or the one
    ``*bioimageio.yaml``."""
    for name in ("rdf.yaml", "bioimageio.yaml"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*bioimageio.yaml"))
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"{folder} holds several descriptions ({', '.join(p.name for p in found)}): name the one "
                         "to import")
    raise InputError(f"{folder} holds no rdf.yaml or *bioimageio.yaml: not a bioimage.io package")


def _fix_fixed_output_shapes(raw: dict) -> dict:
    """A format-0.4 output with a fixed shape equal to an input's and a halo is written as a
    reference to that input (bioimageio.spec's conversion to 0.5 refuses the fixed form)."""
    if not str(raw.get("format_version", "")).startswith("0.4"):
        return raw
    shapes = {i.get("name"): i.get("shape") for i in raw.get("inputs") or [] if isinstance(i, dict)}
    for out in raw.get("outputs") or []:
        shape = out.get("shape") if isinstance(out, dict) else None
        if isinstance(shape, list) and out.get("halo"):
            name = next((n for n, s in shapes.items() if s == shape), None)
            if name is not None:
                out["shape"] = {"reference_tensor": name, "scale": [1.0] * len(shape), "offset": [0] * len(shape)}
    return raw


def read_description(rdf_path: Path):
    """(parsed 0.5 model description, the raw dict): validated, nothing downloaded."""
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description

    raw = load_yaml_file(rdf_path, aliases=True)    # bounded (aliases counted as expanded), before bioimage.io's reader
    if not isinstance(raw, dict):
        raise SpecError(f"{rdf_path} is not a bioimage.io description (no mapping at the top level)")
    if raw.get("type") != "model":
        raise InputError(f"{rdf_path} describes a {raw.get('type')}, not a model")
    context = ValidationContext(root=rdf_path.parent, file_name=rdf_path.name, perform_io_checks=False,
                                log_warnings=False)
    descr = build_description(_fix_fixed_output_shapes(dict(raw)), context=context, format_version="latest")
    if isinstance(descr, InvalidDescr):
        problems = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in descr.validation_summary.errors]
        raise SpecError(f"{rdf_path} is not a valid bioimage.io model description", problems=problems,
                        source=str(rdf_path))
    return descr, raw


def _is_url(source) -> bool:
    return bool(re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", str(source)))


def local_file(folder: Path, source, sha256, what: str, offline: bool, work: Path) -> Path:
    """The file ``source`` names, its sha256 checked: in the package, or downloaded (online only)."""
    if _is_url(source):
        if offline:
            raise InputError(f"{what} is at {source}, outside the package, and this is offline (--offline, "
                             "ZOO_OFFLINE): download it into the package folder, set its source to the relative "
                             "path, or import online")
        path = _download(str(source), work / Path(str(source)).name, what)
    else:
        path = files.safe_join(folder, str(source))
        if not path.is_file():
            raise InputError(f"{what} {source} is not in the package ({folder}): the description names a missing "
                             "file")
    if sha256 and sha256_file(path) != str(sha256):
        raise IntegrityError(f"{what} {source}: sha256 differs from the one the description pins")
    return path


def _download(url: str, path: Path, what: str) -> Path:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:   # noqa: S310
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > DOWNLOAD_LIMIT:
                    raise InputError(f"{what} at {url} is larger than {DOWNLOAD_LIMIT >> 30} GiB; refused")
                out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        raise InputError(f"{what}: downloading {url} failed ({getattr(e, 'reason', e)}); check the network, or put "
                         "the file in the package and name it by its relative path") from None
    return path


def installed_architecture(raw: dict, entry) -> tuple[architectures.Architecture, dict] | None:
    """The installed zoo architecture a state dict belongs to: named by library import
    (``zoo.models.<id>.network``) or by our own export's config; None otherwise."""
    arch_descr = getattr(entry, "architecture", None)
    kwargs = dict(getattr(arch_descr, "kwargs", None) or {})
    if hasattr(arch_descr, "import_from"):
        target = f"{arch_descr.import_from}:{arch_descr.callable}"
        found = next((a for a in architectures.available().values() if a.network == target), None)
        if found is not None:
            return found, kwargs
    ours = ((raw.get("config") or {}).get("bioimage-zoo") or {}).get("architecture") or {}
    if ours.get("id") in architectures.available():
        return architectures.get(ours["id"]), dict(ours.get("params") or {})
    return None


def choose_weights(descr, raw: dict, prefer: str | None = None, trust_code: bool = False) -> str:
    """The weight format to import (see the module docstring); a refusal names every format."""
    present = [f for f in (*SUPPORTED, *CONVERTIBLE) if getattr(descr.weights, f, None) is not None]
    state = getattr(descr.weights, "pytorch_state_dict", None)
    if prefer:
        if prefer not in SUPPORTED:
            need = f" (converting it needs {CONVERTIBLE[prefer]}, which bioimage-zoo does not install)" \
                if prefer in CONVERTIBLE else ""
            raise InputError(f"weights: bioimage-zoo imports {', '.join(SUPPORTED)}, not '{prefer}'{need}")
        if prefer not in present:
            raise InputError(f"weights: the package has no '{prefer}' weights (it has: {', '.join(present)})")
        if prefer == "pytorch_state_dict" and installed_architecture(raw, state) is None and not trust_code:
            raise InputError(_needs_trust(state))
        return prefer
    if state is not None and installed_architecture(raw, state) is not None:
        return "pytorch_state_dict"
    if "onnx" in present:
        return "onnx"
    if state is not None and trust_code:
        return "pytorch_state_dict"
    reasons = []
    if state is not None:
        reasons.append(_needs_trust(state))
    if "torchscript" in present:
        reasons.append("weights.torchscript: TorchScript is a program the model's authors wrote; import it with "
                       "--weights torchscript if you trust them (see SECURITY.md)")
    for fmt in present:
        if fmt in CONVERTIBLE:
            reasons.append(f"weights.{fmt}: converting it to ONNX needs {CONVERTIBLE[fmt]}, which bioimage-zoo does "
                           "not install; convert it yourself and import the .onnx (`zoo import onnx`)")
    raise InputError("nothing to import without running the package's code:\n  " + "\n  ".join(reasons))


def _needs_trust(entry) -> str:
    arch = getattr(entry, "architecture", None)
    where = f"{arch.source}:{arch.callable}" if hasattr(arch, "source") else \
        f"{getattr(arch, 'import_from', '?')}:{getattr(arch, 'callable', '?')}"
    return (f"weights.pytorch_state_dict: its architecture is code from the package ({where}); bioimage-zoo runs "
            "a package's code only when you ask: import with --trust-code (it runs that file once, here, and stores "
            "the network as TorchScript)")
