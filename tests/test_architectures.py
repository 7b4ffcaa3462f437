"""Architectures are plug-ins; N2V's blind-spot masking and training behave as the paper says."""

import pytest
import torch

from zoo import architectures, spec as specs
from zoo.errors import UnknownArchitectureError
from conftest import N2V_BLUEPRINT, REPO


def test_every_model_folder_is_registered_through_entry_points():
    blueprints = {p.parent.name: specs.load(p) for p in (REPO / "models").glob("*/spec.yaml")}
    registered = architectures.available()
    assert blueprints
    for folder, blueprint in blueprints.items():       # folder unet_seg holds architecture unet-seg
        arch = registered[blueprint.architecture_id]
        assert blueprint.kind == "blueprint" and arch.package.rsplit(".", 1)[-1] == folder
        assert specs.load(arch.blueprint_path()).architecture_id == arch.id


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
        assert isinstance(net, torch.nn.Module)
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
