"""``zoo predict NAME DIR|GLOB... -o OUTDIR``: the command-line face of folder mode."""
from __future__ import annotations

import sys
from pathlib import Path


def folder_mode(args) -> bool:
    """Several images, a folder or a glob: one run over all of them (into the -o folder)."""
    inputs = [str(p) for p in args.inputs]
    return len(inputs) > 1 or any(Path(p).is_dir() and Path(p).suffix.lower() != ".zarr" for p in inputs) \
        or any(c in p for p in inputs for c in "*?[")


def check_output_folder(args) -> None:
    """Folder mode writes into a folder: an -o that names an image file is a mistake, said so."""
    from ..errors import InputError
    from ..imageio import IMAGE_SUFFIXES

    if args.output.suffix.lower() in IMAGE_SUFFIXES and not args.output.is_dir():
        folder = next((p for p in args.inputs if Path(p).is_dir()), None)
        if folder is not None:
            raise InputError(f"{folder} is a folder, not an image: to predict every image in it, give -o a folder "
                             f"(e.g. -o {args.output.with_suffix('')}/)")
        raise InputError(f"{len(args.inputs)} images (or a pattern) are predicted into a folder: give -o a folder, "
                         f"not {args.output.name}")


def run_folder(model, args) -> int:
    """Predict every image into ``-o``; a line per failure, a summary, exit 1 if any failed."""
    from .. import api

    check_output_folder(args)
    from .common import progress

    bar = _files_bar(model.spec.name)
    update, close = progress(model.spec.name)
    try:
        report = api.predict_files(model, args.inputs, args.output, axes=args.axes, overwrite=args.overwrite,
                                   tile=args.tile, batch_size=args.batch_size, blend=args.blend, raw=args.raw,
                                   progress=update, on_file=bar, lanes=args.lanes, **scale_options(args))
    finally:
        close()
        bar(None, None, None)
    return _report(model, args, report)


def run_cluster(model, args) -> int:
    """``--cluster SPEC``: one image in chunks into an OME-Zarr, or several spread over Dask workers
    (``zoo.api.predict(model, ..., client=SPEC)``: the workers load the model that was loaded here)."""
    from .. import api
    from ..errors import InputError

    unsupported = [flag for flag, given in (("--uncertainty", args.uncertainty), ("--ensemble", args.ensemble),
                                            ("--figure", args.figure), ("--measure", args.measure),
                                            ("--report", args.report)) if given]
    if unsupported:
        raise InputError(f"{', '.join(unsupported)}: not with --cluster; run without --cluster for them")
    if model.task.per_image or model.predictor.several or args.input_names or args.output_name:
        raise InputError(f"{model.spec.ref} (a classifier, or several inputs or outputs) is not predicted on a "
                         "cluster: run it without --cluster")
    several = folder_mode(args)
    if several:
        check_output_folder(args)
    elif len(args.inputs) != 1:
        raise InputError(f"{model.spec.ref} predicts one image per call; got {len(args.inputs)}")
    bar = _files_bar(model.spec.name) if several else (lambda done, total, path: None)
    try:
        result = api.predict(model, list(args.inputs) if several else args.inputs[0], out=args.output,
                             cluster=args.cluster, axes=args.axes, overwrite=args.overwrite, tile=args.tile,
                             batch_size=args.batch_size, blend=args.blend, raw=args.raw, on_file=bar,
                             **scale_options(args))
    finally:
        bar(None, None, None)
    if several:
        return _report(model, args, result)
    print(f"{args.output}: {result} from {model.spec.ref} ({model.runtime}, chunks on {args.cluster})")
    return 0


def _report(model, args, report) -> int:
    for row in report.rows:
        if row["status"] == "failed":
            print(f"failed: {row['file']}: {row['error']}", file=sys.stderr)
        elif row["shift_verdict"] not in ("", "fits"):
            print(f"warning: {row['file']}: {row['warnings']}", file=sys.stderr)
    done, skipped, failed = report.count("done"), report.count("skipped"), report.count("failed")
    print(f"{args.output}: {done} predicted, {skipped} skipped, {failed} failed by {model.spec.ref} "
          f"({model.runtime}); summary: {args.output / 'summary.csv'}")
    return 1 if failed else 0


def scale_options(args) -> dict:
    """The physical-scale, channel and stitching options of ``zoo predict`` (those given)."""
    pixel_size = args.pixel_size
    if pixel_size is not None:
        from ..errors import InputError

        try:
            values = [float(v) for v in pixel_size.split(",")]
        except ValueError:
            raise InputError(f"--pixel-size {pixel_size}: expected micrometres per pixel, one number or one per "
                             "spatial axis (z,y,x), e.g. 0.65 or 2,0.65,0.65") from None
        pixel_size = values[0] if len(values) == 1 else values
    given = dict(pixel_size=pixel_size, diameter=args.diameter, anisotropy=args.anisotropy, channels=args.channels,
                 stitch_threshold=args.stitch_threshold)
    return {k: v for k, v in given.items() if v is not None}


def _files_bar(label: str):
    """A progress bar over files on a terminal; plain nothing otherwise."""
    if not sys.stderr.isatty():
        return lambda done, total, path: None
    from tqdm import tqdm

    bar = tqdm(desc=f"{label} (files)", unit="file")

    def update(done, total, path):
        if done is None:
            bar.close()
            return
        bar.total, bar.n = total, done
        bar.set_postfix_str(Path(path).name)
        bar.refresh()

    return update
