"""The napari plugin in a real viewer (Xvfb + Mesa): find, pull, run, correct, fine-tune, by clicks.

Each test drives the docked widget as a person would (typing, clicking buttons, painting labels)
and waits for the background workers; nothing is mocked. The fine-tune runs a few steps on small
patches so that the file stays near a minute on 2 cores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
from qtpy.QtCore import Qt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "bioimage-zoo"


def _records():
    from napari.utils.notifications import notification_manager

    return notification_manager.records


def _messages(since: int = 0) -> list[tuple[str, str]]:
    return [(str(n.severity), str(n.message)) for n in _records()[since:]]


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Model zoo")
    return widget


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def _search_and_pull(qtbot, widget, text: str, name: str):
    widget.tabs.setCurrentIndex(0)
    widget.search_edit.clear()
    qtbot.keyClicks(widget.search_edit, text)
    qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
    names = [row["name"] for row in widget.rows]
    assert name in names, names
    widget.results.setCurrentRow(names.index(name))
    qtbot.mouseClick(widget.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.model is not None and widget.model.spec.name == name, timeout=60_000)
    _wait_idle(qtbot, widget)


def test_manifest_is_valid_and_the_samples_open(make_napari_viewer):
    import npe2

    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    assert manifest.name == PLUGIN
    assert {w.display_name for w in manifest.contributions.widgets} == {"Model zoo"}
    keys = {s.key for s in manifest.contributions.sample_data}
    assert {"nuclei-he", "nuclei-fluorescence", "actin-low-snr"} <= keys
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei-he-truth")
    assert viewer.layers["nuclei H&E (DSB2018)"].rgb
    assert viewer.layers["nuclei H&E ground truth"].data.max() == 117


def test_find_pull_run_on_a_layer_with_its_scale(make_napari_viewer, qtbot, zoo_home):
    from zoo.segmentation.metrics import counts, scores

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "nuclei-he-truth")
    image = viewer.layers["nuclei H&E (DSB2018)"]
    image.scale, image.translate = (0.5, 0.5), (10.0, 20.0)
    widget = _dock(viewer)
    assert widget.rows, "the widget lists the local registry when it opens"

    # Find: text, task and axes filters, the card, the pull.
    widget.task_combo.setCurrentIndex(1)            # segmentation
    widget.axes_combo.setCurrentIndex(1)            # 2D
    _search_and_pull(qtbot, widget, "nuclei H&E", "stardist-dsb-he-2d")
    assert all(r["task"].startswith("segmentation") and r["axes"] == "bcyx" for r in widget.rows)
    card = widget.card.text()
    assert "MIT" in card and "Lineage" in card and "stardist-dsb-fluo-2d" in card and "Held-out metrics" in card
    assert "ap50 0.388" in card                      # the child's AP@0.5 on its validation images
    assert widget.cover.pixmap() is not None and not widget.cover.pixmap().isNull()
    assert widget.pull_progress.value() == widget.pull_progress.maximum()

    # Run: the labels come back with the input's scale and translate, and the shift verdict.
    assert widget.tabs.currentIndex() == 1
    widget.layer_combo.setCurrentText(image.name)
    assert "0.5 µm/px" in widget.pixel_label.text()
    widget.uncertainty_check.setChecked(True)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    labels = viewer.layers[f"{image.name} | stardist-dsb-he-2d"]
    assert isinstance(labels, napari.layers.Labels)
    assert tuple(labels.scale) == (0.5, 0.5) and tuple(labels.translate) == (10.0, 20.0)
    assert labels.data.shape == image.data.shape[:2]
    truth = viewer.layers["nuclei H&E ground truth"].data
    ap = scores(counts(truth, np.asarray(labels.data), [0.5]))[0]["ap"]
    assert ap > 0.3, ap                              # the H&E model on an H&E validation image (0.38 measured)
    uncertainty = viewer.layers[f"{image.name} | stardist-dsb-he-2d uncertainty"]
    assert 0 <= uncertainty.data.min() and uncertainty.data.max() <= 1 and uncertainty.data.max() > 0
    assert "shift score" in widget.verdict_label.text()
    assert widget.run_progress.value() == 100

    shot = viewer.screenshot(canvas_only=False)      # the window with the widget docked
    assert shot.shape[0] > 400 and shot.shape[1] > 600 and shot[..., :3].std() > 10


def test_user_errors_are_plain_notifications(make_napari_viewer, qtbot, zoo_home):
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    start = len(_records())
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)              # no model yet
    viewer.open_sample(PLUGIN, "nuclei-he")
    _search_and_pull(qtbot, widget, "fluorescence", "stardist-dsb-fluo-2d")     # a grey model ...
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)              # ... on an RGB image
    _wait_idle(qtbot, widget)
    import tifffile

    actin = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")[:512, :512]
    viewer.add_image(actin, name="actin")                                       # ... on noisy actin filaments
    widget.layer_combo.setCurrentText("actin")
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert "unlike the training data" in widget.verdict_label.text()
    widget.registry_edit.setCurrentText("http://127.0.0.1:9/zoo")
    qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)           # a registry out of reach (no network)
    said = _messages(start)
    text = " | ".join(m for _, m in said)
    assert any("No model yet" in m for _, m in said), said
    assert any(s == "error" and "single-channel" in m and "stardist-dsb-he-2d" in m for s, m in said), said
    assert any(s == "error" and "cannot reach the server" in m for s, m in said), said
    assert any(s == "warning" and "unlike the training data" in m and "noisier" in m for s, m in said), said
    assert "Traceback" not in text and 'File "' not in text


def test_a_lazy_layer_is_streamed_and_a_run_can_be_cancelled(make_napari_viewer, qtbot, zoo_home):
    da = pytest.importorskip("dask.array")
    import tifffile

    noisy = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")
    lazy = da.from_array(np.tile(noisy, (1, 2))[:512], chunks=(256, 256))   # 512 x 1024, never computed whole
    viewer = make_napari_viewer()
    layer = viewer.add_image(lazy, name="actin (dask)")
    widget = _dock(viewer)
    _search_and_pull(qtbot, widget, "noise2void widefield", "n2v-w2s")
    widget.layer_combo.setCurrentText(layer.name)
    assert "block by block" in widget.pixel_label.text()
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget, 120_000)
    out = viewer.layers[f"{layer.name} | n2v-w2s"]
    assert isinstance(out.data, np.memmap) and out.data.shape == lazy.shape   # read from its file, not held
    assert widget.last_run.streamed
    assert np.isfinite(np.asarray(out.data[::64, ::64])).all()

    start = len(_records())
    widget.relay.progress.connect(lambda *_: widget.run_cancel.click())    # Cancel as the first tiles come back
    viewer.layers.remove(out)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget, 120_000)
    assert any("cancelled" in m for _, m in _messages(start)), _messages(start)
    assert f"{layer.name} | n2v-w2s" not in viewer.layers
    assert widget.run_button.isEnabled() and not widget.run_cancel.isEnabled()


def test_correct_then_finetune_publishes_a_child_and_shows_before_and_after(make_napari_viewer, qtbot, zoo_home):
    import zoo.api as api

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "nuclei-he-truth")
    image = viewer.layers["nuclei H&E (DSB2018)"]
    truth = viewer.layers["nuclei H&E ground truth"].data
    widget = _dock(viewer)
    _search_and_pull(qtbot, widget, "H&E", "stardist-dsb-he-2d")
    widget.layer_combo.setCurrentText(image.name)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    labels = viewer.layers[f"{image.name} | stardist-dsb-he-2d"]
    predicted = np.array(labels.data)

    # Correct, as a person does with the Labels tools: erase a wrong object, paint a missed one.
    wrong = int(predicted[:128, :128][predicted[:128, :128] > 0][0])
    y, x = np.argwhere(predicted == wrong)[0]
    labels.fill((y, x), 0)
    missed = [t for t in np.unique(truth[:128, :128]) if t and not predicted[truth == t].any()]
    target = missed[0] if missed else int(truth[:128, :128].max())
    new = int(labels.data.max()) + 1
    for yy, xx in np.argwhere(truth == target)[::3]:
        labels.paint((yy, xx), new, refresh=False)
    labels.refresh()
    assert not (labels.data == wrong).any() and (labels.data == new).any()
    shapes = viewer.add_shapes([[[0, 0], [0, 128], [128, 128], [128, 0]]], shape_type="rectangle", name="corrected")

    widget.tabs.setCurrentIndex(2)
    widget.ft_image_combo.setCurrentText(image.name)
    widget.ft_target_combo.setCurrentText(labels.name)
    widget.ft_region_combo.setCurrentText(shapes.name)
    widget.ft_steps.setValue(3)                     # a validation after step 2: on the curve at step 3
    widget.finetune_options = {"patch": 32, "batch_size": 2, "val_every": 2}
    qtbot.mouseClick(widget.ft_button, Qt.MouseButton.LeftButton)
    assert widget.busy and widget.ft_cancel.isEnabled()
    _wait_idle(qtbot, widget, 180_000)

    done = widget.last_finetune
    assert done is not None, _messages()
    assert done.child.startswith("stardist-dsb-he-2d-ft@") and done.parent == "stardist-dsb-he-2d@0.1.2"
    assert done.crops == 1 and [s for s, _ in done.losses] == [1, 2, 3]
    assert len(widget.loss_curve.train) == 3 and widget.loss_curve.val
    assert widget.ft_progress.value() == widget.ft_progress.maximum() == 3
    chain = [link.ref for link in api.lineage(done.child)]
    assert chain[:2] == [done.child, "stardist-dsb-he-2d@0.1.2"]
    assert widget.model.spec.ref == done.child                                  # the Run tab uses the child now
    before = viewer.layers[f"{image.name} | stardist-dsb-he-2d@0.1.2 (before)"]
    after = viewer.layers[f"{image.name} | {done.child} (after)"]
    copy = viewer.layers[f"{image.name} (after)"]
    np.testing.assert_array_equal(before.data, predicted)                      # the prediction before correcting
    assert after.data.shape == predicted.shape and after.data.max() > 0
    assert after.translate[1] == copy.translate[1] > image.data.shape[1]      # side by side, to the right
    assert "before" in viewer.text_overlay.text and viewer.text_overlay.visible
