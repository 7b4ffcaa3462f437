"""``zoo recommend IMAGE...``: which package in the registry fits these images."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import registry_of, runtime_options


def cmd_recommend(args) -> int:
    from ..api.recommending import recommend
    from ..errors import NotFoundError

    for path in args.images:
        if not path.exists():
            raise NotFoundError(f"image not found: {path}")
    update, close = _progress(args.json)
    try:
        result = recommend(args.images, task=args.task, registry=registry_of(args, args.recommend_registry),
                               axes=args.axes, figure=args.figure, runtime=args.runtime, device=args.device,
                               progress=update)
    finally:
        close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    elif result.ranking:
        _table(result)
    if not result.ranking:
        print(result.message, file=sys.stderr)
        return 1
    if result.figure and not args.json:
        print(f"{result.figure}: preview of the top {min(3, len(result.ranking))} on {result.images[0]}")
    return 0


def _table(result) -> None:
    rows = [("rank", "package", "task", "shift score / threshold", "verdict")]
    for r in result.ranking:
        shift = f"{_num(r.score)} / {_num(r.threshold)}" if r.checked else "-"
        rows.append((str(r.rank), r.package, r.task, shift, r.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    if result.skipped:
        print(f"{len(result.skipped)} package(s) cannot take these images ({', '.join(s.package for s in result.skipped)}); "
              "--json says why", file=sys.stderr)


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2g}"


def _progress(quiet: bool):
    """A progress bar over packages on a terminal; nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc="checking packages", unit="package", leave=False)

    def update(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    return update, bar.close


def register(sub) -> None:
    p = sub.add_parser("recommend", help="rank the registry's packages by how well they fit your images",
                       description="Rank every package of the registry (latest versions) that can take the "
                                   "images by its dataset-shift score on them: first the packages whose median "
                                   "score is within their threshold, then those beyond it, then those without "
                                   "a shift check; in each, the lowest score (closest to its training data) first.")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                   help="images like the ones you want to process (TIFF, PNG, JPEG, NPY, OME-Zarr); several "
                        "are better than one. A large image is checked on its centre 512x512")
    p.add_argument("--task", help="only packages of this task or family (segmentation, segmentation/instance, "
                                  "restoration, classification)")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON (per image scores and messages, "
                                                       "the packages that cannot take the images and why)")
    p.add_argument("--registry", dest="recommend_registry", metavar="URL",
                   help="rank this registry's packages: a folder, local, http(s)://HOST/ROOT or hf://ORG "
                        "(default: the global --registry, else the local registry)")
    p.add_argument("--figure", type=Path, metavar="OUT.png",
                   help="also write a PNG: the first image and the top three packages' predictions on it")
    p.add_argument("--axes", help="axes of the images when the files do not say, e.g. yx, yxc, zyx")
    runtime_options(p)
    p.set_defaults(func=cmd_recommend)
