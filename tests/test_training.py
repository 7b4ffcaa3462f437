"""Real training converges: N2V on synthetic noisy nuclei (known ground truth) denoises held-out images."""
import pytest
import tifffile

import zoo
from zoo.restoration.metrics import normalized_psnr
from zoo.trainers.fit import fit
from conftest import synthetic_nuclei


def test_n2v_learns_to_denoise_held_out_images(tmp_path, tiny_blueprint):
    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(6):
        tifffile.imwrite(folder / f"t{i}.tif", synthetic_nuclei(shape=(128, 128), n=25, seed=100 + i, peak=40, read_noise=6)[0])
    package = fit(tiny_blueprint, folder, tmp_path / "pkg", max_steps=200, steps_per_epoch=100, batch_size=8,
                  patch=48, lr=2e-3, progress=False, module_options={"mask_fraction": 0.02})
    model = zoo.load(package)
    gains = []
    for seed in (900, 901):  # never seen in training
        noisy, clean = synthetic_nuclei(shape=(160, 160), n=30, seed=seed, peak=40, read_noise=6)
        gains.append(normalized_psnr(model.predict(noisy), clean) - normalized_psnr(noisy, clean))
    assert min(gains) > 2.0, gains


def test_explicit_validation_images_never_train(tmp_path, image_folder, tiny_blueprint):
    from zoo import spec as specs

    val = sorted(image_folder.glob("*.tif"))[:2]
    package = fit(tiny_blueprint, image_folder, tmp_path / "p", val_files=val, max_steps=1, steps_per_epoch=1,
                  batch_size=2, patch=32, progress=False)
    record = specs.load(package).training
    assert record.data["n_train"] == 3 and record.data["n_validation"] == 2
    assert record.config["validation_files"] == [p.name for p in val]


def test_a_device_this_machine_lacks_is_a_clear_error_before_training(tmp_path, image_folder, tiny_blueprint):
    import pytest
    import torch

    from zoo.errors import InputError
    from zoo.trainers.fit import device_options

    assert device_options("cpu") == ("cpu", "auto") and device_options(None, "gpu", 2) == ("gpu", 2)
    with pytest.raises(InputError, match="takes cpu, cuda"):
        device_options("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            fit(tiny_blueprint, image_folder, tmp_path / "p", max_steps=1, progress=False, device="cuda")
        assert not (tmp_path / "p").exists() and not (tmp_path / "p.run").exists()


def _every_architecture_data(root):
    """(blueprint, data, target, options) for a step or two of each registered architecture."""
    import numpy as np

    from zoo import architectures, spec as specs
    from zoo.synthetic import labelled_nuclei, nuclei

    for sub in ("noisy", "clean", "images", "labels"):
        (root / sub).mkdir()
    for i in range(3):
        noisy, clean = nuclei((64, 64), n=8, seed=i)
        tifffile.imwrite(root / "noisy" / f"i{i}.tif", noisy)
        tifffile.imwrite(root / "clean" / f"i{i}.tif", clean.astype(np.float32))
        image, labels = labelled_nuclei((64, 64), n=8, seed=i, radius=(4, 7))
        tifffile.imwrite(root / "images" / f"i{i}.tif", image)
        tifffile.imwrite(root / "labels" / f"i{i}.tif", labels)
    from test_classification import write_csv, write_dataset

    write_csv(root, write_dataset(root, {"small": 8, "large": 8}, seed=0))
    cases = {}
    for arch_id in architectures.available():
        arch = architectures.get(arch_id)
        bp = specs.load(arch.blueprint_path(2))
        if arch_id == "classifier":
            bp.architecture_params.update(widths=[8, 16, 32], blocks=[1, 1, 1])
            cases[arch_id] = (bp, root, None, {"labels": root / "labels.csv", "canvas": 32, "val_every": 2})
            continue
        bp.architecture_params.update(base_channels=8, **({"depth": 2} if "depth" in bp.architecture_params else {}))
        if arch.task == "segmentation":
            cases[arch_id] = (bp, root / "images", root / "labels", {"patch": 48, "steps_per_epoch": 2})
        else:
            cases[arch_id] = (bp, root / "noisy", root / "clean" if arch.needs_targets else None,
                              {"patch": 32, "steps_per_epoch": 2})
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_every_architecture_trains_on_the_cpu_device_in_both_precisions(tmp_path, precision):
    from zoo import spec as specs

    for arch_id, (bp, data, target, options) in _every_architecture_data(tmp_path).items():
        out = fit(bp, data, tmp_path / arch_id, target=target, max_steps=2, batch_size=2, progress=False,
                  val_fraction=0.34, device="cpu", precision=precision, **options)
        training = specs.load(out).training
        assert training.config["steps_run"] == 2 and "selection" in training.config, arch_id


def test_the_curves_are_left_out_not_the_run_when_matplotlib_is_missing(tmp_path, monkeypatch, caplog):
    """matplotlib is an extra (`bench`), not a dependency: a run without it keeps its package."""
    import sys

    from zoo.trainers.runlog import attach_curves, write_curves

    (tmp_path / "metrics.csv").write_text("epoch,step,train_loss,val_loss\n0,0,0.5,\n0,1,,0.4\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # `import matplotlib` raises ImportError
    assert write_curves(tmp_path) is None
    attach_curves(tmp_path / "no-package", tmp_path)                 # nothing to attach, no error
    assert "matplotlib is not installed" in caplog.text
