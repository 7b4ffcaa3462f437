"""Real training converges: N2V on synthetic noisy nuclei (known ground truth) denoises held-out images."""
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
