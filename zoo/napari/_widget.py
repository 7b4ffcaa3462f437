"""The dock widget: find a model, run it on a layer, correct the result, fine-tune on the corrections.

Three tabs over :mod:`zoo.api` (through :mod:`._jobs`): long work (pull, predict, fine-tune) runs
in napari's background workers with a progress bar and a Cancel button; errors the user can fix
come back as napari notifications in plain words, never as a traceback.
"""
from __future__ import annotations

import html
import logging
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, QPointF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPixmap
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                            QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSpinBox, QTabWidget,
                            QVBoxLayout, QWidget)

from . import _jobs

log = logging.getLogger("zoo.napari")

TASKS = [("any task", ""), ("segmentation", "segmentation"), ("restoration", "restoration"),
         ("classification", "classification")]
AXES = [("2D or 3D", ""), ("2D (bcyx)", "bcyx"), ("3D (bczyx)", "bczyx")]


class _Relay(QObject):
    """Carries progress from a worker thread to the widget (signals are queued across threads)."""

    progress = Signal(int, int)
    step = Signal(int, int, object)


class LossCurve(QWidget):
    """The training loss (and validation loss) of a running fine-tune, drawn as it comes."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.total = 1
        self.setMinimumHeight(90)
        self.setToolTip("training loss (orange) and validation loss (blue) per step")

    def clear(self, total: int = 1) -> None:
        self.train, self.val, self.total = [], [], max(1, total)
        self.update()

    def add(self, step: int, total: int, losses: dict) -> None:
        self.total = max(1, total)
        if "train_loss" in losses:
            self.train.append((step, float(losses["train_loss"])))
        if "val_loss" in losses and (not self.val or self.val[-1][1] != float(losses["val_loss"])):
            self.val.append((step, float(losses["val_loss"])))
        self.update()

    def paintEvent(self, event) -> None:   # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h, m = self.width(), self.height(), 6
        painter.setPen(QPen(QColor(120, 120, 120), 1))
        painter.drawRect(m, m, w - 2 * m, h - 2 * m)
        values = [v for _, v in self.train + self.val if np.isfinite(v)]
        if not values:
            painter.drawText(m + 4, h // 2, "loss curve: appears while fine-tuning")
            painter.end()
            return
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0

        def point(step, value):
            return QPointF(m + (w - 2 * m) * step / self.total, h - m - (h - 2 * m) * (value - lo) / span)

        for series, colour in ((self.train, QColor(255, 150, 50)), (self.val, QColor(80, 160, 255))):
            painter.setPen(QPen(colour, 2))
            points = [point(s, v) for s, v in series if np.isfinite(v)]
            for a, b in zip(points, points[1:]):
                painter.drawLine(a, b)
            for p in points[-1:]:
                painter.drawEllipse(p, 2, 2)
        painter.setPen(QPen(QColor(200, 200, 200), 1))
        painter.drawText(w - m - 110, m + 14, "train")
        painter.drawText(w - m - 60, m + 14, "validation")
        painter.fillRect(w - m - 122, m + 7, 8, 3, QColor(255, 150, 50))
        painter.fillRect(w - m - 72, m + 7, 8, 3, QColor(80, 160, 255))
        painter.drawText(m + 4, m + 14, f"loss {hi:.3g}")
        painter.drawText(m + 4, h - m - 4, f"{lo:.3g}")
        painter.end()


def _notify(kind: str, message: str) -> None:
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[kind](message)


def explain(error: BaseException, what: str) -> str:
    """An error in plain words: the api's own message for errors the user can fix, a short
    sentence otherwise (the traceback goes to the log, not to the screen)."""
    from ..errors import ZooError

    if isinstance(error, ZooError):
        return f"{what}: {error}"
    if isinstance(error, MemoryError):
        return f"{what}: not enough memory. Try a smaller image or crop, or close other programs"
    log.error("%s failed", what, exc_info=(type(error), error, error.__traceback__))
    return f"{what} failed ({type(error).__name__}: {error}). The details are in the log"


class ZooWidget(QWidget):
    """Model zoo: Find (search, card, pull) | Run (on a layer) | Fine-tune (on corrections)."""

    def __init__(self, napari_viewer, registry: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.model = None                  # the loaded zoo Model
        self.rows: list[dict] = []
        self.worker = None
        self.cancelled = threading.Event()
        self.workdir = Path(tempfile.mkdtemp(prefix="zoo-napari-"))
        self.destroyed.connect(lambda *_: shutil.rmtree(self.workdir, ignore_errors=True))
        self.relay = _Relay()
        self.last_run: _jobs.RunResult | None = None
        self.last_finetune: _jobs.FinetuneResult | None = None
        self.timings: dict[str, float] = {}

        self.tabs = QTabWidget()
        self.tabs.addTab(self._find_tab(registry), "Find")
        self.tabs.addTab(self._run_tab(), "Run")
        self.tabs.addTab(self._finetune_tab(), "Fine-tune")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(340)

        self.relay.progress.connect(self._on_progress)
        self.relay.step.connect(self._on_step)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._select_active)
        self._refresh_layers()
        self.search()

    # ------------------------------------------------------------------ Find
    def _find_tab(self, registry) -> QWidget:
        tab = QWidget()
        form = QFormLayout()
        self.registry_edit = QComboBox()
        self.registry_edit.setEditable(True)
        self.registry_edit.addItem(registry or "local")
        self.registry_edit.setToolTip("local (this computer's registry), a folder, https://HOST/ROOT or hf://ORG")
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("e.g. nuclei, denoise, H&E")
        self.search_edit.returnPressed.connect(self.search)
        self.task_combo = QComboBox()
        for label, _ in TASKS:
            self.task_combo.addItem(label)
        self.axes_combo = QComboBox()
        for label, _ in AXES:
            self.axes_combo.addItem(label)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        form.addRow("Registry", self.registry_edit)
        form.addRow("Text", self.search_edit)
        row = QHBoxLayout()
        row.addWidget(self.task_combo)
        row.addWidget(self.axes_combo)
        row.addWidget(self.search_button)
        form.addRow(row)
        self.results = QListWidget()
        self.results.setMaximumHeight(130)
        self.results.currentRowChanged.connect(self.show_card)
        self.cover = QLabel()
        self.cover.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.card = QLabel("Search, then pick a model to see its card.")
        self.card.setWordWrap(True)
        self.card.setTextFormat(Qt.TextFormat.RichText)
        self.card.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.pull_button = QPushButton("Pull and load")
        self.pull_button.setEnabled(False)
        self.pull_button.clicked.connect(self.pull)
        self.pull_progress = QProgressBar()
        self.pull_progress.setRange(0, 1)
        self.pull_progress.setValue(0)
        layout = QVBoxLayout(tab)
        layout.addLayout(form)
        layout.addWidget(self.results)
        layout.addWidget(self.cover)
        layout.addWidget(self.card, 1)
        layout.addWidget(self.pull_button)
        layout.addWidget(self.pull_progress)
        return tab

    def _registry(self):
        text = self.registry_edit.currentText().strip()
        return None if text in ("", "local") else text

    def search(self) -> None:
        from .. import api

        try:
            self.rows = api.search(self.search_edit.text().strip() or None, task=TASKS[self.task_combo.currentIndex()][1],
                                   axes=AXES[self.axes_combo.currentIndex()][1], registry=self._registry())
        except Exception as e:   # noqa: BLE001 - shown to the user
            self.rows = []
            _notify("error", explain(e, "Search"))
        self.results.clear()
        for row in self.rows:
            item = QListWidgetItem(f"{row['name']}  {row.get('latest') or row.get('version', '')}  —  {row.get('task', '')}")
            item.setToolTip(row.get("description") or "")
            self.results.addItem(item)
        if not self.rows:
            self.card.setText("No model matches. Try fewer words, or another task.")
            self.cover.clear()
        self.pull_button.setEnabled(bool(self.rows))
        if self.rows:
            self.results.setCurrentRow(0)

    def selected_ref(self) -> str | None:
        i = self.results.currentRow()
        if not 0 <= i < len(self.rows):
            return None
        row = self.rows[i]
        return f"{row['name']}@{row.get('latest') or row.get('version')}"

    def show_card(self, *_) -> None:
        ref = self.selected_ref()
        if ref is None:
            return
        from .. import api

        try:
            reg = api.registry(self._registry())
            spec = reg.spec(ref)
        except Exception as e:   # noqa: BLE001 - shown to the user
            self.card.setText(html.escape(explain(e, f"The card of {ref}")))
            return
        self.card.setText(card_html(spec, self._lineage(ref)))
        cover = None
        if hasattr(reg, "package_dir"):
            cover = reg.package_dir(spec.name, spec.version) / "cover.png"
        self._show_cover(cover)

    def _lineage(self, ref: str) -> list:
        from .. import api

        try:
            return api.lineage(ref, self._registry())
        except Exception:   # noqa: BLE001 - the card stands without it
            return []

    def _show_cover(self, path) -> None:
        if path is not None and Path(path).is_file():
            pixmap = QPixmap(str(path))
            self.cover.setPixmap(pixmap.scaledToWidth(min(320, max(160, self.width() - 30)),
                                                      Qt.TransformationMode.SmoothTransformation))
        else:
            self.cover.clear()

    def pull(self) -> None:
        ref = self.selected_ref()
        if ref is None:
            _notify("warning", "Pick a model in the list first (search, then click a row)")
            return
        registry = self._registry()

        def job():
            from .. import api

            pulled = api.pull(ref, registry)
            return pulled, api.load(str(pulled.path))

        self.pull_progress.setRange(0, 0)          # busy: the registry does not say how far it is
        self._start(job, self._pulled, "Pulling " + ref, buttons=[self.pull_button], bar=self.pull_progress)

    def _pulled(self, result) -> None:
        pulled, model = result
        self.pull_progress.setRange(0, 1)
        self.pull_progress.setValue(1)
        self.set_model(model)
        self._show_cover(Path(pulled.path) / "cover.png")
        moved = "" if pulled.bytes_moved is None else f", {pulled.bytes_moved / 1e6:.1f} MB"
        _notify("info", f"{model.spec.ref} is ready ({pulled.how}{moved}, sha256 checked)")
        self.tabs.setCurrentIndex(1)

    def set_model(self, model) -> None:
        """Use ``model`` (a loaded zoo Model) in the Run and Fine-tune tabs."""
        self.model = model
        spec = model.spec
        inp = spec.inputs[0]
        self.model_label.setText(f"<b>{html.escape(spec.ref)}</b> — {html.escape(spec.task)}, "
                                 f"input {html.escape(inp.axes)}, channels {html.escape(', '.join(inp.channels or ['1']))}")
        self.ft_model_label.setText(self.model_label.text())
        self._refresh_layers()

    # ------------------------------------------------------------------ Run
    def _run_tab(self) -> QWidget:
        tab = QWidget()
        self.model_label = QLabel("No model yet: find one and pull it (Find tab).")
        self.model_label.setWordWrap(True)
        self.layer_combo = QComboBox()
        self.layer_combo.currentIndexChanged.connect(self._layer_changed)
        self.scale_check = QCheckBox("Use the layer's scale as the pixel size")
        self.scale_check.setChecked(True)
        self.pixel_label = QLabel("")
        self.pixel_label.setWordWrap(True)
        self.channels_box = QGroupBox("Model channels from")
        self.channels_form = QFormLayout(self.channels_box)
        self.channel_combos: dict[str, QComboBox] = {}
        self.raw_check = QCheckBox("Also add the raw outputs (probabilities, distances, flows)")
        self.uncertainty_check = QCheckBox("Uncertainty layer (8 flips and rotations)")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.run_cancel = QPushButton("Cancel")
        self.run_cancel.setEnabled(False)
        self.run_cancel.clicked.connect(self.cancel)
        self.run_progress = QProgressBar()
        self.run_progress.setValue(0)
        self.verdict_label = QLabel("")
        self.verdict_label.setWordWrap(True)
        self.run_status = QLabel("")
        self.run_status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Image layer", self.layer_combo)
        layout = QVBoxLayout(tab)
        layout.addWidget(self.model_label)
        layout.addLayout(form)
        layout.addWidget(self.scale_check)
        layout.addWidget(self.pixel_label)
        layout.addWidget(self.channels_box)
        layout.addWidget(self.raw_check)
        layout.addWidget(self.uncertainty_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.run_cancel)
        layout.addLayout(buttons)
        layout.addWidget(self.run_progress)
        layout.addWidget(QLabel("<b>Shift check</b>"))
        layout.addWidget(self.verdict_label)
        layout.addWidget(self.run_status)
        layout.addStretch(1)
        self.channels_box.setVisible(False)
        return tab

    def _image_layers(self):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _labels_layers(self):
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _refresh_layers(self, *_) -> None:
        images = [layer.name for layer in self._image_layers()]
        for combo in (self.layer_combo, self.ft_image_combo):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(images)
            if current in images:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        current = self.ft_target_combo.currentText()
        self.ft_target_combo.clear()
        targets = self._target_choices()
        self.ft_target_combo.addItems(targets)
        if current in targets:
            self.ft_target_combo.setCurrentText(current)
        elif len(targets) > 1:
            self.ft_target_combo.setCurrentIndex(len(targets) - 1)
        current = self.ft_region_combo.currentText()
        self.ft_region_combo.clear()
        from napari.layers import Shapes

        regions = ["whole image"] + [layer.name for layer in self.viewer.layers if isinstance(layer, Shapes)]
        self.ft_region_combo.addItems(regions)
        if current in regions:
            self.ft_region_combo.setCurrentText(current)
        self._layer_changed()

    def _select_active(self, event=None) -> None:
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            self.layer_combo.setCurrentText(active.name)

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _layer_changed(self, *_) -> None:
        layer = self._layer(self.layer_combo.currentText())
        if layer is None:
            self.pixel_label.setText("No image layer: open one (File > Open, or File > Open Sample > bioimage-zoo).")
            return
        spatial = len(self.model.spec.inputs[0].spatial_axes) if self.model is not None else 2
        image = _jobs.layer_image(layer, spatial)
        if image.pixel_size:
            self.pixel_label.setText(f"Pixel size {image.pixel_size_said}.")
        else:
            self.pixel_label.setText("Pixel size unknown (the layer's scale is 1): the image is used at its own scale.")
        if image.lazy:
            self.pixel_label.setText(self.pixel_label.text() + " A lazy (dask/zarr) or very large layer: it is "
                                     "predicted block by block, never loaded whole.")
        self._channel_choices(layer)

    def _channel_choices(self, layer) -> None:
        """One choice per model channel (several-channel models): a channel of the layer, or another
        layer, preset by name (a layer called like the channel), else by position."""
        while self.channels_form.rowCount():
            self.channels_form.removeRow(0)
        self.channel_combos = {}
        if self.model is None:
            self.channels_box.setVisible(False)
            return
        names = self.model.spec.inputs[0].channels or ["c0"]
        if len(names) < 2:
            self.channels_box.setVisible(False)
            return
        n = _layer_channels(layer)
        others = [other.name for other in self._image_layers() if other is not layer]
        options = [f"channel {k} of this layer" for k in range(n)] + [f"layer: {name}" for name in others]
        for k, name in enumerate(names):
            combo = QComboBox()
            combo.addItems(options)
            by_name = [i for i, other in enumerate(others) if other.strip().lower() == name.lower()]
            if by_name:
                combo.setCurrentIndex(n + by_name[0])
            elif k < n:
                combo.setCurrentIndex(k)
            self.channels_form.addRow(name, combo)
            self.channel_combos[name] = combo
        self.channels_box.setVisible(True)

    def _input(self, layer):
        """(LayerImage, channels mapping or None) for the Run tab's choices."""
        spatial = len(self.model.spec.inputs[0].spatial_axes)
        image = _jobs.layer_image(layer, spatial)
        if not self.channel_combos:
            return image, None
        picks = {name: combo.currentText() for name, combo in self.channel_combos.items()}
        if all(text.startswith("channel ") for text in picks.values()):
            mapping = {name: int(text.split()[1]) for name, text in picks.items()}
            if list(mapping.values()) == list(range(len(mapping))) and _layer_channels(layer) == len(mapping):
                return image, None                  # the layer's own channels, in the model's order
            if image.axes is None:
                image.axes = "cyx"
            return image, mapping
        planes = []
        for name, text in picks.items():
            if text.startswith("layer: "):
                other = self.viewer.layers[text[len("layer: "):]]
                planes.append(np.asarray(other.data))
            else:
                k = int(text.split()[1])
                data = np.asarray(layer.data)
                planes.append(data[..., k] if getattr(layer, "rgb", False) else data[k])
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            from ..errors import InputError

            raise InputError(f"the channels chosen have different sizes ({', '.join(map(str, shapes))}): pick layers "
                             "of one size")
        image.data, image.axes = np.stack(planes), "c" + "yx"
        return image, None

    def run(self) -> None:
        if self.model is None:
            _notify("warning", "No model yet: find one in the Find tab and press 'Pull and load'")
            return
        layer = self._layer(self.layer_combo.currentText())
        if layer is None:
            _notify("warning", "No image layer to run on: open an image first (File > Open Sample > bioimage-zoo)")
            return
        try:
            image, channels = self._input(layer)
        except Exception as e:   # noqa: BLE001 - shown to the user
            _notify("error", explain(e, "Run"))
            return
        model, raw, uncertainty = self.model, self.raw_check.isChecked(), self.uncertainty_check.isChecked()
        use_scale = self.scale_check.isChecked()
        relay, cancelled, workdir = self.relay, self.cancelled, self.workdir

        def job():
            result = _jobs.run_model(model, image, uncertainty=uncertainty, channels=channels, use_pixel_size=use_scale,
                                     progress=relay.progress.emit, cancel=cancelled.is_set, workdir=workdir)
            if raw and model.makes_instances:
                extra = _jobs.run_model(model, image, raw=True, channels=channels, use_pixel_size=use_scale,
                                        shift=False, progress=relay.progress.emit, cancel=cancelled.is_set,
                                        workdir=workdir)
                result.outputs.append(extra.main)
            return result

        self.run_progress.setRange(0, 100)
        self.run_progress.setValue(0)
        self.run_status.setText(f"Running {model.spec.ref} on {layer.name} …")
        self._start(job, self._ran, f"Running {model.spec.name} on {layer.name}",
                    buttons=[self.run_button, self.ft_button], cancel=self.run_cancel, bar=self.run_progress)

    def _ran(self, result: _jobs.RunResult) -> None:
        self.last_run = result
        self.run_progress.setRange(0, 100)
        self.run_progress.setValue(100)
        for output in result.outputs:
            self.add_output(output)
        self.show_verdict(result)
        said = "; ".join(result.notes)
        self.run_status.setText(f"{result.model}: done in {result.seconds:.1f} s"
                                + (" (streamed block by block)" if result.streamed else "") + (f". {said}" if said else ""))
        if result.shift is not None and result.shift.shift_warning:
            _notify("warning", f"{result.model}: {result.verdict}. Check the result, or fine-tune on a few corrected "
                               "images (Fine-tune tab)")
        self._refresh_layers()

    def add_output(self, output: _jobs.Output):
        kwargs = dict(output.kwargs)
        if output.name in self.viewer.layers:
            self.viewer.layers.remove(output.name)
        if output.kind == "labels":
            layer = self.viewer.add_labels(output.data, name=output.name, **kwargs)
        else:
            data = output.data
            if np.ndim(data) >= 3 and len(kwargs.get("scale", [])) == np.ndim(data):
                pass
            layer = self.viewer.add_image(data, name=output.name, **kwargs)
        return layer

    def show_verdict(self, result: _jobs.RunResult) -> None:
        warn = result.shift is not None and result.shift.shift_warning
        colour = "#ff9a3c" if warn else ("#7bd88f" if result.shift is not None else "#aaaaaa")
        self.verdict_label.setText(f"<span style='color:{colour}'>{html.escape(result.verdict)}</span>")

    # ------------------------------------------------------------------ Fine-tune
    def _finetune_tab(self) -> QWidget:
        tab = QWidget()
        self.ft_model_label = QLabel("No model yet: find one and pull it (Find tab).")
        self.ft_model_label.setWordWrap(True)
        self.ft_image_combo = QComboBox()
        self.ft_target_combo = QComboBox()
        self.ft_target_combo.setToolTip("instance models: the Labels layer you corrected; CARE: the clean image; "
                                        "Noise2Void: none")
        self.ft_region_combo = QComboBox()
        self.ft_region_combo.setToolTip("the part you corrected: the whole image, or the rectangles of a Shapes layer")
        self.ft_steps = QSpinBox()
        self.ft_steps.setRange(1, 100000)
        self.ft_steps.setValue(100)
        self.ft_button = QPushButton("Fine-tune on my corrections")
        self.finetune_options: dict = {}    # patch, batch_size, val_every: quick runs (tests)
        self.ft_button.clicked.connect(lambda *_: self.finetune(**self.finetune_options))
        self.ft_cancel = QPushButton("Cancel")
        self.ft_cancel.setEnabled(False)
        self.ft_cancel.clicked.connect(self.cancel)
        self.ft_progress = QProgressBar()
        self.ft_progress.setValue(0)
        self.loss_curve = LossCurve()
        self.ft_status = QLabel("Correct the predicted labels (paint, erase, fill), or pick the clean image of a noisy/"
                                "clean pair, then press the button. The child lands in the local registry with its "
                                "lineage and runs on the image at once: before | after side by side.")
        self.ft_status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Image", self.ft_image_combo)
        form.addRow("Corrected", self.ft_target_combo)
        form.addRow("Region", self.ft_region_combo)
        form.addRow("Steps", self.ft_steps)
        layout = QVBoxLayout(tab)
        layout.addWidget(self.ft_model_label)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.ft_button)
        buttons.addWidget(self.ft_cancel)
        layout.addLayout(buttons)
        layout.addWidget(self.ft_progress)
        layout.addWidget(self.loss_curve)
        layout.addWidget(self.ft_status)
        layout.addStretch(1)
        return tab

    def _target_choices(self) -> list[str]:
        if self.model is not None and self.model.makes_instances:
            return [layer.name for layer in self._labels_layers()]
        return ["(none: self-supervised)"] + [layer.name for layer in self._image_layers()]

    def _region(self, image_layer):
        """(y0, y1, x0, x1) in the image's pixels: the bounding box of a Shapes layer's shapes."""
        name = self.ft_region_combo.currentText()
        if name in ("", "whole image") or name not in self.viewer.layers:
            return None
        shapes = self.viewer.layers[name]
        if not len(shapes.data):
            from ..errors import InputError

            raise InputError(f"the Shapes layer '{name}' holds no shape: draw a rectangle over the part you corrected")
        corners = np.concatenate([np.asarray(s)[:, -2:] for s in shapes.data])
        world = corners * np.asarray(shapes.scale[-2:]) + np.asarray(shapes.translate[-2:])
        pixels = (world - np.asarray(image_layer.translate[-2:])) / np.asarray(image_layer.scale[-2:])
        (y0, x0), (y1, x1) = np.floor(pixels.min(0) + 0.5).astype(int), np.floor(pixels.max(0) + 0.5).astype(int) + 1
        return int(y0), int(y1), int(x0), int(x1)

    def finetune(self, *, patch: int | None = None, batch_size: int | None = None, val_every: int | None = None) -> None:
        """Fine-tune the current model on the image and its correction, then run the child on the image
        (``patch``, ``batch_size``, ``val_every``: for quick tests; the parent's by default)."""
        if self.model is None:
            _notify("warning", "No model to fine-tune: find one in the Find tab and press 'Pull and load'")
            return
        image_layer = self._layer(self.ft_image_combo.currentText())
        target_name = self.ft_target_combo.currentText()
        if image_layer is None:
            _notify("warning", "No image layer: open the image you corrected")
            return
        instances = self.model.makes_instances
        if instances and target_name not in self.viewer.layers:
            _notify("warning", "No corrected labels: run the model first (Run tab), correct its Labels layer, then "
                               "pick it under 'Corrected'")
            return
        try:
            region = self._region(image_layer)
        except Exception as e:   # noqa: BLE001 - shown to the user
            _notify("error", explain(e, "Fine-tune"))
            return
        target_layer = self._layer(target_name)
        target = None if target_layer is None else np.asarray(target_layer.data)
        if target is not None and target_layer is image_layer:
            _notify("warning", "The corrected layer is the image itself: pick the clean image (or the labels)")
            return
        parent, model, steps = self.model.spec.ref, self.model, self.ft_steps.value()
        rgb = bool(getattr(image_layer, "rgb", False))
        image = np.asarray(image_layer.data)
        spatial = len(model.spec.inputs[0].spatial_axes)
        layer_input = _jobs.layer_image(image_layer, spatial)
        before = None
        if target_layer is not None:
            meta = target_layer.metadata.get("zoo", {}) if hasattr(target_layer, "metadata") else {}
            before = meta.get("predicted") if meta.get("model") == parent else None
        relay, cancelled, workdir = self.relay, self.cancelled, self.workdir / f"finetune-{len(list(self.workdir.iterdir()))}"
        use_scale = self.scale_check.isChecked()

        def job():
            from .. import api

            done = _jobs.finetune_on_corrections(parent, image, target, workdir, rgb=rgb, region=region, steps=steps,
                                                 patch=patch, batch_size=batch_size, val_every=val_every,
                                                 on_step=relay.step.emit, cancel=cancelled.is_set)
            child = api.load(done.child)
            after = _jobs.run_model(child, layer_input, use_pixel_size=use_scale, cancel=cancelled.is_set)
            first = None
            if before is None:
                first = _jobs.run_model(model, layer_input, use_pixel_size=use_scale, shift=False,
                                        cancel=cancelled.is_set)
            return done, child, after, first

        self.loss_curve.clear(steps)
        self.ft_progress.setRange(0, steps)
        self.ft_progress.setValue(0)
        self.ft_status.setText(f"Fine-tuning {parent} for {steps} steps …")
        self._before = before
        self._ft_layer = image_layer
        self._start(job, self._finetuned, f"Fine-tuning {model.spec.name}",
                    buttons=[self.ft_button, self.run_button], cancel=self.ft_cancel, bar=self.ft_progress)

    def _finetuned(self, result) -> None:
        done, child, after, first = result
        self.last_finetune = done
        self.ft_progress.setValue(self.ft_progress.maximum())
        image_layer = self._ft_layer
        before = first.main.data if first is not None else self._before
        self.show_side_by_side(image_layer, before, after, done)
        self.set_model(child)
        self.show_verdict(after)
        self.ft_status.setText(f"{done.child} (parent {done.parent}) is in the local registry: {done.steps} steps "
                               f"in {done.seconds:.0f} s on {'; '.join(done.notes)}. Left: before ({done.parent}); "
                               f"right: after ({done.child}). The Run tab now uses the child.")
        _notify("info", f"{done.child} is ready, fine-tuned from {done.parent}")

    def show_side_by_side(self, image_layer, before, after: _jobs.RunResult, done) -> None:
        """The parent's result on the image (left) and the child's on a copy placed to its right."""
        rgb = bool(getattr(image_layer, "rgb", False))
        data = np.asarray(image_layer.data)
        width = (data.shape[-2] if rgb else data.shape[-1]) * image_layer.scale[-1]
        shift = np.zeros(len(image_layer.translate))
        shift[-1] = width * 1.05
        copy_name = f"{image_layer.name} (after)"
        if copy_name in self.viewer.layers:
            self.viewer.layers.remove(copy_name)
        kwargs = {"rgb": rgb} if rgb else {"colormap": image_layer.colormap.name,
                                            "contrast_limits": image_layer.contrast_limits}
        self.viewer.add_image(data, name=copy_name, scale=image_layer.scale,
                              translate=np.asarray(image_layer.translate) + shift, **kwargs)
        main = after.main
        main.name = f"{image_layer.name} | {done.child} (after)"
        main.kwargs["translate"] = list(np.asarray(main.kwargs["translate"]) + shift[-len(main.kwargs["translate"]):])
        after_layer = self.add_output(main)
        if before is not None:
            name = f"{image_layer.name} | {done.parent} (before)"
            kind = "labels" if np.issubdtype(np.asarray(before).dtype, np.integer) else "image"
            before_layer = self.add_output(_jobs.Output(before, kind, name, {"scale": list(image_layer.scale[-2:]),
                                                                              "translate": list(image_layer.translate[-2:])}))
            for layer in (before_layer, after_layer):
                if kind == "labels":
                    layer.contour = 2
        for layer in self._labels_layers():
            if not layer.name.endswith(("(before)", "(after)")):
                layer.visible = False
        self.viewer.text_overlay.visible = True
        self.viewer.text_overlay.position = "top_left"
        self.viewer.text_overlay.font_size = 9
        self.viewer.text_overlay.text = f"left: before ({done.parent})   right: after ({done.child})"
        self.viewer.reset_view()

    def _on_step(self, step: int, total: int, losses) -> None:
        self.ft_progress.setRange(0, max(1, total))
        self.ft_progress.setValue(step)
        self.loss_curve.add(step, total, losses)
        loss = losses.get("train_loss")
        if loss is not None:
            self.ft_status.setText(f"step {step} of {total}: training loss {loss:.4f}"
                                   + (f", validation loss {losses['val_loss']:.4f}" if "val_loss" in losses else ""))

    # ------------------------------------------------------------------ workers
    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.run_progress.setRange(0, 100)
            self.run_progress.setValue(int(100 * done / total))

    def cancel(self) -> None:
        """Stop the running job at its next tile or training step; nothing it made is kept."""
        self.cancelled.set()
        self.run_status.setText("Cancelling …")
        self.ft_status.setText("Cancelling …")

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def _start(self, job, done, what: str, buttons=(), cancel=None, bar=None) -> None:
        # superqt's worker (napari's threads are built on it), not napari's: napari's relays every
        # error to its notifications with the traceback attached; here errors are said in words.
        from superqt.utils import create_worker

        if self.worker is not None:
            _notify("warning", "The zoo is busy with another job: wait for it, or cancel it")
            return
        self.cancelled.clear()
        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        for button in buttons:
            button.setEnabled(False)
        if cancel is not None:
            cancel.setEnabled(True)

        def finished():
            self.worker = None
            for button in buttons:
                button.setEnabled(True)
            if cancel is not None:
                cancel.setEnabled(False)

        def failed(error):
            from ._jobs import Cancelled

            if bar is not None:
                bar.setRange(0, 100)
                bar.setValue(0)
            if isinstance(error, Cancelled):
                _notify("info", f"{what}: cancelled, nothing was kept")
                self.run_status.setText("Cancelled.")
                self.ft_status.setText("Cancelled.")
            else:
                message = explain(error, what)
                self.run_status.setText(html.escape(message))
                self.ft_status.setText(html.escape(message))
                _notify("error", message)

        def returned(result):
            try:
                done(result)
            except Exception as e:   # noqa: BLE001 - shown to the user
                _notify("error", explain(e, what))

        worker.returned.connect(returned)
        worker.errored.connect(failed)
        worker.finished.connect(finished)
        self.worker = worker
        worker.start()


def _layer_channels(layer) -> int:
    """How many channels a layer's data has (RGB: 3 or 4; a 3D layer for a 2D model: its first axis)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if getattr(layer, "rgb", False):
        return int(data.shape[-1])
    return int(data.shape[0]) if data.ndim == 3 and data.shape[0] <= 8 else 1


KEY_METRICS = ("ap50", "psnr", "ssim", "accuracy", "f1")


def held_out_metrics(metrics: dict, limit: int = 6) -> list[tuple[str, float]]:
    """The headline numbers of a package's metrics (AP@0.5, PSNR, SSIM, accuracy, F1; not the
    baseline's or the parent's), named by their path: ``fluo ap50``, ``heldout psnr output``."""
    found: list[tuple[str, float]] = []

    def walk(value, path):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, path + [str(key)])
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and path and path[-1] != "parent":
            named = [p for p in (path[:-1] if path[-1] == "child" else path)     # parent_vs_child: the child's
                     if p not in ("parent_vs_child", "segmentation")]
            name = " ".join(named).replace("_", " ")
            if named and any(k in named[-1] for k in KEY_METRICS) and \
                    not any(w in name for w in ("baseline", "parent", "input", "noisy", "seconds")):
                found.append((name, float(value)))

    walk(metrics, [])
    return found[:limit]


def card_html(spec, lineage: list) -> str:
    """A package's card: what it does, licence, held-out metrics, lineage."""
    e = html.escape
    lines = [f"<b>{e(spec.ref)}</b> — {e(spec.task)}", e((spec.description or '').strip())]
    authors = ", ".join(a.get("name", "") for a in (spec.authors or []))
    lines.append(f"<b>Licence</b> {e(spec.license or '?')}" + (f"; <b>authors</b> {e(authors)}" if authors else ""))
    inp = spec.inputs[0]
    lines.append(f"<b>Input</b> {e(inp.axes)}, channels {e(', '.join(inp.channels or ['1']))}")
    shown = held_out_metrics((spec.training.metrics if spec.training else None) or {})
    if shown:
        lines.append("<b>Held-out metrics</b> " + ", ".join(f"{e(k)} {v:.3g}" for k, v in shown))
    data = (spec.training.data or {}).get("description") if spec.training else None
    if data:
        lines.append(f"<b>Trained on</b> {e(data)}")
    if lineage and len(lineage) > 1:
        chain = " ← ".join(f"{e(link.ref)}" + ("" if link.status in ("package", "verified") else f" ({e(link.status)})")
                           for link in lineage)
        lines.append(f"<b>Lineage</b> {chain}")
    elif spec.training and spec.training.parent:
        lines.append(f"<b>Lineage</b> fine-tuned from {e(spec.training.parent.get('ref', '?'))}")
    else:
        lines.append("<b>Lineage</b> trained from scratch")
    return "<br>".join(lines)
