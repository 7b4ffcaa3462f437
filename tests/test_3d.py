"""The same code paths in 3D: a zyx Noise2Void blueprint trains, packages, exports and predicts."""
import numpy as np
import tifffile
import yaml

import zoo
from zoo import spec as specs
from zoo.trainers.fit import fit
from conftest import N2V_BLUEPRINT


def blueprint_3d() -> specs.Spec:
    data = yaml.safe_load(N2V_BLUEPRINT.read_text())
    data["name"] = "n2v-3d-tiny"
    data["architecture"]["params"].update(dims=3, base_channels=4, depth=1)
    for tensor in data["inputs"] + data["outputs"]:
        tensor["axes"] = "bczyx"
        tensor["halo"] = [8, 8, 8]
    data["inputs"][0]["shape"] = {"min": [4, 4, 4], "step": [2, 2, 2]}
    return specs.validate(data)


def volume(seed: int, shape=(20, 40, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    clean = 10 + sum(100 * np.exp(-((zz - rng.uniform(0, shape[0])) ** 2 + (yy - rng.uniform(0, shape[1])) ** 2
                                   + (xx - rng.uniform(0, shape[2])) ** 2) / 30) for _ in range(6))
    return rng.poisson(clean).astype(np.uint16)


def test_3d_package_end_to_end(tmp_path):
    folder = tmp_path / "vols"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"v{i}.tif", volume(i))
    package = fit(blueprint_3d(), folder, tmp_path / "pkg", max_steps=4, steps_per_epoch=2, batch_size=2,
                  patch=16, progress=False, val_fraction=0.34)
    spec = specs.load(package)
    assert spec.inputs[0].axes == "bczyx"
    for runtime in ("torch", "onnx"):
        assert zoo.load(package, runtime=runtime).test() <= 1
    model = zoo.load(package)
    vol = volume(9, shape=(23, 50, 37))
    whole = model.predict(vol, tile=512)
    tiled = model.predict(vol, tile=[20, 28, 24])
    assert whole.shape == vol.shape
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4 * np.ptp(whole))
