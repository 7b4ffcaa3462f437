"""Commands that exchange packages with the field: export (bioimage.io, Triton), import
(bioimage.io, ONNX), bump (the next version of a package)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import registry_of


def cmd_export(args) -> int:
    from .. import api

    if args.format == "bioimageio":
        from ..export.bioimageio import zip_folder

        rdf, report = api.export(args.package, "bioimageio", args.out, registry_of(args))
        print(f"bioimage.io model description written: {rdf} (check it: bioimageio test {rdf})")
        for line in report.mapped:
            print(f"  mapped: {line}")
        for line in report.unmapped:
            print(f"  no bioimage.io equivalent (left to bioimage-zoo, documented): {line}")
        if args.zip:
            print(f"zipped: {zip_folder(args.out)}")
        return 0
    folder = api.export(args.package, "triton", args.out, registry_of(args), max_batch=args.max_batch,
                        gpu={"auto": None, "gpu": True, "cpu": False}[args.instance_kind])
    print(f"Triton model repository written: {folder} (run: tritonserver --model-repository {args.out})")
    return 0


def cmd_import(args) -> int:
    from .. import api, spec as specs

    if args.format == "onnx":
        options = dict(name=args.name, axes=args.axes, output_axes=args.output_axes, input_ops=args.input_op,
                       output_ops=args.output_op, test_input=args.test_input, halo=args.halo, step=args.step,
                       minimum=args.min, channels=args.channels, version=args.version, description=args.description,
                       authors=args.author or (), license=args.license, task=args.task, tags=args.tag or (),
                       overwrite=args.overwrite)
    else:
        options = dict(name=args.name, overwrite=args.overwrite, weights=args.weights, trust_code=args.trust_code,
                       announce=lambda text: print(text, file=sys.stderr))
    path = api.import_model(args.format, args.source, args.out, **options)
    spec = specs.load(path)
    kind = {specs.ONNX_GRAPH: "an ONNX graph alone: runs in ONNX Runtime, cannot be fine-tuned",
            specs.TORCHSCRIPT: "a TorchScript module alone: runs in TorchScript, cannot be fine-tuned"}.get(
        spec.architecture_id, f"architecture {spec.architecture_id}: runs in torch and ONNX Runtime, can be fine-tuned")
    reproduced = ((spec.training.config or {}).get("imported_from") or {}).get("reproduced") or {}
    for fmt, error in reproduced.items():
        if error is not None:
            print(f"reproduces its own test output with {fmt}: max error {error:.3g}")
    print(f"package written: {path} ({spec.ref}, {kind}); publish it with `zoo push {path}`")
    return 0


def cmd_bump(args) -> int:
    from .. import api, spec as specs

    path = api.bump(args.package, args.out, args.version, weights=args.weights, test_input=args.test_input,
                    halo=args.halo, input_ops=args.input_op, output_ops=args.output_op, axes=args.axes,
                    description=args.description, overwrite=args.overwrite)
    old, spec = specs.load(args.package), specs.load(path)
    print(f"package written: {path} ({spec.ref}, after {old.ref}: test output recomputed by the zoo, every sha256 "
          f"rewritten); publish it with `zoo push {path}`")
    if old.trust:
        print(f"note: {old.ref}'s shift check is not carried over (it was calibrated for that version); "
              "calibrate one for the new version (scripts/add_trust.py)")
    return 0


def _package_change_options(p: argparse.ArgumentParser) -> None:
    """What a graph import sets and a new version may change: test input, halo, ops, description."""
    p.add_argument("--test-input", type=Path, help="raw test input (.npy, the graph's axes or the natural layout); "
                                                   "default: synthetic nuclei (import) or the package's own (bump)")
    p.add_argument("--halo", type=int, help="receptive-field margin in pixels that every tile gets (per spatial axis)")
    p.add_argument("--input-op", action="append", metavar="OP[:K=V,...]",
                   help="preprocessing op of the op registry, e.g. percentile_normalize:low=1,high=99.8 (repeatable, "
                        "in order; see docs/publishing.md)")
    p.add_argument("--output-op", action="append", metavar="OP[:K=V,...]",
                   help="postprocessing op, e.g. sigmoid or restore_input_scale:input=input (repeatable)")
    p.add_argument("--description")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out package")


def register(sub) -> None:
    p = sub.add_parser("export", help="export a package to another serving system")
    p.add_argument("format", choices=["triton", "bioimageio"],
                   help="triton: an NVIDIA Triton Inference Server model repository; bioimageio: a bioimage.io "
                        "model description (rdf.yaml, format 0.5)")
    p.add_argument("package", help="package folder or NAME[@VERSION]")
    p.add_argument("out", type=Path, help="the model repository folder")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--instance-kind", choices=["auto", "gpu", "cpu"], default="auto", help="triton")
    p.add_argument("--zip", action="store_true", help="bioimageio: also write OUT.zip (the bioimage.io package)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="turn a bioimage.io model package, or an ONNX model trained elsewhere, into a "
                                      "zoo package (hashes, test output by the zoo's runtime, card, cover)")
    p.add_argument("format", choices=["bioimageio", "onnx"])
    p.add_argument("source", type=Path, help="bioimageio: the package folder, rdf.yaml or .zip; onnx: MODEL.onnx")
    p.add_argument("--out", type=Path, required=True, help="package folder to write")
    p.add_argument("--name", help="package name (bioimageio default: from the description; required for onnx)")
    p.add_argument("--weights", choices=["pytorch_state_dict", "onnx", "torchscript"],
                   help="bioimageio: the weight format to import (default: a state dict of an installed "
                        "architecture, else onnx; torchscript only when named: it is a program)")
    p.add_argument("--trust-code", action="store_true",
                   help="bioimageio: let a pytorch_state_dict's own architecture source file run once, here, to "
                        "build the network (stored as TorchScript; the package then carries no Python code)")
    p.add_argument("--axes", help="onnx: the graph's input axes in its order, e.g. bcyx, byxc, bczyx")
    p.add_argument("--output-axes", help="onnx: the graph's output axes (default: --axes)")
    p.add_argument("--step", type=int, help="onnx: spatial sizes must be multiples of this (2^depth of a U-Net)")
    p.add_argument("--min", type=int, help="onnx: smallest spatial size the graph takes (default: --step)")
    p.add_argument("--channels", type=int, help="onnx: input channels, when the graph leaves that axis dynamic")
    p.add_argument("--version", default="0.1.0", help="onnx: the package version")
    p.add_argument("--author", action="append", help="onnx: an author's name (repeatable)")
    p.add_argument("--license", default="CC-BY-4.0", help="onnx: SPDX licence of the weights")
    p.add_argument("--task", help="onnx: e.g. restoration/denoising, segmentation (default: from the output ops)")
    p.add_argument("--tag", action="append", help="onnx: a search tag (repeatable)")
    _package_change_options(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("bump", help="make the next version of a package beside it: new weights, test input, halo "
                                    "or ops; test output, hashes, card and cover recomputed")
    p.add_argument("package", type=Path, help="the package folder to start from (it is left as it is)")
    p.add_argument("--version", required=True, help="the new version, higher than the package's (e.g. 1.1.0)")
    p.add_argument("--out", type=Path, required=True, help="folder for the new version")
    p.add_argument("--weights", type=Path, help="new weights: .onnx for an imported graph, .safetensors otherwise")
    p.add_argument("--axes", help="axes of a new .onnx graph (default: those it was imported with)")
    _package_change_options(p)
    p.set_defaults(func=cmd_bump)
