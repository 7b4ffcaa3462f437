"""Reduced precision (--precision): each runtime's own, float32 out, close to float32, never the default."""
import numpy as np
import pytest

import zoo
from zoo.errors import InputError


@pytest.mark.parametrize("runtime,precision", [("torch", "bf16"), ("onnx", "int8"), ("onnx", "fp16")])
def test_reduced_precision_stays_close_to_float32(tiny_package, runtime, precision):
    x = np.load(tiny_package / "test" / "input.npy")
    full = zoo.load(tiny_package, runtime=runtime, device="cpu").predict_tensor(x, raw=True)
    model = zoo.load(tiny_package, runtime=runtime, device="cpu", precision=precision)
    assert model.runner.precision == precision and model.runtime == runtime
    y = model.predict_tensor(x, raw=True)
    assert y.dtype == np.float32 and y.shape == full.shape
    spread = float(full.max() - full.min())
    error = float(np.abs(y - full).max())
    assert 0 < error < 0.1 * spread, (error, spread)     # changed, but only a little


def test_precision_picks_the_runtime_that_offers_it_and_refuses_the_others(tiny_package):
    assert zoo.load(tiny_package, device="cpu", precision="bf16").runtime == "torch"
    assert zoo.load(tiny_package, device="cpu", precision="int8").runtime == "onnx"
    with pytest.raises(InputError, match="int8"):
        zoo.load(tiny_package, runtime="torch", device="cpu", precision="int8")
    with pytest.raises(InputError, match="bf16"):
        zoo.load(tiny_package, runtime="onnx", device="cpu", precision="bf16")
    assert zoo.load(tiny_package, runtime="onnx", device="cpu").runner.precision is None
