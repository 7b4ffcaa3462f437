"""bioimage.io coverage, both ways (issue 23.6).

Reproduce:  python scripts/check_bioimageio.py [--features] [--json OUT.json] [--only NAME ...]
            python scripts/check_bioimageio.py --exports [--json OUT.json]

Imports (the default): one row per real bioimage.io model description obtainable here (the
corpus in tests/data/bioimageio/, listed in its corpus.json) and per weight format it holds:
whether ``zoo.export.bioimageio_import.import_package`` imports it with that format, whether the
imported model reproduces the description's *own* test outputs (its test inputs run through the
zoo's Predictor: the description's pre-processing, tiling and post-processing as imported; the
largest absolute error against the description's test outputs, with the description's
tolerance), and the refusal, if any, with its reason. One bad description never stops the table.
``--features`` prints what each description needs instead (format, axes, sizes, output size,
tensors, ops, weights), read from the yaml alone.

Exports (``--exports``): every standard package exported to bioimage.io and checked with the
official validator, offline: the `bioimageio test` status, each weight format's reproduction of
the test outputs, and the ops left to bioimage-zoo (no bioimage.io equivalent).
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "bioimageio"
FORMATS = ("onnx", "torchscript", "pytorch_state_dict", "keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle",
           "tensorflow_js")


# ----------------------------------------------------------------------------- reading a description
def corpus(only: list[str] | None = None) -> list[dict]:
    entries = json.loads((CORPUS / "corpus.json").read_text())["descriptions"]
    return [e for e in entries if not only or e["name"] in only]


def read_rdf(path: Path) -> tuple[dict, dict[str, bytes] | Path]:
    """(the raw yaml, where its files are: a folder, or the members of a zip)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
        name = next(n for n in ("rdf.yaml", "bioimageio.yaml") if n in members)
        return yaml.safe_load(members[name]), members
    return yaml.safe_load(path.read_text(encoding="utf-8")), path.parent


def _file(where: dict[str, bytes] | Path, rel: str) -> bytes | None:
    if isinstance(where, dict):
        return where.get(rel)
    path = where / rel
    return path.read_bytes() if path.is_file() else None


def _source(entry) -> str:
    return str(entry.get("source") if isinstance(entry, dict) else entry)


def _is_url(text: str) -> bool:
    return "://" in text


def weight_formats(rdf: dict, where) -> dict[str, str]:
    """format -> 'local' | 'url' | 'missing'."""
    out = {}
    for fmt, entry in (rdf.get("weights") or {}).items():
        if not entry:
            continue
        src = _source(entry)
        out[fmt] = "url" if _is_url(src) else ("local" if _file(where, src) is not None else "missing")
    return out


def _tensor_id(t: dict, default: str) -> str:
    return str(t.get("id") or t.get("name") or default)


def _axes(t: dict, v04: bool) -> list[dict]:
    """Axes of a tensor as 0.5-like dicts (0.4 letters are turned into the same shape)."""
    if v04:
        kinds = {"b": "batch", "c": "channel", "t": "time", "i": "index"}
        return [{"type": kinds.get(a, "space"), "id": a} for a in t["axes"]]
    return list(t["axes"])


def axis_letter(axis: dict) -> str:
    kind = axis.get("type")
    if kind == "batch":
        return "b"
    if kind == "channel":
        return "c"
    if kind == "space":
        return str(axis.get("id") or "x")     # bioimage.io's default id of a space axis is "x"
    return str(axis.get("id") or kind)


def _size_text(t: dict, v04: bool, kind: str) -> str:
    if v04:
        shape = t["shape"]
        if isinstance(shape, list):
            return f"fixed {shape}"
        if "min" in shape:
            return f"min {shape['min']} step {shape['step']}"
        return f"ref {shape['reference_tensor']} scale {shape['scale']} offset {shape['offset']}"
    parts = []
    for a in t["axes"]:
        size = a.get("size")
        if a.get("type") in ("batch",) and size is None:
            continue
        if a.get("type") == "channel":
            continue
        letter = axis_letter(a)
        if isinstance(size, int):
            parts.append(f"{letter}={size}")
        elif isinstance(size, dict) and "min" in size:
            parts.append(f"{letter}>={size['min']}+{size.get('step', 0)}n")
        elif isinstance(size, dict) and "tensor_id" in size:
            rel = f"{size['tensor_id']}.{size['axis_id']}"
            if a.get("scale", 1.0) != 1.0:
                rel += f" (axis scale {a['scale']})"
            if size.get("offset"):
                rel += f"{size['offset']:+d}"
            parts.append(f"{letter}={rel}")
        elif a.get("type") == "batch":
            parts.append(f"b={size}")
        else:
            parts.append(f"{letter}={size}")
    return ", ".join(parts)


def features(rdf: dict, where) -> dict:
    """What a description asks of an importer, read from its yaml alone."""
    v04 = str(rdf.get("format_version", "")).startswith("0.4")
    default_ids = []
    for kind, tensors in (("input", rdf.get("inputs") or []), ("output", rdf.get("outputs") or [])):
        for k, t in enumerate(tensors):
            if not v04 and not t.get("id"):
                default_ids.append(f"{kind} tensor id (-> '{kind}')")
            if not v04:
                default_ids += [f"{_tensor_id(t, kind)} space axis id (-> 'x')" for a in t["axes"]
                                if a.get("type") == "space" and not a.get("id")]

    def ops(tensors, key):
        names = []
        for t in tensors:
            for op in t.get(key) or []:
                name = op.get("id") or op.get("name")
                kwargs = op.get("kwargs") or {}
                detail = ",".join(f"{k}={kwargs[k]}" for k in ("axes", "mode", "axis") if k in kwargs)
                names.append(f"{name}({detail})" if detail else name)
        return names

    halos = []
    for t in rdf.get("outputs") or []:
        if v04 and t.get("halo") and any(t["halo"]):
            halos.append(f"{_tensor_id(t, 'output')}: {t['halo']}")
        elif not v04:
            halos += [f"{_tensor_id(t, 'output')}.{axis_letter(a)}: {a['halo']}" for a in t["axes"] if a.get("halo")]
    return {
        "format_version": str(rdf.get("format_version")),
        "license": rdf.get("license"),
        "weights": weight_formats(rdf, where),
        "state_dict_architecture": _architecture(rdf, v04),
        "inputs": [f"{_tensor_id(t, 'input')}: {''.join(axis_letter(a) for a in _axes(t, v04))} "
                   f"[{_size_text(t, v04, 'input')}]" for t in rdf.get("inputs") or []],
        "outputs": [f"{_tensor_id(t, 'output')}: {''.join(axis_letter(a) for a in _axes(t, v04))} "
                    f"[{_size_text(t, v04, 'output')}]" for t in rdf.get("outputs") or []],
        "default_ids": default_ids,
        "halo": halos,
        "preprocessing": ops(rdf.get("inputs") or [], "preprocessing"),
        "postprocessing": ops(rdf.get("outputs") or [], "postprocessing"),
    }


def _architecture(rdf: dict, v04: bool) -> str | None:
    entry = (rdf.get("weights") or {}).get("pytorch_state_dict")
    if not entry:
        return None
    arch = entry.get("architecture")
    if v04:
        return f"file {arch}" if ".py:" in str(arch) else f"library {arch}"
    if arch.get("import_from"):
        return f"library {arch['import_from']}:{arch['callable']}"
    return f"file {arch.get('source')}:{arch['callable']}"


def test_tensors(rdf: dict, where) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """The description's test inputs and outputs by tensor id, and each tensor's axis letters."""
    import io

    v04 = str(rdf.get("format_version", "")).startswith("0.4")

    def load(rel: str) -> np.ndarray:
        data = _file(where, rel)
        if data is None:
            raise FileNotFoundError(f"test tensor {rel} is not in the package")
        return np.load(io.BytesIO(data), allow_pickle=False)

    xs, ys, axes_in, axes_out = {}, {}, {}, {}
    for kind, store, axes_of, files in (("input", xs, axes_in, rdf.get("test_inputs")),
                                        ("output", ys, axes_out, rdf.get("test_outputs"))):
        for k, t in enumerate(rdf.get(kind + "s") or []):
            tid = _tensor_id(t, kind)
            store[tid] = load(files[k] if v04 else _source(t["test_tensor"]))
            axes_of[tid] = "".join(axis_letter(a) for a in _axes(t, v04))
    return xs, ys, axes_in, axes_out


def tolerance(rdf: dict, fmt: str) -> tuple[float, float]:
    """(rtol, atol) the description asks for (bioimage.io's defaults otherwise)."""
    config = (rdf.get("config") or {}).get("bioimageio") or {}
    for t in config.get("reproducibility_tolerance") or []:
        if not t.get("weights_formats") or fmt in t["weights_formats"]:
            return float(t.get("relative_tolerance", 1e-3)), float(t.get("absolute_tolerance", 1e-4))
    legacy = (config.get("test_kwargs") or {}).get(fmt) or {}
    return float(legacy.get("relative_tolerance", 1e-3)), float(legacy.get("absolute_tolerance", 1e-4))


def to_zoo_layout(x: np.ndarray, letters: str) -> np.ndarray:
    """A tensor in bioimage.io axis letters -> the zoo's ``b, c, [z,] y, x`` (missing b/c added)."""
    letters = letters.lower()
    if "b" not in letters:
        x, letters = x[None], "b" + letters
    if "c" not in letters:
        x, letters = x[:, None] if letters[0] == "b" else x[None], letters[:1] + "c" + letters[1:]
    spatial = [a for a in "zyx" if a in letters]
    extra = [a for a in letters if a not in "bc" and a not in "zyx"]
    if extra:
        raise ValueError(f"axes {letters}: {extra} are not batch, channel or space (z, y, x)")
    return np.transpose(x, [letters.index(a) for a in ["b", "c", *spatial]])


# ----------------------------------------------------------------------------- one row
def _importer_options(weights: str, trust: bool) -> dict:
    from zoo.export.bioimageio_import import import_package

    accepted = inspect.signature(import_package).parameters
    options = {"weights": weights, "offline": True}
    if trust and "trust_code" in accepted:
        options["trust_code"] = True
    return {k: v for k, v in options.items() if k in accepted}


def _short(e: BaseException, limit: int = 400) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def reproduce(out: Path, rdf: dict, where, fmt: str) -> tuple[float, bool, str]:
    """Run the imported package on the description's test inputs as ``bioimageio test`` does (the
    whole tensor at once); (max abs error, within the description's tolerance, note)."""
    import zoo
    from zoo.export.bioimageio_import import predict_whole
    from zoo.model import runtimes_of
    from zoo.spec import load as load_spec

    spec = load_spec(out)
    xs, ys, axes_in, axes_out = test_tensors(rdf, where)
    rtol, atol = tolerance(rdf, fmt)
    worst, ok, notes = 0.0, True, []
    for runtime in runtimes_of(spec):
        model = zoo.load(out, runtime=runtime, device="cpu")
        names_in = [t.name for t in spec.inputs]
        names_out = [t.name for t in spec.outputs]
        feed = {}
        for k, (tid, x) in enumerate(xs.items()):
            name = tid if tid in names_in else names_in[k]
            feed[name] = to_zoo_layout(x, axes_in[tid]).astype(np.float32)
        got = predict_whole(spec, model.predictor.runner, feed)      # as `bioimageio test` runs it: whole
        for k, (tid, y) in enumerate(ys.items()):
            name = tid if tid in names_out else names_out[k]
            expected = to_zoo_layout(y, axes_out[tid]).astype(np.float64)
            g = np.asarray(got[name], dtype=np.float64)
            if g.shape != expected.shape:
                ok = False
                notes.append(f"{runtime}: {name} has shape {g.shape}, the test output {expected.shape}")
                continue
            error = np.abs(g - expected)
            worst = max(worst, float(error.max()) if error.size else 0.0)
            bad = error > atol + rtol * np.abs(expected)
            if error.size and bad.any():
                from zoo.model import where_out_of_tolerance

                ok = False
                notes.append(f"{runtime}: {name} max abs error {float(error.max()):.3g} > atol {atol} + rtol {rtol}; "
                             f"{where_out_of_tolerance(bad)}; {_interior(error, expected)}")
    return worst, ok, "; ".join(notes)


def _interior(error: np.ndarray, expected: np.ndarray) -> str:
    """The largest error away from the borders (an eighth of each spatial size): where tiling,
    padding or a halo cannot matter."""
    inner = tuple(slice(None) for _ in range(2)) + tuple(slice(s // 8, s - s // 8) for s in error.shape[2:])
    core = error[inner]
    return f"inside (an eighth of the size from each border) {float(core.max()):.3g}" if core.size else ""


def check_one(entry: dict, work: Path, trust: bool) -> list[dict]:
    """Rows for one corpus entry: one per weight format it holds (or one saying why none)."""
    base = {"name": entry["name"], "license": entry.get("license")}
    if entry.get("unavailable"):
        return [{**base, "format": "-", "weights": "-", "imports": "n/a", "reproduces": "n/a",
                 "refusal": f"not obtainable: {entry['unavailable']}"}]
    path = CORPUS / entry["rdf"]
    try:
        rdf, where = read_rdf(path)
        present = weight_formats(rdf, where)
    except Exception as e:                    # noqa: BLE001 - a broken description is a row, not a crash
        return [{**base, "format": "?", "weights": "?", "imports": "no", "reproduces": "-",
                 "refusal": f"unreadable: {_short(e)}"}]
    listed = ", ".join(f"{f}{'' if s == 'local' else ' (' + s + ')'}" for f, s in present.items())
    rows = []
    for fmt in present:
        row = {**base, "format": str(rdf.get("format_version")), "weights": listed, "weight_format": fmt}
        out = work / f"{entry['name']}-{fmt}"
        try:
            from zoo.export.bioimageio_import import import_package

            import_package(path, out, **_importer_options(fmt, trust))
        except Exception as e:                # noqa: BLE001 - every refusal is reported, none stops the table
            rows.append({**row, "imports": "no", "reproduces": "-", "refusal": _short(e)})
            continue
        try:
            worst, ok, note = reproduce(out, rdf, where, fmt)
            rows.append({**row, "imports": "yes", "reproduces": f"{'yes' if ok else 'NO'} ({worst:.2g})",
                         "max_abs_error": worst, "refusal": note or "-"})
        except Exception as e:                # noqa: BLE001
            rows.append({**row, "imports": "yes", "reproduces": "error", "refusal": f"running it: {_short(e)}",
                         "traceback": traceback.format_exc(limit=3)})
    if not present:
        rows.append({**base, "format": str(rdf.get("format_version")), "weights": "none", "imports": "no",
                     "reproduces": "-", "refusal": "the description lists no weights"})
    return rows


# ----------------------------------------------------------------------------- tables
def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def imports_table(only: list[str] | None, trust: bool) -> list[dict]:
    rows = []
    print("| description | format | weight format (all held) | imports | reproduces (max abs error) | refusal / note |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for entry in corpus(only):
            for row in check_one(entry, Path(tmp), trust):
                rows.append(row)
                print(f"| {row['name']} | {row['format']} | {row.get('weight_format', '-')} ({_cell(row['weights'])}) "
                      f"| {row['imports']} | {row['reproduces']} | {_cell(row['refusal'])} |", flush=True)
    imported = {r["name"] for r in rows if r["imports"] == "yes"}
    reproduced = {r["name"] for r in rows if str(r["reproduces"]).startswith("yes")}
    available = {e["name"] for e in corpus(only) if not e.get("unavailable")}
    by_format: dict[str, list[int]] = {}
    for r in rows:
        if r.get("weight_format"):
            tally = by_format.setdefault(r["weight_format"], [0, 0])
            tally[0] += 1
            tally[1] += str(r["reproduces"]).startswith("yes")
    print(f"\n{len(reproduced)} of {len(available)} obtainable descriptions imported and reproducing "
          f"({len(imported)} imported; {len(corpus(only)) - len(available)} more listed but not obtainable)")
    print("by weight format (reproducing / tried): "
          + ", ".join(f"{f} {t[1]}/{t[0]}" for f, t in sorted(by_format.items())))
    return rows


def features_table(only: list[str] | None) -> list[dict]:
    rows = []
    print("| description | format | licence | weights | inputs | outputs | default ids | halo | pre | post |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for entry in corpus(only):
        if entry.get("unavailable"):
            print(f"| {entry['name']} | not obtainable | {entry.get('license')} | - | - | - | - | - | - | - |")
            continue
        rdf, where = read_rdf(CORPUS / entry["rdf"])
        f = features(rdf, where)
        rows.append({"name": entry["name"], **f})
        weights = ", ".join(f"{k}{'' if v == 'local' else ' (' + v + ')'}" for k, v in f["weights"].items())
        if f["state_dict_architecture"]:
            weights += f"; state dict arch: {f['state_dict_architecture']}"
        print(f"| {entry['name']} | {f['format_version']} | {f['license']} | {_cell(weights)} "
              f"| {_cell('; '.join(f['inputs']))} | {_cell('; '.join(f['outputs']))} "
              f"| {_cell('; '.join(f['default_ids']) or '-')} | {_cell('; '.join(f['halo']) or '-')} "
              f"| {_cell(', '.join(f['preprocessing']) or '-')} | {_cell(', '.join(f['postprocessing']) or '-')} |")
    return rows


def exports_table() -> list[dict]:
    from bioimageio.core import test_model

    from zoo.errors import InputError
    from zoo.export.bioimageio import export
    from zoo.registry import standard_store

    rows = []
    print("| package | bioimageio test | onnx | pytorch_state_dict | left to bioimage-zoo |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for package in sorted((standard_store() / "packages").glob("*/*")):
            ref = f"{package.parent.name}@{package.name}"
            try:
                rdf, report = export(package, Path(tmp) / ref)
            except InputError as e:           # e.g. a classifier's canvas: no bioimage.io equivalent
                rows.append({"package": ref, "status": "not exported", "reason": str(e)})
                print(f"| {ref} | not exported: {e} | - | - | - |", flush=True)
                continue
            summary = test_model(str(rdf))
            formats = {}
            for detail in summary.details:
                for fmt in ("onnx", "pytorch_state_dict"):
                    if detail.name.startswith("Reproduce test outputs") and f"({fmt})" in detail.name:
                        formats[fmt] = detail.status
            row = {"package": ref, "status": summary.status, **formats, "unmapped": report.unmapped,
                   "failed": [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status == "failed"]}
            rows.append(row)
            print(f"| {ref} | {summary.status} | {formats.get('onnx', '-')} | {formats.get('pytorch_state_dict', '-')} "
                  f"| {'; '.join(u.split(': ', 1)[1] for u in report.unmapped) or '-'} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exports", action="store_true", help="check the standard packages' exports instead")
    p.add_argument("--features", action="store_true", help="print what each description needs (no import)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="these corpus descriptions alone")
    p.add_argument("--no-trust-code", dest="trust", action="store_false",
                   help="do not pass trust_code to the importer (state dicts with their own source are then refused)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if args.exports:
        rows = exports_table()
    elif args.features:
        rows = features_table(args.only)
    else:
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.getLogger("zoo").setLevel(logging.ERROR)
        rows = imports_table(args.only, args.trust)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
