"""Does `zoo recommend` put first a package trained on the kind of image it is given (issue 24.5)?

For each kind of real image in ../shared/data, images that no standard package trained on:

- dsb-fluo, dsb-he, dsb-brightfield: the DSB2018 validation images of that kind (in the
  validation split of every standard package trained on DSB2018: ``training.config.validation_files``);
- w2s: W2S fields of view 49-60, held out by every W2S package (neither trained nor calibrated on);
- bccd: BCCD crops of the dataset's val split (classifier-bccd trained on its train split);
- cbmi: the CBMI crops n2v-cbmi-2d validates on.

Every image is ranked on its own (``Recommendations.top_for``) and each kind once with all its
images together. A hit: the first package is one trained on that kind (TRAINED_ON, from each
package's ``training.data``). Prints one row per kind.

    .venv/bin/python scripts/check_recommend.py [--limit N] [--task T] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

TRAINED_ON = {       # kind -> the standard packages whose training data holds that kind of image
    "dsb-fluo": {"stardist-dsb-fluo-2d", "unet-dsb-2d", "cellpose-dsb-2d"},
    "dsb-he": {"stardist-dsb-he-2d", "unet-dsb-2d", "cellpose-dsb-2d"},
    "dsb-brightfield": {"unet-dsb-2d", "cellpose-dsb-2d"},
    "w2s": {"care-w2s-2d", "n2v-w2s", "n2v-w2s-2d"},
    "bccd": {"classifier-bccd"},
    "cbmi": {"n2v-cbmi-2d"},
}
DSB_KINDS = {"dsb-fluo": "fluo", "dsb-he": "histo_rgb", "dsb-brightfield": "brightfield_gray"}


def validation_names(registry, names) -> set[str]:
    """The validation files (stems) common to the latest versions of ``names``."""
    common = None
    for name in names:
        files = registry.spec(name).training.config.get("validation_files") or []
        stems = {Path(f).stem for f in files}
        common = stems if common is None else common & stems
    return common or set()


def images_of(kind: str, data: Path, registry) -> list[Path]:
    if kind in DSB_KINDS:     # packages not trained on DSB2018 never saw DSB images of any kind
        held_out = validation_names(registry, TRAINED_ON[kind])
        rows = csv.DictReader(open(data / "dsb2018" / "index.csv"))
        return [data / "dsb2018" / "images" / f"{r['id']}.png" for r in rows
                if r["kind"] == DSB_KINDS[kind] and r["id"] in held_out]
    if kind == "w2s":
        rows = csv.DictReader(open(data / "w2s" / "index.csv"))
        return [data / "w2s" / "images" / r["file"] for r in rows if int(r["fov"]) >= 49]
    if kind == "bccd":
        rows = csv.DictReader(open(data / "bccd" / "labels.csv"))
        return [data / "bccd" / r["file"] for r in rows if r["voc_split"] == "val"]
    if kind == "cbmi":
        names = validation_names(registry, ["n2v-cbmi-2d"])
        return sorted(p for p in (data / "cbmi_noisy").rglob("*.tif") if p.stem in names)
    raise ValueError(kind)


def spread(items: list, n: int | None) -> list:
    """At most ``n`` of ``items``, evenly spaced (all for None)."""
    if n is None or len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else items[:1]


def top_by_ratio(result, i: int) -> str:
    """The package with the lowest score / threshold on image ``i``: the ranking not used, for comparison
    (a package trained on several kinds has a wide threshold, and every image is a small fraction of it)."""
    checked = [r for r in result.ranking if r.reports[i] is not None]
    best = min(checked, key=lambda r: r.reports[i].shift_score / r.reports[i].shift_threshold, default=None)
    return best.name if best else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, help="at most this many images per kind, evenly spaced (default all)")
    parser.add_argument("--kinds", nargs="+", default=list(TRAINED_ON), choices=list(TRAINED_ON))
    parser.add_argument("--task", help="pass --task to the recommendation")
    parser.add_argument("--registry", help="the registry to rank (default the local one, seeded with the standard zoo)")
    parser.add_argument("--json", type=Path, help="also write every image's top-1 and the rankings here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from zoo import api
    from zoo.api.recommending import recommend

    if not args.data.is_dir():
        print(f"no data at {args.data} (see ../shared/data/README.md)", file=sys.stderr)
        return 1
    registry = api.registry(args.registry)
    rows, record = [], {}
    for kind in args.kinds:
        images = spread(sorted(images_of(kind, args.data, registry)), args.limit)
        if not images:
            print(f"{kind}: no images found", file=sys.stderr)
            continue
        start = time.perf_counter()
        result = recommend(images, task=args.task, registry=registry)
        seconds = time.perf_counter() - start
        tops = [result.top_for(i) for i in range(len(images))]
        names = [t.name if t else "-" for t in tops]
        hits = sum(name in TRAINED_ON[kind] for name in names)
        by_ratio = sum(top_by_ratio(result, i) in TRAINED_ON[kind] for i in range(len(images)))
        together = result.ranking[0].name if result.ranking else "-"
        rows.append((kind, len(images), ", ".join(f"{n} {c}" for n, c in Counter(names).most_common()),
                     f"{hits}/{len(images)}", f"{hits / len(images):.0%}", together,
                     "yes" if together in TRAINED_ON[kind] else "no", f"{by_ratio / len(images):.0%}",
                     f"{seconds:.0f}"))
        record[kind] = {"images": [str(p) for p in images], "top1": names, "hits": hits, "hits_by_ratio": by_ratio,
                        "ranking_all": [r.to_dict() | {"images": None} for r in result.ranking],
                        "skipped": [s.to_dict() for s in result.skipped], "seconds": round(seconds, 1)}
        print(f"{kind}: {len(images)} images, {hits} hits, {seconds:.0f} s; together: "
              + "; ".join(f"{r.rank}. {r.name} ({r.verdict})" for r in result.ranking[:4]), file=sys.stderr)
    header = ("kind", "n images", "top-1 per image (count)", "hits", "hit rate", "top-1 of all together",
              "hit", "hit rate by score/threshold", "seconds")
    table = [header] + rows
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    total = sum(int(r[3].split("/")[0]) for r in rows), sum(r[1] for r in rows)
    if total[1]:
        print(f"all kinds: {total[0]}/{total[1]} images ({total[0] / total[1]:.0%}) ranked a package trained on "
              f"their kind first{f' (--task {args.task})' if args.task else ''}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
