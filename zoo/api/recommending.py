"""Which package in a registry fits a user's images (``zoo recommend``)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..loading import load
from .sharing import _as_registry


def recommend(images: Sequence, task: str | None = None, registry=None, *, axes: str | None = None,
              figure: str | Path | None = None, runtime: str = "onnx", device: str = "auto",
              progress: Callable[[int, int], None] | None = None):
    """Rank every package of ``registry`` (its latest versions; a URL, folder, registry object, or
    the local registry for None) that can take ``images`` (files, or arrays in their natural
    layout, ``axes`` when a file does not say) by its dataset-shift score on them: a
    :class:`zoo.recommend.Recommendations` (``ranking``, each with a one-line ``verdict``; the
    packages ``skipped`` and why; ``message`` when nothing could be ranked). ``task`` keeps the
    packages of a task or family (``segmentation``). ``figure``: a PNG of the first image and each
    of the top three's prediction on it. A large image is checked on its centre 512x512 (y, x).
    ``progress(done, total)`` is called after each package."""
    from .. import recommend as rec
    from ..errors import InputError, ZooError
    from ..registry.remote import search

    if isinstance(images, (str, Path)) or hasattr(images, "shape"):
        images = [images]
    opened = [_open(image, i, axes) for i, image in enumerate(images)]
    if not opened:
        raise InputError("give at least one image to recommend a package for")
    reg = _as_registry(registry)
    where = str(getattr(reg, "root", "") or "")
    rows = reg.entries()
    chosen = search(rows, task=task) if task else rows
    ranking, skipped = [], []
    quiet = _Quiet()          # per-object size warnings are in each report; the log would repeat them per package
    for done, row in enumerate(chosen, 1):
        ref = f"{row['name']}@{row['latest']}"
        try:
            spec = reg.spec(ref)
            why = rec.why_not(spec, opened)
            if why is None:
                model = load(ref, runtime, device, reg) if spec.trust else None
                with quiet:
                    reports = [model.check_shift(image, axes=stated) if model else None
                               for _, image, stated in opened]
        except ZooError as e:
            why = f"could not be checked: {e}"
        if why is None:
            ranking.append(rec.Recommendation(ref, spec.task, reports))
        else:
            skipped.append(rec.Skipped(ref, row.get("task") or "", why))
        if progress is not None:
            progress(done, len(chosen))
    result = rec.Recommendations([label for label, _, _ in opened], rec.rank(ranking), skipped, where, task)
    if not ranking:
        result.message = rec.empty_message(opened, skipped, task, [r.get("task") or "" for r in rows], where)
    elif figure is not None:
        result.figure = str(preview(result, opened[0], figure, reg, runtime, device))
    return result


class _Quiet:
    """Hold the shift check's log warnings back (a context manager)."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("zoo.trust")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _open(image, i: int, axes: str | None):
    """(label, the image's centre in memory, its axes) of a file or an array."""
    from .. import recommend as rec

    if isinstance(image, (str, Path)):
        from ..imageio import open_lazy

        array, stated = open_lazy(image)
        return str(image), rec.centre(array, axes or stated), axes or stated
    return f"image {i}", rec.centre(image, axes), axes


def preview(result, first, path: str | Path, registry=None, runtime: str = "onnx", device: str = "auto") -> Path:
    """A PNG: the first image, then each of the top three packages' prediction on it (a classifier's
    class in its title over the image)."""
    import numpy as np

    from ..errors import ZooError
    from ..imageio import figure, preview as shown

    label, image, axes = first

    def view(array):              # a small crop (a classifier's) is enlarged to be seen
        array = shown(array)
        times = max(1, 192 // max(array.shape[:2]))
        return array.repeat(times, 0).repeat(times, 1) if times > 1 else array

    panels = [(f"input: {Path(label).name}", view(image))]
    for r in result.ranking[:3]:
        title = f"{r.rank}. {r.name}"
        try:
            model = load(r.package, runtime, device, registry)
            out = model.predict(np.asarray(image), axes=axes)
        except ZooError as e:
            panels.append((f"{title}: no preview ({type(e).__name__})", view(image)))
            continue
        if model.is_classifier:
            name, p = out
            panels.append((f"{title}: {name} {float(np.max(p)):.2f}", view(image)))
        elif model.makes_instances:
            n = int(np.max(out)) if np.size(out) else 0
            panels.append((f"{title}: {n} object{'' if n == 1 else 's'}", view(out), "labels"))
        else:
            panels.append((title, view(out)))
    return figure(path, panels, max_side=384)
