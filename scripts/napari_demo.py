"""The napari plugin, walked through as a person would, timed, with screenshots for the docs.

From a cold start (before ``import napari``) to a segmented sample: File > Open Sample >
bioimage-zoo > Nuclei, H&E; Plugins > Model zoo; type "H&E"; click stardist-dsb-he-2d; Pull and
load; Run. Then the correction round: the left part of the labels is corrected (here: replaced
by the ground truth, as a careful person would paint it), a rectangle is drawn over it, and
"Fine-tune on my corrections" runs. Each step's clicks and seconds are printed; screenshots of
the window with the widget docked go to ``docs/napari/``.

    python scripts/napari_demo.py [--steps 60] [--out docs/napari]

Needs a display: an Xvfb is started when there is none (apt-get install xvfb ...; see README).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STARTED = time.perf_counter()


def ensure_display() -> None:
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        sys.exit("no display and no Xvfb: run on a desktop, or install xvfb (see README, napari plugin)")
    read, write = os.pipe()
    subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                     pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        os.environ["DISPLAY"] = ":" + f.readline().strip()
    os.environ["QT_QPA_PLATFORM"] = "xcb"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps")
    parser.add_argument("--out", default=str(REPO / "docs" / "napari"))
    parser.add_argument("--keep-registry", action="store_true", help="publish into the real local registry")
    args = parser.parse_args(argv)
    if not args.keep_registry:
        os.environ["ZOO_HOME"] = tempfile.mkdtemp(prefix="zoo-demo-")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_display()

    import numpy as np
    import tifffile

    import napari
    from qtpy.QtWidgets import QApplication

    steps, clicks = [], 0
    last = [STARTED]

    def step(what: str, n_clicks: int) -> None:
        nonlocal clicks
        clicks += n_clicks
        now = time.perf_counter()
        steps.append((what, n_clicks, now - last[0], now - STARTED))
        print(f"{now - STARTED:6.1f} s  (+{now - last[0]:5.1f} s, {n_clicks} click(s))  {what}", flush=True)
        last[0] = now

    def wait(predicate, timeout=600):
        end = time.time() + timeout
        while not predicate():
            QApplication.processEvents()
            time.sleep(0.02)
            if time.time() > end:
                raise TimeoutError("the widget did not finish in time")

    def shot(name: str) -> None:
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.02)
        path = out / name
        viewer.screenshot(str(path), canvas_only=False)
        print(f"         screenshot {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")

    viewer = napari.Viewer(title="napari + bioimage-zoo")
    viewer.window._qt_window.resize(1500, 920)
    QApplication.processEvents()
    step("napari open (python start, import, window)", 0)

    viewer.open_sample("bioimage-zoo", "nuclei-he")                     # File > Open Sample > bioimage-zoo > ...
    image = viewer.layers[-1]
    step("File > Open Sample > bioimage-zoo > Nuclei, H&E (DSB2018)", 4)

    _, widget = viewer.window.add_plugin_dock_widget("bioimage-zoo", "Model zoo")   # Plugins > Model zoo
    QApplication.processEvents()
    step("Plugins > Model zoo (the widget lists the local registry)", 2)

    widget.search_edit.setText("H&E")
    widget.search()                                                       # typing, then Enter
    names = [row["name"] for row in widget.rows]
    widget.results.setCurrentRow(names.index("stardist-dsb-he-2d"))
    step(f"type 'H&E' + Enter ({len(names)} models), click stardist-dsb-he-2d (its card)", 1)
    shot("find.png")

    widget.pull_button.click()
    wait(lambda: widget.model is not None and not widget.busy)
    step("Pull and load (sha256 checked)", 1)

    widget.run_button.click()
    wait(lambda: not widget.busy)
    labels = viewer.layers[f"{image.name} | stardist-dsb-he-2d"]
    n = len(np.unique(labels.data)) - 1
    step(f"Run: {n} nuclei segmented ({widget.last_run.seconds:.1f} s in the worker); shift: {widget.last_run.verdict}", 1)
    segmented = (clicks, time.perf_counter() - STARTED)
    shot("run.png")

    # The correction round: the left part corrected, a rectangle over it, fine-tune.
    truth = tifffile.imread(REPO / "samples" / "dsb_he_nuclei_labels.tif")
    corrected = np.array(labels.data)
    corrected[:, :192] = truth[:, :192]
    labels.data = corrected
    viewer.add_shapes([[[0, 0], [0, 191], [255, 191], [255, 0]]], shape_type="rectangle", name="corrected part",
                      edge_color="yellow", face_color="transparent", edge_width=2)
    widget.tabs.setCurrentIndex(2)
    widget.ft_target_combo.setCurrentText(labels.name)
    widget.ft_region_combo.setCurrentText("corrected part")
    widget.ft_steps.setValue(args.steps)
    QApplication.processEvents()
    step("correct the left part (simulated: ground truth), draw a rectangle over it, pick it", 3)
    widget.ft_button.click()
    halfway = [False]

    def halfway_shot():
        if not halfway[0] and widget.loss_curve.train and widget.loss_curve.train[-1][0] >= args.steps // 2:
            halfway[0] = True
            shot("finetune_running.png")
        return not widget.busy

    wait(halfway_shot, timeout=3600)
    done = widget.last_finetune
    step(f"Fine-tune on my corrections: {done.child} ({done.steps} steps, {done.seconds:.0f} s), before and after shown", 1)
    viewer.layers["corrected part"].visible = False
    shot("finetune.png")

    print(f"\nopening napari -> segmented sample: {segmented[0]} clicks (+ typing 'H&E'), {segmented[1]:.1f} s")
    print("| step | clicks | seconds | at |\n| --- | --- | --- | --- |")
    for what, n_clicks, seconds, at in steps:
        print(f"| {what} | {n_clicks} | {seconds:.1f} | {at:.1f} |")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
