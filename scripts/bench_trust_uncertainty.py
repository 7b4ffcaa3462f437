"""The uncertainty half of scripts/bench_trust.py (run it from there): is test-time-augmentation
uncertainty high where the errors are?"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

import zoo
from zoo.imageio import read_image
from zoo.trust.uncertainty import predict_with_uncertainty

REPO = Path(__file__).resolve().parents[1]
W2S = REPO.parent / "shared" / "data" / "w2s"


def _w2s_validation() -> list[tuple[Path, Path]]:
    with open(W2S / "index.csv") as f:
        rows = list(csv.DictReader(f))
    return [(W2S / "images" / r["file"], W2S / "targets" / r["file"]) for r in rows if 41 <= int(r["fov"]) <= 48]


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    return ranks


def correlations(u: np.ndarray, e: np.ndarray) -> dict:
    return {"pearson": float(np.corrcoef(u, e)[0, 1]), "spearman": float(np.corrcoef(_rank(u), _rank(e))[0, 1]),
            "n": int(len(u))}


def restoration(results: dict) -> tuple[np.ndarray, np.ndarray]:
    model = zoo.load("care-w2s-2d")
    rng = np.random.default_rng(0)
    us, es = [], []
    for image_path, target_path in _w2s_validation():
        image, target = read_image(image_path).astype(np.float32), read_image(target_path).astype(np.float32)
        result = predict_with_uncertainty([model], image)
        lo, hi = np.percentile(target, [0.1, 99.9])
        t = (target - lo) / (hi - lo)
        p = result.prediction.astype(np.float64)
        gain, offset = np.polyfit(p.ravel(), t.ravel(), 1)        # the prediction fitted to the target (CSBDeep)
        error = np.abs(gain * p + offset - t)
        spread = np.abs(gain) * result.uncertainty
        pick = rng.choice(error.size, 20000, replace=False)
        us.append(spread.ravel()[pick])
        es.append(error.ravel()[pick])
    u, e = np.concatenate(us), np.concatenate(es)
    results["restoration"] = {"model": model.spec.ref, "images": len(us), **correlations(u, e),
                              "error_by_uncertainty_decile": _deciles(u, e)}
    print(f"per-pixel uncertainty vs |error| (care-w2s-2d, W2S fields 41-48, {len(us)} images): "
          f"Pearson {results['restoration']['pearson']:.3f}, Spearman {results['restoration']['spearman']:.3f}",
          flush=True)
    return u, e


def _deciles(u: np.ndarray, e: np.ndarray) -> list[float]:
    edges = np.percentile(u, np.linspace(0, 100, 11))
    bins = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, 9)
    return [float(e[bins == b].mean()) for b in range(10)]


def segmentation(results: dict) -> tuple[np.ndarray, np.ndarray]:
    sys.path.insert(0, str(REPO / "scripts"))
    from add_trust import images_of

    from zoo.segmentation.metrics import iou_matrix

    model = zoo.load("stardist-dsb-fluo-2d@0.1.0")
    _, val, _ = images_of("stardist-dsb-fluo-2d")
    confidence, best_iou = [], []
    for path in val[::2]:
        truth = read_image(path.parent.parent / "masks" / f"{path.stem}.tif")
        image = read_image(path)
        result = predict_with_uncertainty([model], image.mean(axis=-1) if image.ndim == 3 else image)
        labels = result.prediction
        ids = [i for i in np.unique(labels) if i]
        if not ids:
            continue
        iou = iou_matrix(truth, labels)                 # rows: true objects, columns: predicted (1..n order)
        order = np.unique(labels)[1:]
        for j, label in enumerate(order):
            confidence.append(result.confidence[int(label)])
            best_iou.append(float(iou[:, j].max()) if iou.shape[0] else 0.0)
    c, b = np.asarray(confidence), np.asarray(best_iou)
    results["segmentation"] = {"model": model.spec.ref, "objects": len(c), **correlations(c, b),
                               "iou_by_confidence_decile": _deciles(c, b)}
    print(f"per-object confidence vs matched IoU (stardist-dsb-fluo-2d, {len(val[::2])} DSB fluorescence validation "
          f"images, {len(c)} objects): Pearson {results['segmentation']['pearson']:.3f}, "
          f"Spearman {results['segmentation']['spearman']:.3f}", flush=True)
    return c, b


def uncertainty_part(results: dict, out: Path) -> None:
    import json

    u, e = restoration(results)
    c, b = segmentation(results)
    (out / "trust_results_uncertainty.json").write_text(json.dumps({k: results[k] for k in
                                                                    ("restoration", "segmentation")}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    centres = np.percentile(u, np.linspace(5, 95, 10))
    axes[0].plot(centres, results["restoration"]["error_by_uncertainty_decile"], "o-")
    axes[0].set_xlabel("per-pixel TTA uncertainty (decile centre)")
    axes[0].set_ylabel("mean |error| in the decile")
    axes[0].set_title(f"care-w2s-2d on W2S validation: Spearman {results['restoration']['spearman']:.2f}")
    axes[1].scatter(c, b, s=4, alpha=0.3)
    axes[1].set_xlabel("per-object confidence (mean IoU across TTA)")
    axes[1].set_ylabel("IoU with the best-matching true nucleus")
    axes[1].set_title(f"stardist-dsb-fluo-2d on DSB fluo validation: Spearman {results['segmentation']['spearman']:.2f}")
    fig.tight_layout()
    fig.savefig(out / "trust_uncertainty.png", dpi=110)
