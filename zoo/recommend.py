"""Which package fits these images: rank the packages that can take them by their dataset-shift
scores (:mod:`zoo.trust.check`) on them.

A package can take the images when its single input reads every one of them (spatial axes and
channels as :func:`zoo.runtime.layout.layout_for` reads them: a grey image fits a one-channel
model or one that repeats grey, an RGB picture a three-channel one, a classifier's crop included;
an RGB picture is never read as a volume). Ranking, in three tiers:

1. packages whose median score over the images is within their threshold (the 99th percentile
   of their own validation images' scores), closest to their training data first;
2. packages beyond it, closest first;
3. packages without a shift check, by name.

Within a tier the order is the score itself: each of its parts is a squared distance from the
package's training data in units of the training data's own spread, so scores compare across
packages where ratios to thresholds do not (a package trained on fluorescence, H&E and
brightfield at once has a threshold of ~1300, and every image is a small fraction of it).

This module runs nothing: :func:`zoo.api.recommending.recommend` loads the models and checks the
images, then calls :func:`summarise` and :func:`rank`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .imageio import is_colour
from .runtime.layout import layout_for

SIDE = 512           # images are checked on their centre, at most this many pixels a side (speed: every package runs)


@dataclass
class Recommendation:
    package: str                          # name@version
    task: str
    reports: list = field(repr=False)     # one ShiftReport (or None: no shift check) per image
    rank: int = 0

    @property
    def name(self) -> str:
        return self.package.rpartition("@")[0]

    @property
    def checked(self) -> bool:
        return all(r is not None for r in self.reports)

    def _median(self, value) -> float | None:
        return float(np.median([value(r) for r in self.reports])) if self.checked else None

    @property
    def score(self) -> float | None:
        """Median shift score over the images."""
        return self._median(lambda r: r.shift_score)

    @property
    def threshold(self) -> float | None:
        return self.reports[0].shift_threshold if self.checked else None

    @property
    def ratio(self) -> float | None:
        """Median of score / threshold over the images."""
        return self._median(lambda r: r.shift_score / r.shift_threshold)

    @property
    def beyond(self) -> int:
        """Images whose score exceeds the threshold."""
        return sum(r.shift_score > r.shift_threshold for r in self.reports) if self.checked else 0

    @property
    def tier(self) -> int:
        return 2 if not self.checked else int(self.ratio > 1)

    @property
    def messages(self) -> list[str]:
        """What differs, from the image at the median ratio (the upper one of an even count)."""
        if not self.checked:
            return []
        ratios = [r.shift_score / r.shift_threshold for r in self.reports]
        return list(self.reports[int(np.argsort(ratios, kind="stable")[len(ratios) // 2])].messages)

    @property
    def verdict(self) -> str:
        """One line: whether the images fit, how far, and what differs."""
        if not self.checked:
            return "no shift check"
        n = len(self.reports)
        what = ", ".join(dict.fromkeys(short(m) for m in self.messages))
        if self.tier == 0:
            some = f"; {self.beyond} of {n} images beyond it" if self.beyond else ""
            return f"fits: shift {number(self.ratio)} of threshold{some}" + (f" ({what})" if what else "")
        some = f"; {self.beyond} of {n} images" if n > 1 else ""
        return f"unlike its training data: {number(self.ratio)}x threshold{some}" + (f" ({what})" if what else "")

    def to_dict(self) -> dict:
        rounded = (lambda v: None if v is None else round(v, 4))
        return {"rank": self.rank, "package": self.package, "name": self.name, "task": self.task,
                "shift_score": rounded(self.score), "shift_threshold": rounded(self.threshold),
                "ratio": rounded(self.ratio), "beyond": self.beyond, "verdict": self.verdict,
                "messages": self.messages,
                "images": [r.to_dict() if r is not None else None for r in self.reports]}


@dataclass
class Skipped:
    package: str
    task: str
    why: str

    def to_dict(self) -> dict:
        return {"package": self.package, "task": self.task, "why": self.why}


@dataclass
class Recommendations:
    images: list[str]
    ranking: list[Recommendation]
    skipped: list[Skipped]
    registry: str = ""
    task: str | None = None
    message: str = ""                     # why the ranking is empty, when it is
    figure: str | None = None

    def top_for(self, i: int) -> Recommendation | None:
        """The package ranked first on image ``i`` alone."""
        ranked = rank([Recommendation(r.package, r.task, [r.reports[i]]) for r in self.ranking])
        return ranked[0] if ranked else None

    def to_dict(self) -> dict:
        return {"images": self.images, "registry": self.registry, "task": self.task,
                "ranking": [r.to_dict() for r in self.ranking], "skipped": [s.to_dict() for s in self.skipped],
                "message": self.message, "figure": self.figure}


def rank(recommendations: list[Recommendation]) -> list[Recommendation]:
    """Fits first, then beyond the threshold, then no shift check; closest to the training data first."""
    ordered = sorted(recommendations, key=lambda r: (r.tier, r.score if r.checked else 0.0, r.package))
    for i, r in enumerate(ordered, 1):
        r.rank = i
    return ordered


def number(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 0.095 else f"{x:.2f}"


SHORT = [(r"input is ([\d.]+)x (noisier|smoother)", r"\1x \2"),
         (r"objects are ([\d.]+)x (larger|smaller)", r"objects \1x \2"),
         (r"its objects are ([\d.]+)x the size", r"objects \1x the training size"),
         (r"background is much (brighter|darker)", r"\1 background"),
         (r"features are unlike", "unfamiliar features")]


def short(message: str) -> str:
    """A shift message in a few words ("input is 4.0x noisier than training data" -> "4.0x noisier")."""
    for pattern, replacement in SHORT:
        found = re.search(pattern, message)
        if found:
            return found.expand(replacement)
    return message.split(":")[0]


def takes(tensor) -> str:
    """What an input tensor takes, in words ("1-channel 2D images (yx)")."""
    spatial = tensor.spatial_axes
    channels = f"{tensor.n_channels}-channel" + (" (or grey)" if tensor.grey == "repeat" else "")
    return f"{channels} {len(spatial)}D images ({spatial})"


def seen(image: np.ndarray, axes: str | None) -> str:
    """An image's shape in words."""
    shape = "x".join(map(str, np.shape(image)))
    kind = "RGB" if is_colour(image) and np.shape(image)[-1] == 3 else "RGBA" if is_colour(image) else ""
    return f"{kind + ' ' if kind else ''}{shape}{f' ({axes})' if axes else ''}"


def why_not(spec, images: list[tuple[str, np.ndarray, str | None]]) -> str | None:
    """Why a package cannot take every one of ``images`` (label, array, axes), None when it can."""
    if len(spec.inputs) != 1:
        return f"takes {len(spec.inputs)} inputs at once"
    tensor = spec.inputs[0]
    for label, image, axes in images:
        volume = len(tensor.spatial_axes) == 3 and axes is None and is_colour(image)
        try:
            if volume:
                raise InputError("an RGB picture, not a volume")
            layout_for(np.shape(image), axes, tensor)
        except InputError:
            return f"takes {takes(tensor)}; {label} is {seen(image, axes)}"
    return None


def centre(image, axes: str | None, side: int = SIDE) -> np.ndarray:
    """The centre of an image, at most ``side`` pixels along y and x (all of it read into memory)."""
    shape = np.shape(image)
    if axes and "y" in axes and "x" in axes:
        planar = (axes.index("y"), axes.index("x"))
    elif is_colour(image) or len(shape) < 2:
        planar = tuple(range(min(2, len(shape))))
    else:
        planar = (len(shape) - 2, len(shape) - 1)
    region = tuple(slice(max(0, (s - side) // 2), max(0, (s - side) // 2) + side) if i in planar else slice(None)
                   for i, s in enumerate(shape))
    return np.asarray(image[region])


def empty_message(images: list[tuple[str, np.ndarray, str | None]], skipped: list[Skipped], task: str | None,
                  tasks: list[str], registry: str) -> str:
    """Why nothing was ranked: no package of the task, or none takes the images."""
    where = f"the registry {registry}" if registry else "the registry"
    if task and not skipped:
        return f"no package in {where} has the task '{task}' (tasks: {', '.join(sorted(set(tasks))) or 'none'})"
    shapes = "; ".join(f"{label}: {seen(image, axes)}" for label, image, axes in images[:5])
    wanted = sorted({s.why.split(";")[0].removeprefix("takes ") for s in skipped})
    return (f"no package{f' for {task}' if task else ''} in {where} takes these images ({shapes}). "
            f"The packages take: {', '.join(wanted) or 'nothing'}. Convert the images (e.g. to grey or RGB), "
            "or pass --axes if the file does not say which axis is which")
