"""Dataset-shift score: how unlike the training inputs an image is.

Four parts, each near 1 for a training-like image and growing with the difference:

- ``embedding``: the network's bottleneck features (averaged over the image) against those of
  the training images: Mahalanobis distance in their principal components plus the residual
  outside them (a compact mean-and-covariance model), divided by the number of dimensions;
- ``noise``: the noise level after normalisation (log ratio to the training median, in robust
  standard deviations, squared);
- ``background``: the median after normalisation (inverted contrast, brightfield, H&E);
- ``scale``: the median object diameter of the prediction (instance models).

The score is their sum; the threshold is the 99th percentile of the scores of validation images
(never trained on). Explanations name the parts that exceed their own validation 99th percentile,
in the user's words ("input is 4x noisier than training data").

Instance models also keep the training objects' size distribution (``sizes``): the 0.1st and
99.9th percentiles of object areas (volumes in 3D), absolute and relative to the median object of
their image. :meth:`ShiftModel.size_flags` names the objects of a prediction more than ``FAR``
(2x) beyond either range (a merged blob 16x the size of its neighbours is flagged even where some
training images hold nuclei that large).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARTS = ("embedding", "noise", "background", "scale")
SIZE_PERCENTILES = (0.1, 99.9)     # the training object sizes' range outside which objects are flagged
FAR = 2.0                          # "far outside": beyond those percentiles by more than this factor
MIN_OBJECTS = 5                    # objects an image needs before sizes relative to its median mean anything
MIN_SPREAD = {"noise": 0.1, "background": 0.02, "scale": 0.05}   # floors of the robust spreads


def _robust(values: np.ndarray, floor: float) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    centre = float(np.median(values))
    spread = float(1.4826 * np.median(np.abs(values - centre)))
    return centre, max(spread, floor)


def _feature_values(stats: dict) -> dict:
    """The scored quantities of one image's statistics (log where ratios are meaningful)."""
    out = {"noise": np.log(max(stats["noise"], 1e-6)), "background": stats["norm_p50"]}
    if stats.get("scale"):
        out["scale"] = np.log(stats["scale"])
    return out


@dataclass
class ShiftModel:
    mean: np.ndarray              # (C,) training embedding mean
    components: np.ndarray        # (k, C) principal directions
    variances: np.ndarray         # (k,) variance along each
    residual: float               # variance per dimension outside them
    centres: dict                 # part -> training median of its quantity
    spreads: dict                 # part -> robust standard deviation
    part_limits: dict             # part -> 99th percentile of validation values
    threshold: float              # 99th percentile of validation scores
    reference: dict               # training medians in user units (noise, scale, background)
    sizes: dict | None = None     # instance models: training object sizes (see size_distribution)

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, train_embeddings: np.ndarray, train_stats: list[dict], val_embeddings: np.ndarray,
            val_stats: list[dict], max_components: int = 16) -> "ShiftModel":
        x = np.asarray(train_embeddings, np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        k = int(max(1, min(max_components, len(x) // 4, x.shape[1])))
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        variances = (s[:k] ** 2) / max(len(x) - 1, 1)
        rest = (s[k:] ** 2).sum() / max(len(x) - 1, 1) / max(x.shape[1] - k, 1)
        values = [_feature_values(s_) for s_ in train_stats]
        centres, spreads = {}, {}
        for part in ("noise", "background", "scale"):
            column = [v[part] for v in values if part in v]
            if column:
                centres[part], spreads[part] = _robust(np.asarray(column), MIN_SPREAD[part])
        reference = {"noise": float(np.median([s_["noise"] for s_ in train_stats])),
                     "background": float(np.median([s_["norm_p50"] for s_ in train_stats])),
                     **{k: float(np.median([s_[k] for s_ in train_stats])) for k in train_stats[0]
                        if k.startswith(("raw_p", "norm_p"))}}      # percentiles before and after normalisation
        scales = [s_["scale"] for s_ in train_stats if s_.get("scale")]
        if scales:
            reference["scale"] = float(np.median(scales))
        model = cls(mean, vt[:k], np.maximum(variances, 1e-12), float(max(rest, 1e-12)), centres, spreads, {}, 0.0,
                    reference)
        val_parts = [model.parts(e, s_) for e, s_ in zip(val_embeddings, val_stats)]
        model.part_limits = {p: float(np.percentile([v[p] for v in val_parts if p in v], 99))
                             for p in PARTS if any(p in v for v in val_parts)}
        model.threshold = float(np.percentile([sum(v.values()) for v in val_parts], 99))
        return model

    # ------------------------------------------------------------------ score
    def parts(self, embedding: np.ndarray, stats: dict) -> dict:
        d = np.asarray(embedding, np.float64) - self.mean
        projected = self.components @ d
        inside = float(np.sum(projected ** 2 / self.variances))
        outside = float((d @ d - projected @ projected) / self.residual)
        out = {"embedding": (inside + outside) / len(d)}
        for part, value in _feature_values(stats).items():
            if part in self.centres:
                out[part] = float(((value - self.centres[part]) / self.spreads[part]) ** 2)
        return out

    def score(self, embedding: np.ndarray, stats: dict) -> tuple[float, dict]:
        parts = self.parts(embedding, stats)
        return float(sum(parts.values())), parts

    def explain(self, parts: dict, stats: dict) -> list[str]:
        """What differs from the training data, for the parts beyond their validation range."""
        messages = []
        over = {p for p, v in parts.items() if v > self.part_limits.get(p, np.inf)}
        if "noise" in over and self.reference.get("noise"):
            ratio = stats["noise"] / self.reference["noise"]
            messages.append(f"input is {ratio:.1f}x noisier than training data" if ratio > 1 else
                            f"input is {1 / ratio:.1f}x smoother (less noisy, or blurred) than training data"
                            if ratio > 0 else "input has no noise at all (a constant or synthetic image?)")
        if "scale" in over and stats.get("scale") and self.reference.get("scale"):
            ratio = stats["scale"] / self.reference["scale"]
            messages.append(f"objects are {ratio:.1f}x larger than in training data" if ratio > 1 else
                            f"objects are {1 / ratio:.1f}x smaller than in training data")
        if "background" in over:
            brighter = stats["norm_p50"] > self.reference["background"]
            messages.append("the background is much " + ("brighter" if brighter else "darker") + " than in training "
                            "data after normalisation" + (" (inverted contrast, brightfield or H&E?)" if brighter else ""))
        if "embedding" in over:
            messages.append("the network's features are unlike those of its training images")
        return messages

    def size_flags(self, areas: dict) -> dict:
        """``{label: area}`` (pixels, voxels in 3D) of one prediction's objects -> ``{label: message}``
        for the objects outside the training sizes (absolute, or relative to this image's median)."""
        if not self.sizes or not areas:
            return {}
        unit = "px" if self.sizes["ndim"] == 2 else "voxels"
        low, high = self.sizes["absolute"]
        rel_low, rel_high = self.sizes["relative"]
        median = float(np.median(list(areas.values())))
        relative = len(areas) >= MIN_OBJECTS and median > 0
        flags = {}
        for label, area in areas.items():
            ratio = area / median if relative else None
            if area > FAR * high or (ratio is not None and ratio > FAR * rel_high):
                what = "larger"
            elif area < low / FAR or (ratio is not None and ratio < rel_low / FAR):
                what = "smaller"
            else:
                continue
            here = f", {ratio:.2g}x this image's median object" if ratio is not None else ""
            flags[int(label)] = (f"{what} than training objects: {area:.0f} {unit}{here} (training: {low:.0f}-"
                                 f"{high:.0f} {unit}, {rel_low:.2g}-{rel_high:.2g}x their image's median)")
        return flags

    # ------------------------------------------------------------------ storage
    def arrays(self) -> dict:
        import json

        meta = {"centres": self.centres, "spreads": self.spreads, "part_limits": self.part_limits,
                "threshold": self.threshold, "reference": self.reference, "residual": self.residual,
                **({"sizes": self.sizes} if self.sizes else {})}
        return {"mean": self.mean, "components": self.components, "variances": self.variances,
                "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}

    @classmethod
    def from_arrays(cls, arrays) -> "ShiftModel":
        import json

        meta = json.loads(bytes(np.asarray(arrays["meta"], np.uint8)).decode())
        return cls(np.asarray(arrays["mean"]), np.asarray(arrays["components"]), np.asarray(arrays["variances"]),
                   float(meta["residual"]), meta["centres"], meta["spreads"], meta["part_limits"],
                   float(meta["threshold"]), meta["reference"], meta.get("sizes"))


def size_distribution(areas_per_image, ndim: int) -> dict | None:
    """The training objects' size range: ``areas_per_image`` holds one array of object areas
    (voxels in 3D) per training image (ground-truth labels where known, else predictions)."""
    arrays = [np.asarray(a, np.float64) for a in areas_per_image]
    arrays = [a[a > 0] for a in arrays if np.size(a)]
    if not arrays or not sum(a.size for a in arrays):
        return None
    absolute = np.concatenate(arrays)
    relative = np.concatenate([a / np.median(a) for a in arrays if a.size >= MIN_OBJECTS] or [np.ones(1)])
    return {"ndim": int(ndim), "objects": int(absolute.size), "images": len(arrays),
            "median": float(np.median(absolute)),
            "absolute": [float(v) for v in np.percentile(absolute, SIZE_PERCENTILES)],
            "relative": [float(v) for v in np.percentile(relative, SIZE_PERCENTILES)],
            "percentiles": list(SIZE_PERCENTILES)}
