"""Commands that run models on images: predict, measure, track."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import load, progress, registry_of, runtime_options


def cmd_predict(args) -> int:
    from .. import api
    from ..errors import InputError, NotFoundError

    from .batch import folder_mode, run_folder, scale_options

    batch = folder_mode(args)
    for path in args.inputs:
        if not path.exists() and not (batch and any(c in str(path) for c in "*?[")):
            raise NotFoundError(f"image not found: {path}")
    model = load(args, args.ref) if args.precision == "fp32" else \
        api.load(args.ref, runtime=args.runtime, device=args.device, registry=registry_of(args), precision=args.precision)
    if args.cluster:
        from .batch import run_cluster

        return run_cluster(model, args)
    if model.task.per_image:
        return _classify(model, args)
    if model.predictor.several or args.input_names or args.output_name:
        return _several(model, args)          # several images are one prediction's inputs
    if batch:
        return run_folder(model, args)
    if len(args.inputs) != 1:
        raise InputError(f"{model.spec.ref} predicts one image per call (-o names its output); got "
                         f"{len(args.inputs)} images: run it once per image")
    source = args.inputs[0]
    update, close = progress(model.spec.name)
    try:
        done = api.predict_file(model, source, args.output, axes=args.axes, tile=args.tile,
                                batch_size=args.batch_size, blend=args.blend, raw=args.raw, overwrite=args.overwrite,
                                progress=update, uncertainty=args.uncertainty,
                                ensemble=[load(args, ref) for ref in args.ensemble or []], tta=not args.no_tta,
                                **scale_options(args))
    finally:
        close()
    for note in done.notes:
        print(note, file=sys.stderr if note.startswith("warning") else sys.stdout)
    if done.uncertainty:
        print(f"{done.uncertainty}: uncertainty ({done.uncertainty_kind}) over {done.members} members")
    if done.streamed:
        print(f"{args.output}: {done.shape} from {model.spec.ref} ({model.runtime}, streamed)")
    else:
        print(f"{args.output}: {done.shape} {done.dtype} from {model.spec.ref} ({model.runtime})")
    _report_shift(model, source, done, args)
    if args.figure:
        titles = api.prediction_figure(model, done.source, args.output, args.figure, args.reference, args.raw)
        print(f"{args.figure}: figure ({' | '.join(titles)})")
    if args.measure:
        if not model.makes_instances or args.raw:
            raise InputError("--measure needs instance labels: a segmentation model, without --raw")
        table = args.output.with_name(args.output.stem.split(".")[0] + "_objects.csv")
        rows = api.measure(args.output, done.source, _classifier(args), model=model, confidence=done.confidence)
        print(f"{table}: {len(rows)} objects")
        from ..quantify.measure import write_table

        write_table(rows, table)
    return 0


def _several(model, args) -> int:
    """A network with several inputs or outputs: ``--input ID`` names the input each image feeds
    (in order; default the package's order), ``--output-id ID`` the output to write."""
    from .. import api
    from ..errors import InputError

    names = args.input_names or [t.name for t in model.spec.inputs]
    known = [t.name for t in model.spec.inputs]
    if sorted(names) != sorted(known) or len(args.inputs) != len(names):
        raise InputError(f"{model.spec.ref} takes the inputs {', '.join(known)}: give one image for each, in that order "
                         f"or named with --input ID per image (got {len(args.inputs)} image(s)"
                         f"{', --input ' + ' '.join(args.input_names) if args.input_names else ''})")
    written = api.predict_tensors_files(model, dict(zip(names, args.inputs)), args.output, output=args.output_name,
                                        axes=args.axes, tile=args.tile, batch_size=args.batch_size, raw=args.raw,
                                        overwrite=args.overwrite)
    for name, path in written.items():
        print(f"{path}: output {name} from {model.spec.ref} ({model.runtime})")
    return 0


def _classifier(args):
    return load(args, args.classifier) if args.classifier else None


def _report_shift(model, source: Path, done, args) -> None:
    """The dataset-shift check: a warning that says what differs, and ``--report OUT.json``."""
    from .. import api

    report = api.check_shift(model, done.source, axes=args.axes, prediction=done.written_labels,
                             source_axes=done.source_axes)
    if report is not None and report.shift_warning:
        print(f"warning: {report.summary()}", file=sys.stderr)
    if args.report:
        body = report.to_dict() if report else {
            "shift_score": None, "shift_threshold": None, "shift_warning": None,
            "shift_messages": [f"{model.spec.ref} has no shift check (its package records no training statistics)"]}
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"model": model.spec.ref, "input": str(source),
                                           "output": str(args.output), **body}, indent=1))
        print(f"{args.report}: report (shift score {body['shift_score']})")


def _classify(model, args) -> int:
    """A classifier over one or more images: one row per image (file, class, probabilities)."""
    from .. import api
    from ..quantify.measure import write_table

    from ..api.batch import expand_inputs

    rows = api.classify(model, expand_inputs(args.inputs)[0], axes=args.axes)
    write_table(rows, args.output)
    counts = {name: sum(r["class"] == name for r in rows) for name in model.class_names}
    print(f"{args.output}: {len(rows)} images classified by {model.spec.ref} "
          f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def cmd_measure(args) -> int:
    from .. import api
    from ..imageio import read_image
    from ..quantify.measure import write_table

    rows = api.measure(read_image(args.labels), read_image(args.image) if args.image else None, _classifier(args),
                       args.margin)
    write_table(rows, args.output)
    print(f"{args.output}: {len(rows)} objects measured")
    return 0


def cmd_track(args) -> int:
    import numpy as np

    from ..imageio import read_image
    from ..quantify.tracking import track

    frames = [read_image(p) for p in args.labels]
    if len(frames) == 1 and frames[0].ndim >= 3:
        frames = list(frames[0])                  # one T-stack
    result = track([np.asarray(f) for f in frames], max_distance=args.max_distance,
                   divisions=not args.no_divisions, gap_closing=not args.no_gap_closing)
    result.write(args.output)
    print(f"{args.output}: {len(result.tracks)} tracks over {len(frames)} frames, {len(result.divisions())} divisions "
          "(res_track.txt, tracks.csv, relabelled masks)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="run a model on an image (tiled)")
    p.add_argument("ref", help="NAME[@VERSION] or a package folder")
    p.add_argument("inputs", type=Path, nargs="+", metavar="input",
                   help="image: TIFF/OME-TIFF, OME-Zarr, PNG, JPEG or NPY; or several, folders and quoted globs "
                        "('raw/*.tif'), each predicted into the -o folder (classifiers: rows of one table)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output image (a folder for several images, a folder or a glob: OUT/<name>.tif each, "
                        "with manifest.jsonl and summary.csv): .tif, .zarr or .npy (any output, written block by "
                        "block), or .png (labels "
                        "and 8/16-bit images only; not the float output of a restoration model); classifiers: a .csv "
                        "(or .parquet) table, one row per image")
    p.add_argument("--cluster", metavar="SPEC", help="predict on Dask: local[:N] (N worker processes here), "
                                                     "tcp://HOST:PORT or SCHEDULER.json (a running scheduler); one "
                                                     "image is cut into chunks written into an -o OUT.zarr, several "
                                                     "are spread over the workers")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output of the same kind (a file, "
                                                            "or an OME-Zarr the zoo wrote); never the input")
    p.add_argument("--pixel-size", metavar="UM", help="the image's µm per pixel (one number, or z,y,x): rescaled "
                                                     "to the model's and back (default: the file's metadata)")
    p.add_argument("--diameter", type=float, help="instance models: the objects' typical diameter in pixels; the "
                                                  "image is rescaled so they match the model's training objects")
    p.add_argument("--anisotropy", type=float, help="3D models: z spacing over xy spacing (resampled to the model's)")
    p.add_argument("--channels", metavar="NAME=CH,...", help="the model's channels from the file's, by position or "
                                                             "name: e.g. nuclei=0,cyto=1 or nuclei=DAPI")
    p.add_argument("--stitch-threshold", type=float, metavar="T", help="2D instance models on a z-stack (or "
                                                                       "time-lapse): join labels across slices "
                                                                       "whose IoU is at least T (0-1]")
    p.add_argument("--input", dest="input_names", action="append", metavar="ID",
                   help="models with several inputs: the input each image feeds, once per image in order")
    p.add_argument("--output-id", dest="output_name", metavar="ID",
                   help="models with several outputs: the one to write to -o (default: each, to OUT_<ID>; "
                        "-o/--output names the file)")
    runtime_options(p)
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp32",
                   help="reduced precision (default fp32): bf16/fp16 by torch autocast, int8/fp16 by ONNX Runtime; "
                        "measured speed and quality change in docs/benchmarks/predict.md")
    p.add_argument("--axes", help="axes of the input when the file does not say, e.g. yx, cyx, yxc, tyx, tczyx "
                                  "(t, b and, for a 2D model, z are predicted one image at a time)")
    p.add_argument("--tile", type=int, help="tile size in pixels per axis, context included "
                                            "(default: chosen from free memory)")
    p.add_argument("--batch-size", type=int, help="tiles per network call (default: from free memory)")
    p.add_argument("--lanes", type=int, help="folder mode: images predicted at once, one thread each (default: "
                                             "as many as threads when every file is under 16 MB, else 1)")
    p.add_argument("--blend", type=int, help="pixels cross-faded between neighbouring tiles "
                                             "(default a quarter of the halo; 0 = crop only)")
    p.add_argument("--figure", type=Path, help="also write a PNG figure: input | output")
    p.add_argument("--reference", type=Path, help="a reference image to add to the figure")
    p.add_argument("--raw", action="store_true", help="segmentation models: write the network's outputs "
                                                      "(probabilities, distances, flows) instead of instance labels")
    p.add_argument("--measure", action="store_true", help="segmentation models: also write one row per object "
                                                          "(OUT_objects.csv: centroid, area, intensities, shape)")
    p.add_argument("--classifier", help="with --measure: a classifier (NAME[@VERSION]) for each object's class")
    p.add_argument("--report", type=Path, help="write a JSON report: shift_score, shift_threshold, shift_warning "
                                               "and what differs from the training data")
    p.add_argument("--uncertainty", action="store_true", help="also write OUT_uncertainty.tif: disagreement under "
                                                              "8 flips/rotations (and --ensemble models); with "
                                                              "--measure, a confidence per object")
    p.add_argument("--ensemble", action="append", metavar="REF", help="with --uncertainty: another package of the "
                                                                      "same task to disagree with (repeatable)")
    p.add_argument("--no-tta", action="store_true", help="with --uncertainty and --ensemble: no flips/rotations")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("measure", help="one row per object of a label image: centroid, area/volume, bounding box, "
                                       "intensities, shape, and a classifier's class")
    p.add_argument("labels", type=Path, help="label image (2D or 3D; 0 = background)")
    p.add_argument("image", type=Path, nargs="?", help="the image the labels belong to (intensities, classes)")
    p.add_argument("-o", "--output", type=Path, required=True, help="table: .csv or .parquet")
    p.add_argument("--classifier", help="a classifier (NAME[@VERSION] or package) that classifies each object")
    p.add_argument("--margin", type=float, default=0.0, help="grow each object's crop by this fraction of its size")
    runtime_options(p, device_help=None)
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("track", help="link instance masks over time (minimum-cost assignment, divisions, gaps)")
    p.add_argument("labels", type=Path, nargs="+", help="label images, one per time point in order (or one T-stack)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="folder: res_track.txt (Cell Tracking Challenge), tracks.csv and relabelled maskTTT.tif")
    p.add_argument("--max-distance", type=float, help="largest move between frames in pixels (default: twice the "
                                                      "median object diameter)")
    p.add_argument("--no-divisions", action="store_true", help="do not detect divisions")
    p.add_argument("--no-gap-closing", action="store_true", help="do not bridge objects missing for one frame")
    p.set_defaults(func=cmd_track)
