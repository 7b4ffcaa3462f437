"""The restoration family: CARE, Noise2Noise, Noise2Void and N2V2 in 2D and 3D."""
import numpy as np
import pytest
import tifffile
import torch

import zoo
from zoo import architectures, spec as specs
from zoo.errors import InputError
from zoo.synthetic import nuclei
from zoo.trainers.data import PatchDataset, match_targets
from zoo.trainers.masking import blind_spot


def tiny(arch: str, dims: int = 2):
    bp = specs.load(architectures.get(arch).blueprint_path(dims))
    bp.architecture_params["base_channels"] = 8 if dims == 2 else 4
    return bp


def batches(arch: str, dims: int, n: int, seed: int):
    """Normalised synthetic batches: images alone, or (noisy, clean) / (noisy, noisy) pairs."""
    shape = (64, 64) if dims == 2 else (16, 32, 32)
    out = []
    for i in range(n):
        noisy, clean = zip(*[nuclei(shape, n=6, seed=seed + 10 * i + k) for k in range(4)])
        x = torch.tensor(np.stack(noisy)[:, None], dtype=torch.float32) / 200
        if arch == "care":
            out.append((x, torch.tensor(np.stack(clean)[:, None], dtype=torch.float32) / 200))
        elif arch == "n2n":
            second = [nuclei(shape, n=6, seed=seed + 10 * i + k, read_noise=5.0)[1] for k in range(4)]
            rng = np.random.default_rng(seed + i)
            y = np.stack([rng.poisson(c) for c in second])[:, None]
            out.append((x, torch.tensor(y, dtype=torch.float32) / 200))
        else:
            out.append(x)
    return out


@pytest.mark.parametrize("arch, dims, closer_than", [("care", 2, "input"), ("n2n", 2, "init"), ("n2v", 2, "init"),
                                                    ("n2v2", 2, "init"), ("care", 3, "init"), ("n2v2", 3, None)])
def test_each_architecture_learns(arch, dims, closer_than):
    """A few dozen steps on synthetic data: the loss on held-out images falls (fixed masks), and
    where that is enough steps to tell, the output is closer to the clean image than at the start
    or than the noisy input itself.
    (The non-residual blind-spot networks need more steps to beat the noisy input than a unit test
    affords: tests/test_slow_training.py and the standard packages show that.)"""
    torch.manual_seed(0)
    options = {} if architectures.get(arch).needs_targets else {"mask_fraction": 0.05}
    module = architectures.get(arch).training_module()(tiny(arch, dims), lr=3e-3, **options)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    held_out = batches(arch, dims, 2, seed=1000)
    shape = (64, 64) if dims == 2 else (16, 32, 32)
    pairs = [nuclei(shape, n=6, seed=1000 + k) for k in range(4)]    # the same images as held_out[0]
    noisy = torch.tensor(np.stack([p[0] for p in pairs])[:, None], dtype=torch.float32) / 200
    clean = torch.tensor(np.stack([p[1] for p in pairs])[:, None], dtype=torch.float32) / 200

    def evaluate():
        module.eval()
        with torch.no_grad():
            loss = np.mean([module.loss(b, torch.Generator().manual_seed(i)).item() for i, b in enumerate(held_out)])
            return loss, float(((module(noisy) - clean) ** 2).mean())

    loss_before, error_before = evaluate()
    module.train()
    for batch in batches(arch, dims, 40 if dims == 2 else 15, seed=0):
        optimizer.zero_grad()
        module.loss(batch).backward()
        optimizer.step()
    loss_after, error_after = evaluate()
    assert loss_after < loss_before
    if closer_than == "init":
        assert error_after < error_before
    if closer_than == "input":     # it denoises: closer to the clean image than the noisy input
        assert error_after < float(((noisy - clean) ** 2).mean())


def test_masking_statistics():
    x = torch.rand(4, 1, 64, 64)
    masked, mask = blind_spot(x, fraction=0.01, radius=2, generator=torch.Generator().manual_seed(0))
    per_patch = mask.sum(dim=(1, 2, 3))
    assert torch.all(per_patch <= 41) and per_patch.float().mean() > 38   # 1% of 4096, few collisions
    changed = (masked != x)
    assert torch.all(changed <= mask.bool())            # only masked pixels change
    # median masking: each masked pixel is the median of its 5x5 neighbourhood without the centre
    m2, mask2 = blind_spot(x, fraction=0.01, radius=2, generator=torch.Generator().manual_seed(1), masking="median")
    b, _, y, xx = [int(i[0]) for i in torch.nonzero(mask2 * (torch.arange(64)[None, None, :, None] > 2) *
                                                     (torch.arange(64) > 2) * (torch.arange(64)[None, None, :, None] < 61) *
                                                     (torch.arange(64) < 61))[:1].T]
    window = x[b, 0, y - 2:y + 3, xx - 2:xx + 3].flatten()
    neighbours = torch.cat([window[:12], window[13:]])
    assert torch.isclose(m2[b, 0, y, xx], neighbours.median())
    with pytest.raises(ValueError, match="masking"):
        blind_spot(x, 0.01, 2, masking="mean")


def test_n2v2_network_has_blur_pool_and_no_top_skip():
    from zoo.nn.unet import MaxBlurPool, restoration_unet

    net = restoration_unet(base_channels=8, layout="csbdeep", blur_pool=True, top_skip=False)
    assert any(isinstance(m, MaxBlurPool) for m in net.modules())
    assert net.merge[-1][0].in_channels == 8            # the top block sees only the upsampled path
    x = torch.rand(2, 1, 36, 44)
    assert net(x).shape == x.shape
    # shift robustness: max-blur-pool's output moves less under a one-pixel shift than max-pool's
    blur, plain = MaxBlurPool(2, 1), torch.nn.MaxPool2d(2)
    img = (torch.rand(1, 1, 64, 64) > 0.9).float()
    shifted = torch.roll(img, 1, dims=-1)
    diff = lambda pool: (pool(img)[..., 1:-1] - pool(shifted)[..., 1:-1]).abs().mean()  # noqa: E731
    assert diff(blur) < diff(plain)


def test_csbdeep_layout_matches_careamics_flops():
    from zoo.nn.unet import restoration_unet

    def macs(net):
        total = 0

        def hook(m, i, o):
            nonlocal total
            total += o.numel() * m.in_channels * int(np.prod(m.kernel_size)) // m.groups
        hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        net(torch.zeros(1, 1, 64, 64))
        for h in hooks:
            h.remove()
        return total / 64 / 64

    assert abs(2 * macs(restoration_unet(layout="csbdeep")) - 166.5e3) < 1e3   # CAREamics' default N2V U-Net
    assert 2 * macs(restoration_unet()) > 200e3


def test_pairs_are_matched_by_name_and_cut_and_augmented_together(tmp_path):
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    for name in ("a.tif", "b.tif"):
        noisy, clean = nuclei((64, 64), seed=len(name))
        tifffile.imwrite(tmp_path / "low" / name, noisy)
        tifffile.imwrite(tmp_path / "high" / name, clean.astype(np.float32))
    images = sorted((tmp_path / "low").iterdir())
    assert [t.name for t in match_targets(images, tmp_path / "high")] == ["a.tif", "b.tif"]
    tifffile.imwrite(tmp_path / "low" / "c.tif", np.zeros((64, 64), np.uint16))
    with pytest.raises(InputError, match="no target of the same name"):
        match_targets(sorted((tmp_path / "low").iterdir()), tmp_path / "high")

    ramp = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64)
    ds = PatchDataset([(ramp, ramp * 2)], patch=[16, 16], length=50, augment=True, seed=0)
    for i in range(50):
        x, y = ds[i]
        assert torch.equal(y, 2 * x)                       # same place, same flips and rotation


def test_foreground_aware_sampling_prefers_objects():
    image = np.zeros((1, 256, 256), np.float32)
    image[:, 200:240, 200:240] = 1.0                       # one bright object in a dark field

    def hits(foreground):
        ds = PatchDataset([image], [32, 32], 200, augment=False, seed=0, foreground=foreground)
        return np.mean([ds[i].max().item() > 0 for i in range(200)])

    assert hits(1.0) > 2 * hits(0.0)


def test_care_package_round_trips_and_reproduces_in_both_runtimes(tmp_path, zoo_home):
    from zoo.registry import default_registry
    from zoo.trainers.fit import fit

    for folder in ("low", "high"):
        (tmp_path / folder).mkdir()
    for i in range(4):
        noisy, clean = nuclei((80, 80), seed=i)
        tifffile.imwrite(tmp_path / "low" / f"im{i}.tif", noisy)
        tifffile.imwrite(tmp_path / "high" / f"im{i}.tif", clean.astype(np.float32))
    with pytest.raises(InputError, match="--target"):
        fit(tiny("care"), tmp_path / "low", tmp_path / "pkg", max_steps=2)
    package = fit(tiny("care"), tmp_path / "low", tmp_path / "pkg", target=tmp_path / "high", max_steps=8,
                  steps_per_epoch=4, batch_size=4, patch=32, progress=False, val_fraction=0.25, name="care-tiny")
    spec = specs.load(package)
    assert spec.training.config["loss"] == "l1" and spec.training.data["fingerprint"]
    registry = default_registry()
    registry.publish(package)
    for runtime in ("torch", "onnx"):
        assert zoo.load("care-tiny", runtime=runtime, device="cpu", registry=registry).test() <= 1.0


def test_ssim_and_normalisation():
    from zoo.restoration.metrics import normalized_psnr, normalized_ssim, ssim

    _, clean = nuclei((96, 96), seed=3)
    noisy = clean + np.random.default_rng(0).normal(0, 20, clean.shape)
    assert ssim(clean, clean, data_range=clean.max()) == pytest.approx(1.0)
    assert normalized_ssim(noisy, clean) < normalized_ssim(clean + 0.1 * (noisy - clean), clean) < 1.0
    assert normalized_ssim(3 * noisy + 7, clean) == pytest.approx(normalized_ssim(noisy, clean), rel=1e-6)
    assert normalized_psnr(3 * noisy + 7, clean) == pytest.approx(normalized_psnr(noisy, clean), rel=1e-6)
    volume = np.stack([clean] * 8)
    assert normalized_ssim(volume, volume) == pytest.approx(1.0)
