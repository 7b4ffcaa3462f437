"""Longer training runs (marked slow): convergence well beyond what the default suite checks."""
import pytest
import tifffile

import zoo
from zoo.metrics import normalized_psnr
from zoo.trainers.fit import fit
from conftest import N2V_BLUEPRINT, synthetic_nuclei


@pytest.mark.slow
def test_full_width_n2v_reaches_a_large_gain(tmp_path):
    """The standard N2V blueprint, unchanged, for 600 steps: > 4 dB on held-out synthetic images."""
    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(8):
        tifffile.imwrite(folder / f"t{i}.tif", synthetic_nuclei((192, 192), n=40, seed=i, peak=40, read_noise=6)[0])
    package = fit(N2V_BLUEPRINT, folder, tmp_path / "pkg", max_steps=600, steps_per_epoch=200, batch_size=16,
                  patch=64, progress=False, module_options={"mask_fraction": 0.01})
    model = zoo.load(package)
    for seed in (500, 501, 502):
        noisy, clean = synthetic_nuclei((256, 256), n=50, seed=seed, peak=40, read_noise=6)
        gain = normalized_psnr(model.predict(noisy), clean) - normalized_psnr(noisy, clean)
        assert gain > 4.0, (seed, gain)
