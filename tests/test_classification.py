"""The classifier: architecture, training on labelled images split by group, held-out scoring,
prediction per image and per object, the CLI, fine-tuning with new classes."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import InputError

CLASSES = {"small": (2.5, 3.5), "large": (7.0, 9.0), "ring": (7.0, 9.0), "dot": (1.0, 1.6)}


def shape_image(kind: str, rng: np.random.Generator, size: int = 36) -> np.ndarray:
    """A grey uint8 image of one object: a small disc, a large disc or a ring, with noise."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size / 2 - 3, size / 2 + 3, 2)
    r = rng.uniform(*CLASSES[kind])
    d = np.hypot(yy - cy, xx - cx)
    obj = (d <= r) if kind != "ring" else ((d <= r) & (d >= r - 3))
    image = 40 + 150 * obj + rng.normal(0, 12, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(root: Path, counts: dict, seed: int = 0, split: str = "train") -> list[dict]:
    """Images under root/images/<class>/, rows for labels.csv; four images per source 'field'."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for kind, n in counts.items():
        (root / "images" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"images/{kind}/{split}_{seed}_{i}.png"
            Image.fromarray(shape_image(kind, rng)).save(root / name)
            rows.append({"file": name, "label": kind, "source": f"{split}-field{i // 4}", "split": split})
    return rows


def write_csv(root: Path, rows: list[dict]) -> Path:
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_blueprint():
    from zoo import architectures, spec as specs

    spec = specs.load(architectures.get("classifier").blueprint_path())
    spec.architecture_params.update(widths=[8, 16, 32], blocks=[1, 1, 1])
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny classifier trained on imbalanced synthetic shapes (small discs 3x the others),
    scored on a held-out split; returns (package, data root)."""
    from zoo.trainers.classification import fit_classifier

    root = tmp_path_factory.mktemp("shapes")
    rows = write_dataset(root, {"small": 72, "large": 24, "ring": 24}, seed=0, split="train")
    rows += write_dataset(root, {"small": 16, "large": 16, "ring": 16}, seed=1, split="test")
    labels = write_csv(root, rows)
    package = fit_classifier(tiny_blueprint(), root, root / "pkg", labels=labels, group_column="source",
                             split_column="split", train_split="train", test_split="test", canvas=32, scale=1.0,
                             max_steps=240, batch_size=16, lr=3e-3, name="shapes", progress=False)
    return package, root


def test_the_network_takes_any_size_and_names_its_stages():
    import torch

    from zoo.nn.resnet import build

    network = build(channels=3, n_classes=5, widths=[8, 16], blocks=[1, 2]).eval()
    for size in (17, 32, 50):
        assert network(torch.zeros(2, 3, size, size + 3)).shape == (2, 5)
    assert [name for name, _ in network.stages()] == ["stem", "stage0", "stage1", "head"]
    with pytest.raises(ValueError, match="at least 2 classes"):
        build(n_classes=1)


def test_groups_never_straddle_the_split_and_weights_balance_classes():
    from zoo.trainers.classification import Example, class_weights, split_by_group

    examples = [Example(Path(f"{g}_{i}.png"), "a" if i % 3 else "b", f"g{g}") for g in range(20) for i in range(5)]
    train, val = split_by_group(examples, 0.2, seed=3)
    assert {e.group for e in train}.isdisjoint({e.group for e in val})
    assert 0.15 <= len(val) / len(examples) <= 0.3
    weights = class_weights([0] * 90 + [1] * 10, 2)
    assert weights[1] / weights[0] == pytest.approx(9.0) and np.average(weights, weights=[90, 10]) == pytest.approx(1.0)
    with pytest.raises(InputError, match="every class needs training images"):
        class_weights([0, 0, 0], 2)


def test_a_trained_classifier_scores_held_out_data_and_predicts(trained):
    import zoo
    from zoo.registry import LocalRegistry

    package, root = trained
    model = zoo.load(package)
    spec = model.spec
    assert model.is_classifier and model.class_names == ["large", "ring", "small"]
    held = spec.training.metrics["held_out"]
    assert held["per_class"]["small"]["support"] == 16 and sum(map(sum, held["confusion"]["matrix"])) == 48
    assert held["macro_f1"] >= 0.85, held             # held-out images of fields training never saw
    card = (package / "README.md").read_text()
    assert "macro-F1" in card and "![confusion matrix](confusion.png)" in card and (package / "confusion.png").is_file()
    assert spec.training.config["class_weights"][2] < spec.training.config["class_weights"][0]   # imbalance weighed

    rng = np.random.default_rng(7)
    label, probabilities = model.predict(shape_image("ring", rng))
    assert probabilities.shape == (3,) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert label == model.class_names[int(np.argmax(probabilities))]
    with pytest.raises(InputError, match="one image"):
        model.predict(np.stack([shape_image("ring", rng)] * 2), axes="byx")
    zoo.api.publish(package, LocalRegistry(root / "registry"))  # torch and ONNX reproduce the test tensors
    assert zoo.load(package, runtime="torch").predict(shape_image("small", rng))[0] in model.class_names


def test_classifying_every_object_of_a_label_image(trained):
    import zoo

    package, _ = trained
    model = zoo.load(package)
    rng = np.random.default_rng(11)
    canvas = np.full((80, 120), 40, np.uint8)
    labels = np.zeros((80, 120), np.int32)
    kinds = {5: "small", 900: "large", 31: "ring"}                # ids need not be consecutive
    for (label, kind), x0 in zip(kinds.items(), (0, 42, 84)):
        crop = shape_image(kind, rng)
        canvas[20:56, x0:x0 + 36] = crop
        labels[20:56, x0:x0 + 36][crop > 110] = label
    rows = model.classify_objects(canvas, labels, margin=0.5)
    assert [r["label"] for r in rows] == [5, 31, 900]
    got = {r["label"]: r["class"] for r in rows}
    assert sum(got[k] == v for k, v in kinds.items()) >= 2, got
    assert all(abs(sum(r[f"p_{c}"] for c in model.class_names) - 1) < 1e-3 for r in rows)


def test_the_command_line_classifies_images_into_a_table(trained, tmp_path, capsys):
    from zoo.cli import main as cli

    package, root = trained
    images = sorted((root / "images" / "ring").glob("test_*.png"))[:3] + \
        sorted((root / "images" / "small").glob("test_*.png"))[:2]
    assert cli(["predict", str(package), *map(str, images), "-o", str(tmp_path / "classes.csv")]) == 0
    with open(tmp_path / "classes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [str(p) for p in images]
    assert set(rows[0]) == {"file", "class", "probability", "p_large", "p_ring", "p_small"}
    assert sum(r["class"] == ("ring" if "ring" in r["file"] else "small") for r in rows) >= 4
    assert "5 images classified" in capsys.readouterr().out


def test_training_from_class_folders_via_the_cli_and_clear_errors(tmp_path):
    from zoo.cli import main as cli
    from zoo.trainers.classification import read_examples

    write_dataset(tmp_path, {"small": 8, "large": 8}, seed=2)
    examples = read_examples(tmp_path / "images")
    assert {e.label for e in examples} == {"small", "large"} and len(examples) == 16
    assert cli(["train", "classifier", "--data", str(tmp_path / "images"), "--out", str(tmp_path / "pkg"),
                "--max-steps", "4", "--batch-size", "4", "--canvas", "32", "--val-fraction", "0.25"]) == 0
    import zoo

    assert zoo.load(tmp_path / "pkg").class_names == ["large", "small"]
    (tmp_path / "one" / "only").mkdir(parents=True)
    first = sorted((tmp_path / "images" / "small").iterdir())[0]
    first.rename(tmp_path / "one" / "only" / first.name)
    with pytest.raises(InputError, match="at least two classes"):
        read_examples(tmp_path / "one")
    assert cli(["train", "classifier", "--data", str(tmp_path / "one"), "--out", str(tmp_path / "p2")]) == 2


def test_finetuning_to_new_classes_gets_a_new_head_and_keeps_the_body(trained, tmp_path):
    import zoo

    package, _ = trained
    write_dataset(tmp_path / "new", {"small": 12, "ring": 12, "dot": 12}, seed=5)   # dot: a class the parent never saw
    child_path = zoo.finetune(zoo.load(package), tmp_path / "new" / "images", tmp_path / "child", max_steps=20,
                              batch_size=8, freeze="encoder", patience=None, val_every=10)
    child = zoo.load(child_path)
    assert child.class_names == ["dot", "ring", "small"]
    policy = child.spec.training.config["finetune"]
    assert policy["new_head"] and policy["transfer"]["new"] == ["head.weight", "head.bias"]
    assert child.spec.training.parent["ref"] == "shapes@0.1.0"
    child.test()
