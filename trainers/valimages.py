"""A few validation images in the run folder (issue 27.1): at every validation, a small PNG of
three fixed validation samples, one row each (input | prediction | target), in
``RUN/validation/step_NNNNNNN.png``, and in TensorBoard's images when it is installed.

- restoration: input, prediction, target (when the task has one); the prediction is shown on the
  target's intensity range (on the input's without a target), so the two compare by eye;
- instance segmentation: input, predicted labels (the package's own post-processing on the
  network's output, as AP@0.5 is scored), target labels, with their numbers of objects;
- classification: the input, titled with its true and predicted class (green when right, red
  when wrong) and the predicted class's probability;
- any other task: input, the output's first channel, the target if there is one.

The samples are fixed for the run (spread over the validation items, so that they come from
different images when there are several), so the images of successive validations show the
same patches learning. It costs one forward pass of three samples and one small PNG per
validation, on rank 0 only. The file is named by the training steps done (as the checkpoints
are); ``metrics.csv`` labels the same validation one lower (Lightning counts batches from 0),
and TensorBoard's images carry its scalars' step, so they line up there. Drawn with Pillow
(a dependency), not matplotlib (an extra).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch

log = logging.getLogger("zoo.trainers")

FOLDER = "validation"
SAMPLES = 3
CELL = (128, 256)        # each picture's long side is brought within these (pixels)
TAG = "validation/samples"
FRAME = (150, 150, 190)  # a 1-pixel frame around each picture (a colour no grey picture holds)


def sample_items(datamodule, items: Sequence | None = None, n: int = SAMPLES) -> list[tuple[np.ndarray, object]]:
    """``n`` fixed validation samples ``(input C,*spatial float32, reference)``, spread over the
    validation items: the reference is the target image (restoration), the label image
    (instance segmentation), the class index (classification) or None (no target: Noise2Void).

    ``items``: the selection metric's items (:func:`zoo.trainers.selection.choose`) when there
    are; else the data module's own (``selection_items``), else its validation patches."""
    if not items and hasattr(datamodule, "selection_items"):
        try:
            items = datamodule.selection_items()
        except Exception as e:  # noqa: BLE001 - the pictures must never stop a training
            log.debug("no selection items for the validation images (%s)", e)
            items = None
    if not items:
        dataset = datamodule.val_dataloader().dataset
        picked = _spread(len(dataset), n)
        items = [dataset[i] for i in picked]
        items = [tuple(item) if isinstance(item, (tuple, list)) else (item, None) for item in items]
        picked = range(len(items))
    else:
        picked = _pick(items, n)
    out = []
    for i in picked:
        x, reference = items[i][0], items[i][1] if len(items[i]) > 1 else None
        x = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        if isinstance(reference, torch.Tensor):
            reference = reference.numpy() if reference.ndim else int(reference)
        out.append((np.ascontiguousarray(x), reference))
    return out


def _spread(length: int, n: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, length - 1, min(n, length))}) if length else []


def _pick(items: Sequence, n: int) -> list[int]:
    """Spread over the items; a classifier's (class index references) one class after another."""
    references = [item[1] if len(item) > 1 else None for item in items]
    if not all(isinstance(r, (int, np.integer)) for r in references):
        return _spread(len(items), n)
    by_class: dict[int, list[int]] = {}
    for i, r in enumerate(references):
        by_class.setdefault(int(r), []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    picked: list[int] = []
    while len(picked) < min(n, len(items)):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


class ValidationImages(pl.Callback):
    """Draw the samples with the current weights at the end of every validation (rank 0 only);
    see the module. ``kind``: instance, classification, restoration or None (another task)."""

    def __init__(self, run_dir: Path, spec, samples: list, kind: str | None):
        self.folder = Path(run_dir) / FOLDER
        self.spec, self.samples, self.kind = spec, samples, kind
        self.written: list[Path] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.samples:
            return
        try:
            outputs = self._outputs(module, trainer)
            image = panel(self.rows(outputs), self.heading(trainer.global_step))
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"step_{trainer.global_step:07d}.png"
            tmp = path.with_name(f".{path.name}.tmp")
            image.save(tmp, format="PNG")
            tmp.replace(path)
            self.written.append(path)
            logger_step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
            for logger in trainer.loggers:
                add_image = getattr(getattr(logger, "experiment", None), "add_image", None)
                if callable(add_image):      # TensorBoard's SummaryWriter
                    add_image(TAG, np.asarray(image), global_step=logger_step, dataformats="HWC")
        except Exception as e:  # noqa: BLE001 - the pictures must never stop a training
            log.warning("no validation images at step %d (%s: %s)", trainer.global_step, type(e).__name__, e)

    def _outputs(self, module, trainer) -> np.ndarray:
        x = torch.from_numpy(np.stack([s[0] for s in self.samples])).to(module.device)
        context = trainer.precision_plugin.forward_context()
        with torch.no_grad(), context:
            return module(x).float().cpu().numpy()

    def heading(self, step: int) -> str:
        heading = f"validation samples at step {step}"
        if self.kind == "restoration":
            has_target = any(isinstance(r, np.ndarray) and r.ndim == x.ndim for x, r in self.samples)
            heading += f" (prediction on the {'target' if has_target else 'input'}'s intensity range)"
        return heading

    def rows(self, outputs: np.ndarray) -> list[list[tuple[str, np.ndarray]]]:
        """One row of titled RGB pictures per sample."""
        rows = [self._row(x, y, reference) for (x, reference), y in zip(self.samples, outputs)]
        return [[cell for row in rows for cell in row]] if self.kind == "classification" else rows

    def _row(self, x: np.ndarray, y: np.ndarray, reference) -> list[tuple[str, np.ndarray]]:
        from zoo.imageio import label_colours, stretch

        shown = _view(x)
        if self.kind == "classification":
            return [(*self._verdict(y, reference), _rgb(stretch(shown)))]
        row = [("input", _rgb(stretch(shown)))]
        if self.kind == "instance":
            try:
                labels = _plane(self._labels(y))
                row.append((f"prediction ({_objects(labels)})", label_colours(labels)))
            except Exception as e:  # noqa: BLE001 - an untrained network's output may not post-process
                log.debug("post-processing for the validation images failed (%s)", e)
                row.append(("output (channel 0)", _rgb(stretch(_view(y)))))
            if reference is not None:
                target = _plane(np.asarray(reference))
                row.append((f"target ({_objects(target)})", label_colours(target)))
            return row
        target = _view(reference) if isinstance(reference, np.ndarray) and reference.ndim == x.ndim else None
        scale = target if target is not None else shown
        lo, hi = np.percentile(scale, [0.5, 99.5])
        prediction = _view(y)
        if self.kind == "restoration" and prediction.shape == scale.shape:
            row.append(("prediction", _rgb(_on_range(prediction, lo, hi))))
        else:
            row.append(("output" + (" (channel 0)" if y.shape[0] > 1 else ""), _rgb(stretch(prediction))))
        if target is not None:
            row.append(("target", _rgb(_on_range(target, lo, hi))))
        elif reference is not None and np.ndim(reference) == x.ndim - 1:
            row.append(("target", label_colours(_plane(np.asarray(reference)))))
        return row

    def _labels(self, y: np.ndarray) -> np.ndarray:
        from zoo import opnames
        from zoo.runtime import ops

        return ops.apply(opnames.output_ops(self.spec), y[None], {}, self.spec.outputs[0].name,
                         ops.POSTPROCESSING)[0, 0]

    def _verdict(self, y: np.ndarray, reference) -> tuple[str, tuple[int, int, int]]:
        classes = list(self.spec.outputs[0].channels or [])
        scores = np.asarray(y, dtype=np.float64).reshape(-1)
        if any(op.op == "softmax" for op in self.spec.outputs[0].postprocessing):
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        predicted = int(np.argmax(scores))

        def name(i):
            return classes[i] if 0 <= i < len(classes) else str(i)

        title = f"true: {name(int(reference))}\npredicted: {name(predicted)} ({scores[predicted]:.2f})" \
            if reference is not None else f"predicted: {name(predicted)} ({scores[predicted]:.2f})"
        right = reference is not None and predicted == int(reference)
        return title, (0, 120, 0) if right else (180, 0, 0) if reference is not None else (0, 0, 0)


def _view(image) -> np.ndarray:
    """A 2D view of a ``C, *spatial`` array: RGB (``y, x, 3``) for three channels, else the first
    channel; the middle plane of a volume."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim >= 3 and image.shape[0] == 3:
        return np.moveaxis(np.stack([_plane(c) for c in image]), 0, -1)
    return _plane(image[0] if image.ndim >= 3 else image)


def _plane(image: np.ndarray) -> np.ndarray:
    while image.ndim > 2:
        image = image[image.shape[0] // 2]
    return image


def _on_range(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _rgb(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def _objects(labels: np.ndarray) -> str:
    count = int(np.unique(labels[labels > 0]).size)
    return f"{count} object{'' if count == 1 else 's'}"


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=13)       # Pillow's scalable font (with FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _fit(picture: np.ndarray, labels: bool = False):
    """A PIL image whose long side is within :data:`CELL` (pixels kept sharp when enlarged)."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(picture))
    side = max(im.size)
    scale = CELL[0] / side if side < CELL[0] else CELL[1] / side if side > CELL[1] else 1
    if scale != 1:
        resample = Image.Resampling.NEAREST if scale > 1 or labels else Image.Resampling.BILINEAR
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
    return im


def panel(rows: list[list[tuple]], heading: str):
    """The rows of titled pictures (``(title, RGB)`` or ``(title, colour, RGB)``) as one PIL image
    on white, each picture titled above, under a heading."""
    from PIL import Image, ImageDraw

    cells = [[(cell[0], cell[1] if len(cell) == 3 else (0, 0, 0), _fit(cell[-1])) for cell in row] for row in rows]
    font = _font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line, pad = int(font.getbbox("Ag")[3]) + 4, 8

    def text_width(text: str) -> int:
        return max(int(draw.textlength(part, font=font)) for part in text.split("\n")) + 4

    columns = max(len(row) for row in cells)
    widths = [max(max(im.width, text_width(title)) for row in cells if len(row) > c for title, _, im in [row[c]])
              for c in range(columns)]
    titles = [max(title.count("\n") + 1 for title, _, _ in row) * line for row in cells]
    heights = [max(im.height for _, _, im in row) for row in cells]
    width = max(sum(widths) + pad * (columns + 1), text_width(heading) + 2 * pad)
    height = line + 2 * pad + sum(t + h + pad for t, h in zip(titles, heights))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), heading, fill=(0, 0, 0), font=font)
    y = line + 2 * pad
    for row, title_height, picture_height in zip(cells, titles, heights):
        x = pad
        for (title, colour, im), slot in zip(row, widths):
            draw.multiline_text((x, y), title, fill=colour, font=font, spacing=4)
            left, top = x + (slot - im.width) // 2, y + title_height
            canvas.paste(im, (left, top))
            draw.rectangle((left - 1, top - 1, left + im.width, top + im.height), outline=FRAME)
            x += slot + pad
        y += title_height + picture_height + pad
    return canvas


def clear(run_dir: Path, after: int | None = None) -> None:
    """Delete a run's validation images: all (a new run), or those after step ``after`` (a resume,
    which draws them again)."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return
    for path in folder.glob("step_*.png"):
        try:
            step = int(path.stem.split("_")[1])
        except (IndexError, ValueError):
            continue
        if after is None or step > after:
            path.unlink(missing_ok=True)
