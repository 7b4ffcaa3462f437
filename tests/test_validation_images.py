"""A few validation images in the run folder (issue 27.1): at every validation a PNG of three
fixed validation samples (input | prediction | target) for every task, and TensorBoard's images
when it is installed; rank 0 only."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import labelled_nuclei_folder


def _pictures(path: Path) -> list[np.ndarray]:
    """The pictures of a validation PNG (the insides of its frames), top to bottom, left to right."""
    from PIL import Image
    from scipy import ndimage

    from zoo.trainers.valimages import FRAME

    image = np.asarray(Image.open(path).convert("RGB"))
    frames, n = ndimage.label((image == FRAME).all(axis=-1))
    boxes = [b for b in ndimage.find_objects(frames) if b[0].stop - b[0].start > 32 and b[1].stop - b[1].start > 32]
    boxes.sort(key=lambda b: (b[0].start, b[1].start))
    return [image[b[0].start + 1:b[0].stop - 1, b[1].start + 1:b[1].stop - 1] for b in boxes]


def _grid(path: Path) -> tuple[int, int]:
    """(rows, pictures per row) of a validation PNG."""
    from PIL import Image
    from scipy import ndimage

    from zoo.trainers.valimages import FRAME

    image = np.asarray(Image.open(path).convert("RGB"))
    frames, _ = ndimage.label((image == FRAME).all(axis=-1))
    boxes = [b for b in ndimage.find_objects(frames) if b[0].stop - b[0].start > 32]
    return len({b[0].start for b in boxes}), len({b[1].start for b in boxes})


def _not_blank(picture: np.ndarray) -> bool:
    return float(picture.astype(np.float32).std()) > 5


def test_a_training_writes_a_validation_png_at_every_validation(image_folder, tiny_blueprint, tmp_path):
    """Noise2Void (no targets): input | prediction, three samples, one PNG per validation."""
    from PIL import Image

    from zoo.trainers.fit import fit

    fit(tiny_blueprint, image_folder, tmp_path / "pkg", max_steps=8, steps_per_epoch=4, batch_size=4, patch=32,
        progress=False, val_fraction=0.4)
    written = sorted(p.name for p in (tmp_path / "pkg.run" / "validation").iterdir())
    assert written == ["step_0000004.png", "step_0000008.png"]
    path = tmp_path / "pkg.run" / "validation" / "step_0000008.png"
    assert _grid(path) == (3, 2)
    pictures = _pictures(path)
    assert len(pictures) == 6 and all(p.shape[:2] == (128, 128) for p in pictures)   # 32-pixel patches, 4x
    inputs = pictures[0::2]
    assert all(_not_blank(p) for p in inputs)
    assert not np.array_equal(inputs[0], inputs[1]) and not np.array_equal(inputs[1], inputs[2])   # 3 samples
    width, height = Image.open(path).size
    assert 2 * 128 < width < 600 and 3 * 128 < height < 700                  # small


def test_a_classifier_run_shows_inputs_titled_with_true_and_predicted_classes(tmp_path):
    from test_classification import tiny_blueprint, write_csv, write_dataset
    from zoo.trainers.classification import fit_classifier

    rows = write_dataset(tmp_path, {"small": 8, "large": 8, "ring": 8}, seed=0)
    labels = write_csv(tmp_path, rows)
    fit_classifier(tiny_blueprint(), tmp_path, tmp_path / "pkg", labels=labels, group_column="source",
                   canvas=32, scale=1.0, max_steps=4, val_every=2, batch_size=8, progress=False, val_fraction=0.4)
    written = sorted((tmp_path / "pkg.run" / "validation").iterdir())
    assert [p.name for p in written] == ["step_0000002.png", "step_0000004.png"]
    assert _grid(written[-1]) == (1, 3)                   # one picture per sample, side by side
    assert all(_not_blank(p) for p in _pictures(written[-1]))


def test_samples_are_spread_over_a_classifiers_classes():
    from zoo.trainers.valimages import _pick

    items = [(None, c) for c in [0, 0, 0, 0, 1, 1, 2]]
    assert sorted(items[i][1] for i in _pick(items, 3)) == [0, 1, 2]
    assert _pick([(None, None)] * 10, 3) == [0, 4, 9]


class _Board:
    """TensorBoard's SummaryWriter as far as the callback uses it."""

    def __init__(self):
        self.images = []

    def add_image(self, tag, image, global_step=None, dataformats="CHW"):
        self.images.append((tag, np.asarray(image).shape, global_step, dataformats))


def _trainer(rank: int = 0, step: int = 6, board: _Board | None = None):
    from contextlib import nullcontext

    return SimpleNamespace(sanity_checking=False, is_global_zero=rank == 0, global_step=step,
                           precision_plugin=SimpleNamespace(forward_context=nullcontext),
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=step - 1)),
                           loggers=[SimpleNamespace(experiment=board or _Board())])


def test_an_instance_model_shows_input_predicted_and_target_labels_also_in_tensorboard(tmp_path):
    """unet-seg: input | predicted labels (its post-processing) | target labels; the same
    picture goes to TensorBoard at its scalars' step. Rank 0 only."""
    from zoo import architectures, spec as specs
    from zoo.trainers.fit import make_datamodule
    from zoo.trainers.valimages import ValidationImages, sample_items

    images, labels = labelled_nuclei_folder(tmp_path / "data")
    spec = specs.load(architectures.get("unet-seg").blueprint_path(2))
    spec.architecture_params.update(base_channels=8, depth=2)
    module = architectures.get("unet-seg").training_module()(spec)
    module.eval()
    files, targets = sorted(images.iterdir()), sorted(labels.iterdir())
    dm = make_datamodule(module, files[:3], files[3:], {"train_targets": targets[:3], "val_targets": targets[3:]},
                         48, 4, 10, 0)
    samples = sample_items(dm)
    assert len(samples) == 3 and all(r.ndim == 2 and r.dtype.kind in "iu" and r.max() > 0 for _, r in samples)
    board = _Board()
    pictures = ValidationImages(tmp_path / "run", spec, samples, "instance")
    pictures.on_validation_epoch_end(_trainer(rank=1, board=board), module)
    assert not (tmp_path / "run" / "validation").exists() and not board.images
    pictures.on_validation_epoch_end(_trainer(rank=0, step=6, board=board), module)
    path = tmp_path / "run" / "validation" / "step_0000006.png"
    assert _grid(path) == (3, 3)
    found = _pictures(path)
    assert all(p.shape[:2] == (128, 128) for p in found)     # 48-pixel patches, enlarged to 128
    assert all(_not_blank(p) for p in found[0::3]) and all(_not_blank(p) for p in found[2::3])
    from PIL import Image

    width, height = Image.open(path).size
    assert board.images == [("validation/samples", (height, width, 3), 5, "HWC")]


def test_a_restoration_with_targets_shows_the_prediction_on_the_targets_range(tmp_path):
    """CARE: input | prediction | target; a failing drawing never stops the training."""
    import tifffile

    from conftest import synthetic_nuclei
    from zoo import architectures, spec as specs
    from zoo.trainers.fit import make_datamodule
    from zoo.trainers.valimages import ValidationImages, sample_items

    for folder in ("noisy", "clean"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        noisy, clean = synthetic_nuclei(seed=i)
        tifffile.imwrite(tmp_path / "noisy" / f"c{i}.tif", noisy)
        tifffile.imwrite(tmp_path / "clean" / f"c{i}.tif", clean.astype(np.float32))
    spec = specs.load(architectures.get("care").blueprint_path(2))
    spec.architecture_params["base_channels"] = 8
    module = architectures.get("care").training_module()(spec)
    module.eval()
    noisy, clean = sorted((tmp_path / "noisy").iterdir()), sorted((tmp_path / "clean").iterdir())
    dm = make_datamodule(module, noisy[:1], noisy[1:], {"train_targets": clean[:1], "val_targets": clean[1:]},
                         32, 4, 10, 0)
    pictures = ValidationImages(tmp_path / "run", spec, sample_items(dm), "restoration")
    assert "on the target's intensity range" in pictures.heading(4)
    pictures.on_validation_epoch_end(_trainer(step=4), module)
    path = tmp_path / "run" / "validation" / "step_0000004.png"
    assert _grid(path) == (3, 3)
    found = _pictures(path)
    assert all(_not_blank(p) for p in found[0::3]) and all(_not_blank(p) for p in found[2::3])

    broken = ValidationImages(tmp_path / "run", spec, [(np.zeros((2, 5), np.float32), None)], "restoration")
    broken.on_validation_epoch_end(_trainer(step=8), module)              # logged, not raised
    assert not (tmp_path / "run" / "validation" / "step_0000008.png").exists()


@pytest.mark.parametrize("after, kept", [(None, []), (4, ["step_0000002.png", "step_0000004.png"])])
def test_a_new_run_clears_the_images_and_a_resume_those_it_draws_again(tmp_path, after, kept):
    from zoo.trainers.valimages import clear

    folder = tmp_path / "validation"
    folder.mkdir()
    for step in (2, 4, 6):
        (folder / f"step_{step:07d}.png").write_bytes(b"png")
    clear(tmp_path, after)
    assert sorted(p.name for p in folder.iterdir()) == kept
