"""Transfer learning: weights move into networks with new input channels or a new head, frozen
stages keep their weights and statistics, the child records its lineage, and what cannot be
fine-tuned says why."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import load_file

import zoo
from zoo import architectures, spec as specs
from zoo.errors import InputError, UnknownArchitectureError
from zoo.hashing import sha256_file
from zoo.nn.transfer import adapt_input_weight, load_transferable, stages
from zoo.package.build import WEIGHTS, amend
from zoo.synthetic import labelled_nuclei
from zoo.trainers.data import PatchDataset, Rehearsal
from zoo.trainers.finetune import finetune
from zoo.trainers.fit import fit
from zoo.trainers.transfer import layerwise_groups, set_trainable, trainable_stages

from test_cli import zoo_cli
from test_segmentation_models import small_blueprint


def stardist_net(**params):
    return architectures.get("stardist").build_network({"dims": 2, "channels": 1, "n_rays": 16, "depth": 2,
                                                        "base_channels": 8, **params})


@pytest.mark.parametrize("parent_channels, child_channels", [(1, 3), (3, 1), (2, 3)])
def test_adapted_first_convolution_answers_a_grey_image_as_the_parent_did(parent_channels, child_channels):
    torch.manual_seed(0)
    parent, child = stardist_net(channels=parent_channels), stardist_net(channels=child_channels)
    report = load_transferable(child, parent.state_dict())
    assert report.adapted == ["unet.down.0.0.weight"] and not report.new
    grey = torch.rand(1, 1, 32, 32)
    parent.eval(), child.eval()
    with torch.no_grad():
        expected = parent(grey.repeat(1, parent_channels, 1, 1))
        got = child(grey.repeat(1, child_channels, 1, 1))
    assert torch.allclose(got, expected, atol=1e-5)


def test_adapt_input_weight_sums_and_rescales():
    w = torch.arange(12.0).reshape(2, 3, 2, 1)
    assert torch.equal(adapt_input_weight(w, 1), w.sum(1, keepdim=True))
    wider = adapt_input_weight(w, 6)
    assert wider.shape == (2, 6, 2, 1) and torch.allclose(wider.sum(1), w.sum(1))


def test_a_new_number_of_rays_gets_a_new_head_and_keeps_the_body():
    torch.manual_seed(0)
    parent, child = stardist_net(n_rays=32), stardist_net(n_rays=16)
    report = load_transferable(child, parent.state_dict())
    assert sorted(report.new) == ["unet.head.bias", "unet.head.weight"]
    for name in report.copied:
        assert torch.equal(child.state_dict()[name], parent.state_dict()[name])
    assert child(torch.rand(1, 1, 32, 32)).shape[1] == 17


def test_a_different_body_is_refused_with_the_reason():
    with pytest.raises(InputError, match="body of the parent"):
        load_transferable(stardist_net(base_channels=16), stardist_net().state_dict())


def test_freeze_policies_count_stages_from_the_head():
    net = stardist_net()
    names = [name for name, _ in stages(net)]
    assert names == ["encoder0", "encoder1", "bottleneck", "decoder0", "decoder1", "head"]
    assert trainable_stages(net, "none") == 6
    assert trainable_stages(net, "all-but-head") == 1
    assert trainable_stages(net, "encoder") == 3
    assert [trainable_stages(net, "gradual", step, 10) for step in (0, 9, 10, 35, 500)] == [1, 1, 2, 4, 6]
    net.train()
    frozen = set_trainable(net, 3)
    assert frozen == ["encoder0", "encoder1", "bottleneck"]
    assert not any(p.requires_grad for p in net.unet.down.parameters())
    assert all(p.requires_grad for p in net.unet.merge.parameters())
    assert not net.unet.down[0][1].training and net.unet.merge[0][1].training   # frozen batch norm in eval


def test_layerwise_learning_rates_decay_from_the_head():
    groups = layerwise_groups(stardist_net(), 1e-3, 0.5)
    assert [g["name"] for g in groups][-1] == "head"
    lrs = [g["lr"] for g in groups]
    assert lrs[-1] == 1e-3 and lrs[0] == pytest.approx(1e-3 * 0.5 ** 5)
    assert sum(len(g["params"]) for g in groups) == len(list(stardist_net().parameters()))


def test_rehearsal_draws_its_fraction_of_patches():
    own = [np.zeros((1, 32, 32), np.float32)] * 3
    parent_data = [np.ones((1, 32, 32), np.float32)] * 2
    weights = [0.7 / 3] * 3 + [0.3 / 2] * 2
    ds = PatchDataset(own + parent_data, [16, 16], length=4000, augment=False, seed=0, weights=weights)
    drawn = np.mean([float(ds[i].mean()) for i in range(4000)])
    assert drawn == pytest.approx(0.3, abs=0.03)
    with pytest.raises(InputError, match="between 0 and 1"):
        Rehearsal([own], 1.5)


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    """Grey nuclei (the parent's domain) and RGB nuclei (the child's), with labels."""
    root = tmp_path_factory.mktemp("ft")
    for folder in ("grey", "rgb", "labels"):
        (root / folder).mkdir()
    for i in range(4):
        image, labels = labelled_nuclei((64, 64), n=10, seed=100 + i, radius=(4, 7))
        tifffile.imwrite(root / "grey" / f"n{i}.tif", image)
        rgb = np.stack([image.max() - image, image // 2, image.max() - image // 3], axis=-1)   # stained look
        tifffile.imwrite(root / "rgb" / f"n{i}.tif", rgb, photometric="rgb")
        tifffile.imwrite(root / "labels" / f"n{i}.tif", labels)
    return root


@pytest.fixture(scope="module")
def stardist_parent(tmp_path_factory, seg_data):
    bp = small_blueprint("stardist")
    bp.name = "stardist-tiny"
    return fit(bp, seg_data / "grey", tmp_path_factory.mktemp("parent") / "stardist-tiny", target=seg_data / "labels",
               max_steps=20, steps_per_epoch=10, batch_size=4, patch=48, lr=3e-3, progress=False, val_fraction=0.25)


def test_finetune_adapts_channels_and_head_and_records_the_lineage(stardist_parent, seg_data, tmp_path):
    child = zoo.finetune(zoo.load(stardist_parent), seg_data / "rgb", tmp_path / "child", target=seg_data / "labels",
                         params={"n_rays": 16}, max_steps=10, val_every=5, patch=48,
                         batch_size=4, progress=False, val_fraction=0.25, name="stardist-rgb")
    spec = specs.load(child)
    assert spec.inputs[0].channels == ["red", "green", "blue"] and spec.inputs[0].grey == "repeat"
    assert spec.architecture_params["n_rays"] == 16 and spec.outputs[0].n_channels == 17
    assert spec.training.parent == {"ref": "stardist-tiny@0.1.0", "sha256": sha256_file(stardist_parent / "zoo.yaml")}
    policy = spec.training.config["finetune"]
    assert policy["freeze"] == "none" and policy["parent_channels"] == 1 and policy["channels"] == 3
    assert policy["transfer"]["adapted"] == ["unet.down.0.0.weight"] and "unet.head.weight" in policy["transfer"]["new"]
    assert policy["lr"] == pytest.approx(0.5 * 3e-3) and policy["warmup_steps"] == 10
    metrics = spec.training.metrics
    assert set(metrics["parent_vs_child"]) >= {"ap50", "f1_50"} and "parent_val_loss" in metrics
    assert len(spec.training.data["fingerprint"]) == 64 and spec.training.statistics["std"] > 0
    assert "## Fine-tuning" in (child / "README.md").read_text()
    model = zoo.load(child)
    model.test()
    labels = model.predict(tifffile.imread(seg_data / "rgb" / "n0.tif"))
    assert labels.shape == (64, 64) and labels.dtype == np.int32


@pytest.mark.parametrize("freeze, frozen", [("encoder", ("down.", "bottom.")), ("all-but-head", ("down.", "bottom.", "merge."))])
def test_frozen_stages_keep_their_weights_and_statistics(freeze, frozen, tiny_package, image_folder, tmp_path):
    child = finetune(tiny_package, image_folder, tmp_path / "child", freeze=freeze, max_steps=8, val_every=4,
                     batch_size=4, patch=32, progress=False, val_fraction=0.4, evaluate=False)
    before, after = load_file(str(tiny_package / WEIGHTS)), load_file(str(child / WEIGHTS))
    assert before.keys() == after.keys()
    kept = [k for k in before if k.startswith(frozen)]
    trained = [k for k in before if not k.startswith(frozen) and k.endswith("weight")]
    assert kept and trained
    for k in kept:                             # weights and batch-norm running statistics
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert specs.load(child).training.config["finetune"]["freeze"] == freeze


def test_fine_tuning_an_uninstalled_architecture_is_a_clear_error(package_copy, image_folder, tmp_path):
    path = package_copy / "zoo.yaml"
    path.write_text(path.read_text().replace("id: n2v", "id: mystery-net"))
    with pytest.raises(UnknownArchitectureError, match="cannot fine-tune n2v-tiny@0.1.0.*mystery-net"):
        finetune(package_copy, image_folder, tmp_path / "child")


def test_cli_finetune_push_and_lineage(tiny_package, image_folder, tmp_path):
    home = tmp_path / "home"
    zoo_cli("push", tiny_package, env_home=home)
    out = zoo_cli("finetune", "n2v-tiny", "--data", image_folder, "--out", tmp_path / "child", "--name", "n2v-tiny-ft",
                  "--max-steps", 6, "--val-every", 3, "--batch-size", 4, "--patch", 32, "--freeze", "gradual",
                  "--layer-decay", 0.8, "--val-fraction", 0.4, env_home=home)
    assert "fine-tuned from n2v-tiny@0.1.0" in out.stdout
    zoo_cli("push", tmp_path / "child", env_home=home)
    chain = zoo_cli("lineage", "n2v-tiny-ft", env_home=home).stdout.splitlines()
    assert chain[0].startswith("n2v-tiny-ft@0.1.0")
    assert "n2v-tiny@0.1.0" in chain[1] and "sha256 as published" in chain[1] and "trained from scratch" in chain[1]
    # a child whose recorded parent is not the published one: the chain says so and fails
    shutil.copytree(tmp_path / "child", tmp_path / "forged")
    amend(tmp_path / "forged", lambda s: s.training.parent.update(sha256="0" * 64))
    broken = zoo_cli("lineage", tmp_path / "forged", env_home=home, check=False)
    assert broken.returncode == 1 and "DIFFERS" in broken.stdout
    missing = zoo_cli("finetune", "no-such-model", "--data", image_folder, "--out", tmp_path / "x", env_home=home,
                      check=False)
    assert missing.returncode == 2 and "no-such-model" in missing.stderr and "Traceback" not in missing.stderr


def test_learning_rate_warms_up_then_decays():
    from zoo.trainers.base import lr_factor

    factors = [lr_factor(step, 100, warmup=10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:10]))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] > 0.05
    assert lr_factor(0, 100) == pytest.approx(1.0)          # training from scratch: no warm-up


@pytest.mark.parametrize("arch_id", sorted(architectures.available()))
def test_every_architecture_adapts_its_input_channels_and_names_its_stages(arch_id):
    arch = architectures.get(arch_id)
    small = {"widths": [8, 16], "blocks": [1, 1]} if arch.task == "classification" else {"base_channels": 8, "depth": 2}
    params = dict(specs.load(arch.blueprint_path(2)).architecture_params, **small)
    parent = arch.build_network({**params, "channels": 1})
    child = arch.build_network({**params, "channels": 3})
    report = load_transferable(child, parent.state_dict())
    assert report.adapted and len(report.copied) > 10
    assert [name for name, _ in stages(child)][-1] == "head"
    assert trainable_stages(child, "all-but-head") == 1


def test_early_stopping_and_rehearsal_are_applied_and_recorded(tiny_package, image_folder, tmp_path):
    images = sorted(image_folder.glob("*.tif"))
    child = finetune(tiny_package, None, tmp_path / "child", train_files=images[:2], val_files=images[2:3],
                     rehearsal=Rehearsal(images[3:], 0.3), patience=1, val_every=2, max_steps=300, batch_size=4,
                     patch=32, progress=False, evaluate=False)
    config = specs.load(child).training.config
    assert config["steps_run"] < 300                     # stopped: the validation loss stopped improving
    assert config["finetune"]["rehearsal"] == {"fraction": 0.3, "images": 2}
    assert config["finetune"]["patience"] == 1


def test_a_fine_tuning_that_never_beats_the_parent_keeps_the_parent(tiny_package, image_folder, tmp_path):
    child = finetune(tiny_package, image_folder, tmp_path / "child", lr=50.0, warmup=1, max_steps=6, val_every=3,
                     batch_size=4, patch=32, progress=False, val_fraction=0.4, evaluate=False)
    assert specs.load(child).training.config["selected_step"] == 0
    before, after = load_file(str(tiny_package / WEIGHTS)), load_file(str(child / WEIGHTS))
    assert all(torch.equal(before[k], after[k]) for k in before)
