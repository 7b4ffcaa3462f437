"""Evidence for the trust features: does the shift score flag unfamiliar inputs, and is the
uncertainty high where the errors are?

Reproduce:  python scripts/bench_trust.py [--part shift|uncertainty|all] [--package PKG]

Shift (`stardist-dsb-fluo-2d@0.1.1`, fluorescence nuclei, calibrated on its training images):
in-distribution = the 92 DSB2018 fluorescence validation images (never trained on); shifted =
DSB2018 H&E and brightfield images, and the validation images corrupted (Gaussian noise, blur,
2x up / down scaling, inverted intensities). ROC AUC of the shift score, in-distribution vs each.

Uncertainty: test-time augmentation (8 flips/rotations). Per pixel: correlation of the
uncertainty with the absolute error of `care-w2s-2d` on the W2S validation fields (41-48).
Per object: correlation of `stardist-dsb-fluo-2d`'s object confidence with the IoU of the
object's best match in the ground truth (DSB2018 fluorescence validation).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import zoo
from zoo.imageio import read_image

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "data" / "dsb2018"
W2S = REPO.parent / "shared" / "data" / "w2s"
OUT = REPO / "docs" / "benchmarks"


def auc(negative: list[float], positive: list[float]) -> float:
    """ROC AUC: the probability that a shifted image scores above an in-distribution one."""
    neg, pos = np.asarray(negative), np.asarray(positive)
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def corruptions(image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    from scipy import ndimage

    x = image.astype(np.float32)
    spread = float(np.percentile(x, 99.5) - np.percentile(x, 0.5)) or 1.0
    return {"noise": x + rng.normal(0, 0.25 * spread, x.shape).astype(np.float32),
            "blur": ndimage.gaussian_filter(x, 3.0),
            "scale x2 (larger)": ndimage.zoom(x, 2.0, order=1),
            "scale x0.5 (smaller)": ndimage.zoom(x, 0.5, order=1),
            "inverted": x.max() - x}


def dsb_ids(kind: str) -> list[str]:
    import csv

    with open(DSB / "index.csv") as f:
        return sorted(r["id"] for r in csv.DictReader(f) if r["kind"] == kind)


def grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=-1) if image.ndim == 3 else image


def shift_part(package: str, results: dict, reuse: bool = False) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from add_trust import images_of

    model = zoo.load(package)
    _, val, _ = images_of("stardist-dsb-fluo-2d")
    rng = np.random.default_rng(0)
    scores: dict[str, list[float]] = {"in-distribution (fluorescence validation)": []}
    warned: dict[str, int] = {}
    cached = {}
    previous = OUT / "trust_results_shift.json"
    if reuse and previous.is_file():       # deterministic: the scores of groups already measured
        old = json.loads(previous.read_text())
        if old.get("package") == model.spec.ref:
            cached = old.get("scores", {})
    done: dict[str, int] = {}

    def score(kind, image):
        if kind in cached and kind != "in-distribution (fluorescence validation)":
            i = done[kind] = done.get(kind, 0) + 1
            value = cached[kind][i - 1]
            scores.setdefault(kind, []).append(value)
            warned[kind] = warned.get(kind, 0) + int(value > model.spec.trust["threshold"])
            return
        report = model.check_shift(image)
        scores.setdefault(kind, []).append(report.shift_score)
        warned[kind] = warned.get(kind, 0) + int(report.shift_warning)

    for path in val:
        image = grey(read_image(path))
        score("in-distribution (fluorescence validation)", image)
        for name, corrupted in corruptions(image, rng).items():
            if f"corrupted: {name}" in cached:
                score(f"corrupted: {name}", None)
            else:
                score(f"corrupted: {name}", corrupted)
    for kind, label in (("histo_rgb", "H&E (DSB2018)"), ("brightfield_gray", "brightfield (DSB2018)")):
        for i in dsb_ids(kind):
            score(label, grey(read_image(DSB / "images" / f"{i}.png")))   # as a user of a grey model would
    inside = scores["in-distribution (fluorescence validation)"]
    rows = {}
    for kind, values in scores.items():
        rows[kind] = {"images": len(values), "median_score": float(np.median(values)),
                      "flagged": warned[kind] / len(values),
                      **({"auc": auc(inside, values)} if kind != "in-distribution (fluorescence validation)" else {})}
        print(f"| {kind} | {len(values)} | {rows[kind]['median_score']:.3g} | {rows[kind]['flagged']:.2f} | "
              f"{rows[kind].get('auc', float('nan')):.3f} |", flush=True)
    results["shift"] = {"package": model.spec.ref, "threshold": model.spec.trust["threshold"], "rows": rows,
                        "scores": scores}
    (OUT / "trust_results_shift.json").write_text(json.dumps(results["shift"], indent=1))
    _plot_shift(scores, model.spec.trust["threshold"])


def _plot_shift(scores: dict, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(scores)
    ax.boxplot([np.log10(np.maximum(scores[n], 1e-3)) for n in names], orientation="horizontal", tick_labels=names)
    ax.axvline(np.log10(threshold), color="red", linestyle="--", label="threshold (99th pct of validation)")
    ax.set_xlabel("log10 shift score")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT / "trust_shift.png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["shift", "uncertainty", "all"], default="all")
    p.add_argument("--package", default="stardist-dsb-fluo-2d@0.1.1")
    p.add_argument("--reuse", action="store_true", help="reuse the scores of groups already in "
                                                        "docs/benchmarks/trust_results_shift.json (same package)")
    args = p.parse_args()
    results: dict = {}
    if args.part in ("shift", "all"):
        print("| images | n | median shift score | flagged | ROC AUC vs in-distribution |\n|---|---|---|---|---|")
        shift_part(args.package, results, args.reuse)
    if args.part in ("uncertainty", "all"):
        from bench_trust_uncertainty import uncertainty_part

        uncertainty_part(results, OUT)
    print(f"results: {OUT}/trust_results_shift.json, trust_results_uncertainty.json; plots trust_shift.png, "
          "trust_uncertainty.png")


if __name__ == "__main__":
    main()
