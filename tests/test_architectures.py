"""Architectures are plug-ins; every registered one keeps the contract; N2V's blind-spot masking
and training behave as the paper says.

The contract (DESIGN.md, "Architectures"; issue 22.4) runs over ``architectures.available()``,
as timm's tests run over ``list_models()``: registering an architecture (a folder in
``models/``, or a plugin's entry point) is what puts it under test. For each one: its blueprint
builds the network, one training step of its LightningModule changes the weights, the ONNX
export computes what torch computes, and a package built from it round-trips through a zip
archive and reproduces its test tensors on both runtimes. A few seconds per architecture.
"""

import numpy as np
import pytest
import torch

import zoo
from zoo import architectures, spec as specs
from zoo.errors import UnknownArchitectureError
from conftest import N2V_BLUEPRINT, REPO


def test_every_model_folder_is_a_registered_architecture():
    blueprints = {p.parent.name: specs.load(p) for p in (REPO / "models").glob("*/spec.yaml")}
    folders = {p.parent.name for p in (REPO / "models").glob("*/__init__.py") if not p.parent.name.startswith("_")}
    registered = architectures.available()
    assert blueprints and set(blueprints) == folders
    for folder, blueprint in blueprints.items():       # folder unet_seg holds architecture unet-seg
        arch = registered[blueprint.architecture_id]
        assert blueprint.kind == "blueprint" and arch.package == f"zoo.models.{folder}"
        assert specs.load(arch.blueprint_path()).architecture_id == arch.id


# ---------------------------------------------------------------------------------- the contract
def tiny(arch: architectures.Architecture) -> specs.Spec:
    """The 2D blueprint with narrow layers, so that the contract takes seconds."""
    spec = specs.load(arch.blueprint_path(2))
    params = spec.architecture_params
    if "base_channels" in params:                        # the U-Nets
        params["base_channels"] = 8
    if "widths" in params:                               # the ResNet classifier
        params["widths"] = [8 * 2 ** min(i, 1) for i in range(len(params["widths"]))]
    return spec


def training_batch(module, spec: specs.Spec, n: int = 2):
    """A batch in the form the module's ``loss`` takes: images alone (self-supervised), image
    pairs, images and dense targets made from label images (segmentation: ``module.targets``),
    or images and class indices."""
    from zoo.synthetic import labelled_nuclei

    c = spec.inputs[0].n_channels
    images, labels = zip(*[labelled_nuclei((64, 64), n=8, seed=i, radius=(4, 7)) for i in range(n)])
    x = torch.tensor(np.stack(images), dtype=torch.float32)[:, None].repeat(1, c, 1, 1) / 100
    if hasattr(module, "targets"):
        return x, torch.tensor(np.stack([module.targets(np.asarray(lab)) for lab in labels]), dtype=torch.float32)
    if spec.task.startswith("classification"):
        return x, torch.arange(n) % int(spec.architecture_params.get("n_classes", 2))
    if architectures.get(spec.architecture_id).needs_targets:
        return x, x + 0.1 * torch.randn_like(x)
    return x


def onnx_matches_torch(network, spec: specs.Spec, path) -> float:
    import onnxruntime as ort

    from zoo.package import onnx_export

    c = spec.inputs[0].n_channels
    onnx_export.export(network, path, [1, c, 64, 64], output_ndim=len(spec.outputs[0].axes))
    x = torch.rand(2, c, 48, 80)                         # another batch size and shape than exported with
    with torch.no_grad():
        expected = network.eval()(x)
    expected = (expected[0] if isinstance(expected, (tuple, list)) else expected).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max() / (np.abs(expected).max() + 1e-6))


@pytest.mark.parametrize("arch_id", sorted(architectures.available()))
def test_architecture_contract(arch_id, tmp_path, zoo_home):
    from zoo.package import archive, build
    from zoo.spec import Training

    torch.manual_seed(0)
    arch = architectures.get(arch_id)
    spec = tiny(arch)
    assert spec.kind == "blueprint" and spec.architecture_id == arch_id

    # the blueprint builds the network, inside the architecture's LightningModule
    module = arch.training_module()(spec)
    assert isinstance(module.network, torch.nn.Module)

    # one training step: a finite scalar loss, and the weights move
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in module.parameters()]
    module.train()
    loss = module.loss(training_batch(module, spec))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))

    # ONNX computes what torch computes, at other batch and spatial sizes than exported with
    network = module.network.eval()
    assert onnx_matches_torch(network, spec, tmp_path / "network.onnx") < 1e-4

    # a tiny package: built, zipped, loaded back; both runtimes reproduce its test tensors
    sample = training_batch(module, spec, n=1)
    sample = (sample[0] if isinstance(sample, tuple) else sample).numpy() * 100
    training = Training(data={"description": "contract test", "fingerprint": "0" * 64, "n_train": 1,
                              "n_validation": 0},
                        statistics={"mean": 0.0, "std": 1.0, "percentiles": {}}, metrics={}, config={})
    package = build.build(spec, network, tmp_path / "package", training, sample, name=f"{arch_id}-contract",
                          version="0.0.1", test_size=64)
    zipped = archive.pack(package, tmp_path / f"{arch_id}-contract.zip")
    for runtime in ("onnx", "torch"):
        model = zoo.load(zipped, runtime=runtime)
        assert model.spec.architecture_id == arch_id and model.spec.ref == f"{arch_id}-contract@0.0.1"
        model.test()


def test_unknown_architecture_names_it():
    with pytest.raises(UnknownArchitectureError, match="unknown architecture 'cellpose-9000'.*installed: .*n2v"):
        architectures.get("cellpose-9000")


def test_third_party_registration_in_process():
    arch = architectures.Architecture(id="my-net", package="zoo.models.n2v",
                                      network="zoo.nn.unet:restoration_unet",
                                      training="zoo.models.n2v.module:N2VModule")
    architectures.register(arch)
    try:
        net = architectures.get("my-net").build_network({"base_channels": 4})
        assert isinstance(net, torch.nn.Module) and "my-net" in architectures.available()
    finally:
        architectures._extra.pop("my-net")


def test_prediction_imports_no_lightning():
    import subprocess
    import sys

    code = ("import sys, zoo, zoo.model, zoo.runtime.runners, zoo.nn.unet; "
            "print('pytorch_lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_blind_spot_replaces_masked_pixels_with_neighbours_only():
    from zoo.trainers.masking import blind_spot

    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32)  # all values distinct
    masked, mask = blind_spot(x, fraction=0.05, radius=2, generator=g)
    changed = masked != x
    assert mask.shape == (2, 1, 32, 32)
    assert not changed[mask == 0].any(), "pixels outside the mask must be untouched"
    assert mask.sum() > 0 and changed.sum() > 0.8 * mask.sum()
    # every replaced value comes from a pixel within the radius (values encode position)
    b, _, ys, xs = torch.nonzero(changed, as_tuple=True)
    src = masked[b, 0, ys, xs].long() - b * 32 * 32
    sy, sx = src // 32, src % 32
    assert ((sy - ys).abs() <= 2).all() and ((sx - xs).abs() <= 2).all()
    assert not ((sy == ys) & (sx == xs)).any()


def test_blind_spot_works_in_3d():
    from zoo.trainers.masking import blind_spot

    x = torch.rand(1, 1, 8, 16, 16)
    masked, mask = blind_spot(x, fraction=0.02, radius=1)
    assert mask.shape == (1, 1, 8, 16, 16) and mask.sum() >= 1
    assert torch.equal(masked[mask.expand_as(x) == 0], x[mask.expand_as(x) == 0])


def test_n2v_training_lowers_the_loss():
    from zoo.models.n2v.module import N2VModule

    torch.manual_seed(0)
    spec = specs.load(N2V_BLUEPRINT)
    spec.architecture_params["base_channels"] = 8
    module = N2VModule(spec, lr=3e-3, mask_fraction=0.05)
    clean = torch.nn.functional.avg_pool2d(torch.rand(8, 1, 64, 64), 9, stride=1, padding=4) * 3
    batch = clean + 0.3 * torch.randn_like(clean)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    fixed = lambda: module.loss(batch, torch.Generator().manual_seed(1)).item()  # noqa: E731
    before = fixed()
    for _ in range(40):
        opt.zero_grad()
        module.loss(batch).backward()
        opt.step()
    module.eval()
    assert fixed() < 0.7 * before


def test_network_is_fully_convolutional():
    net = architectures.get("n2v").build_network({"base_channels": 4}).eval()
    for shape in [(1, 1, 16, 16), (3, 1, 40, 24)]:
        assert net(torch.zeros(shape)).shape == shape


def test_blind_spot_never_shows_a_masked_pixel_its_own_value_at_borders():
    from zoo.trainers.masking import blind_spot

    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8).repeat(64, 1, 1, 1)
    masked, mask = blind_spot(x, fraction=0.3, radius=2, generator=torch.Generator().manual_seed(3))
    assert ((masked != x) | (mask == 0)).all(), "a masked pixel kept its own value"
