"""Pre/post-processing ops: one implementation each, by the names specs use."""
import numpy as np
import pytest

from zoo import opnames, spec as specs
from zoo.errors import SpecError
from zoo.runtime import ops

RNG = np.random.default_rng(0)


def run(name, x, table=None, **params):
    table = table or (ops.PREPROCESSING if name in ops.PREPROCESSING else ops.POSTPROCESSING)
    context = {}
    return table[name](x, params, context, "raw"), context


def test_percentile_normalize_per_image_and_stored():
    x = RNG.random((2, 1, 40, 40)).astype(np.float32) * np.array([10, 1000], np.float32).reshape(2, 1, 1, 1)
    y, ctx = run("percentile_normalize", x, low=1, high=99)
    for b in range(2):
        lo, hi = np.percentile(y[b], [1, 99])
        assert abs(lo) < 1e-5 and abs(hi - 1) < 1e-5
    y, _ = run("percentile_normalize", x, low_value=0.0, high_value=10.0)
    np.testing.assert_allclose(y, x / 10, rtol=1e-5)
    back = ops.restore_input_scale(y, {"input": "raw"}, {"scale": {"raw": (0.0, 10.0)}}, "out")
    np.testing.assert_allclose(back, x, rtol=1e-5)


def test_scale_ops_and_clip():
    x = np.array([0, 100, 200], np.float32).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(run("scale_range", x, min=0, max=200)[0].ravel(), [0, 0.5, 1])
    np.testing.assert_allclose(run("scale_linear", x, gain=2, offset=1)[0].ravel(), [1, 201, 401])
    np.testing.assert_allclose(run("clip", x, min=50, max=150)[0].ravel(), [50, 100, 150])


def test_activation_and_label_ops():
    x = RNG.normal(size=(2, 3, 5, 5)).astype(np.float32) * 50
    s, _ = run("sigmoid", x)
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-x.astype(np.float64))), atol=1e-6)
    p, _ = run("softmax", x)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    labels, _ = run("argmax", x)
    assert labels.shape == (2, 1, 5, 5) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels[:, 0], x.argmax(axis=1))
    mask, _ = run("threshold", s[:, :1], value=0.5)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_unknown_op_in_a_spec_is_named():
    from conftest import N2V_BLUEPRINT

    spec = specs.load(N2V_BLUEPRINT)
    spec.outputs[0].postprocessing.append(specs.Op("stardist_nms_v9"))
    with pytest.raises(SpecError, match=r"outputs\[0\]\.postprocessing\[1\]\.op: unknown op 'stardist_nms_v9'"):
        opnames.check_known(spec)


def test_the_op_names_beside_the_spec_are_the_ops_the_runtime_implements():
    """zoo.opnames (read by the registry and package builders) and zoo.runtime.ops (the code) agree."""
    from zoo import opnames
    from zoo.runtime import ops as runtime_ops
    from zoo.segmentation.ops import INSTANCE_OPS

    assert set(runtime_ops.PREPROCESSING) == opnames.PREPROCESSING
    assert set(runtime_ops.POSTPROCESSING) == opnames.POSTPROCESSING
    assert set(INSTANCE_OPS) == opnames.INSTANCE
