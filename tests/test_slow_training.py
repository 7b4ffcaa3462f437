"""Longer training runs (marked slow): convergence well beyond what the default suite checks."""
import pytest
import tifffile

import zoo
from zoo.restoration.metrics import normalized_psnr
from zoo.trainers.fit import fit
from conftest import synthetic_nuclei


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["n2v", "n2v2"])
def test_full_width_blind_spot_training_reaches_a_large_gain(tmp_path, architecture):
    """The shipped 2D blueprints, unchanged, for 600 steps: > 4 dB on held-out synthetic images.
    (This is what caught N2V2 on a residual U-Net learning the identity.)"""
    from zoo import architectures

    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(8):
        tifffile.imwrite(folder / f"t{i}.tif", synthetic_nuclei((192, 192), n=40, seed=i, peak=40, read_noise=6)[0])
    package = fit(architectures.get(architecture).blueprint_path(2), folder, tmp_path / "pkg", max_steps=600,
                  steps_per_epoch=200, batch_size=16, patch=64, progress=False, module_options={"mask_fraction": 0.01})
    model = zoo.load(package)
    for seed in (500, 501, 502):
        noisy, clean = synthetic_nuclei((256, 256), n=50, seed=seed, peak=40, read_noise=6)
        gain = normalized_psnr(model.predict(noisy), clean) - normalized_psnr(noisy, clean)
        assert gain > 4.0, (seed, gain)
