"""The ``zoo`` command: a thin layer over the Python API. Imports are lazy so that it starts fast."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import ZooError


def _registry(args, url=None):
    """The registry of ``--registry`` (a folder, ``local``, ``http(s)://...`` or ``hf://ORG``), or ``url``."""
    from .registry.remote import registry_for

    return registry_for(url or args.registry, offline=args.offline or None)


def _registry_and_ref(args, text: str):
    """A reference that may carry its registry: ``hf://ORG/NAME@1.0``, ``http://host/root/NAME``."""
    from .registry.remote import is_url, split_ref

    if is_url(text):
        url, ref = split_ref(text)
        return _registry(args, url), ref
    return _registry(args), text


def _progress(label: str):
    """A tqdm progress callback on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="tile", leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


# ---------------------------------------------------------------------------- commands
def cmd_list(args) -> int:
    _print_rows(_registry(args, args.remote).entries(), "(no packages)")
    return 0


def _print_rows(rows: list[dict], empty: str) -> None:
    """One package per line, tab-separated: name, latest version, task, description."""
    if not rows:
        print(empty, file=sys.stderr)
    for row in rows:
        print(f"{row['name']}\t{row['latest']}\t{row['task']}\t{row['description']}")


def cmd_info(args) -> int:
    from . import spec as specs

    reg = _registry(args)
    spec = reg.spec(args.ref)
    if args.yaml:
        print(specs.dump(spec), end="")
        return 0
    name, _ = reg.resolve(args.ref)
    print(f"{spec.ref}  ({spec.task}, architecture {spec.architecture_id})")
    print(f"  {spec.description.strip()}")
    from packaging.version import Version

    print(f"  versions: {', '.join(sorted(reg.versions(name), key=Version))}")
    print(f"  license: {spec.license}; authors: {', '.join(a['name'] for a in spec.authors)}")
    for group in ("inputs", "outputs"):
        for t in getattr(spec, group):
            print(f"  {group[:-1]} {t.name}: axes {t.axes}, {t.dtype}, channels {t.channels or ['-']}"
                  + (f", halo {t.halo}" if t.halo else ""))
    if spec.training and spec.training.metrics:
        print("  metrics (held-out):")
        for k, v in spec.training.metrics.items():
            print(f"    {k}: {v}")
    if spec.training and spec.training.parent:
        print(f"  parent: {spec.training.parent['ref']}")
    return 0


def cmd_pull(args) -> int:
    from .registry import LocalRegistry
    from .registry.archives import names_archive, pull_archive

    if names_archive(args.ref):
        from .paths import zoo_cache

        spec, path = pull_archive(args.ref, zoo_cache(), sha256=args.sha256)
        print(f"{spec.ref}\t{path}")
        return 0
    registry, ref = _registry_and_ref(args, args.ref)
    spec, path = registry.pull(ref)
    how = "copied" if isinstance(registry, LocalRegistry) else "downloaded"
    print(f"{spec.ref}\t{path}\t{registry.bytes_moved} bytes {how}" + (" (already in the cache)" * (not registry.bytes_moved)))
    return 0


def cmd_push(args) -> int:
    if args.dry_run:
        return _push_plan(args)
    result = _registry(args, args.to).publish(args.package, reproduce=not args.no_test)
    state = "published" if result.created else "already published (identical)"
    print(f"{result.ref} {state}" + (f" to {args.to}" if args.to else f": {result.path}"))
    return 0


def cmd_check(args) -> int:
    """Check the registry folder and the cache after a crash; ``--repair`` removes what interrupted
    operations left behind (never a listed version)."""
    from .paths import zoo_cache
    from .registry.health import check_cache, check_registry, repair

    registry = _registry(args)
    targets = [("cache", zoo_cache(), check_cache)]
    if isinstance(getattr(registry, "root", None), Path):
        registry.index()                                   # seeds the embedded registry on first use
        targets.insert(0, ("registry", registry.root, check_registry))
    damaged = 0
    for label, path, check in targets:
        health = check(path)
        print(f"{label} {path}: {health.checked} verified, {len(health.problems)} damaged, "
              f"{len(health.leftovers)} left over by interrupted operations")
        for problem in health.problems:
            print(f"  damaged: {problem}")
        if args.repair and health.leftovers:
            print(f"  removed {repair(health)} leftover(s)")
        damaged += len(health.problems)
    if damaged:
        print("damaged versions are never repaired automatically: pull or publish them again", file=sys.stderr)
    return 1 if damaged else 0


def cmd_pack(args) -> int:
    from . import spec as specs
    from .hashing import sha256_file
    from .package.archive import pack

    spec = specs.load(args.package)
    out = pack(args.package, args.output or Path(f"{spec.name}-{spec.version}.zip"))
    print(f"{out}\tsha256 {sha256_file(out)}")
    return 0


def _push_plan(args) -> int:
    """What ``push --to hf://ORG`` would send: repository, tag, files and model card."""
    from . import spec as specs
    from .errors import InputError

    if not (args.to or "").startswith("hf://"):
        raise InputError("--dry-run shows a Hugging Face upload: give --to hf://ORG")
    from .registry.hf import plan_upload

    plan = plan_upload(specs.load(args.package), Path(args.package), args.to[len("hf://"):].strip("/"))
    print(f"repository {plan.repo_id}, tag {plan.tag}")
    for path_in_repo in sorted(plan.files):
        print(f"  {path_in_repo}")
    print("  README.md (model card)\n" + plan.card)
    return 0


def cmd_mirror(args) -> int:
    from .registry.remote import mirror

    counts = mirror(args.source, args.destination)
    print(f"mirrored {args.source} -> {args.destination}: {counts['copied']} version(s) copied, "
          f"{counts['skipped']} already there")
    return 0


def cmd_search(args) -> int:
    from .registry.remote import search

    rows = search(_registry(args, args.remote).entries(), text=" ".join(args.text) or None, task=args.task,
                  tag=args.tag, architecture=args.architecture, axes=args.axes)
    _print_rows(rows, "(no package matches)")
    return 0


def cmd_cache(args) -> int:
    from .paths import zoo_cache
    from .registry.cache import listing, prune

    if args.action == "ls":
        rows = listing(zoo_cache())
        for row in rows:
            print(f"{row['name']}@{row['version']}\t{row['sha256']}\t{row['bytes']}\t{row['path']}")
        if not rows:
            print(f"(the cache {zoo_cache()} holds no package)", file=sys.stderr)
        return 0
    freed, removed = prune(zoo_cache(), keep_latest=not args.all)
    print(f"removed {len(removed)} item(s), {freed} bytes freed from {zoo_cache()}")
    return 0


def cmd_validate(args) -> int:
    from . import spec as specs
    from .model import Model, runtimes_of

    target = Path(args.target)
    if target.is_file():
        spec = specs.load(target)
        print(f"{target}: valid {spec.kind} spec ({spec.ref})")
        if spec.kind == "blueprint" or target.name != specs.SPEC_FILE:
            return 0
        root = target.parent
    elif target.is_dir():
        spec, root = specs.load(target), target
    else:
        spec, root = _registry(args).pull(args.target)
    if spec.kind != "package":
        print(f"{root}: valid blueprint ({spec.ref})")
        return 0
    for runtime in runtimes_of(spec):
        ratio = Model(spec, root, runtime=runtime, device="cpu").test()
        print(f"{spec.ref}: {runtime} reproduces the test tensors (max error {ratio:.2g}x tolerance)")
    print(f"{spec.ref}: valid package, every sha256 verified ({root})")
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    import zoo

    from .errors import InputError, NotFoundError
    from .imageio import check_format, check_output, figure, open_lazy, preview, write_image
    from .runtime.stream import STREAM_SUFFIXES

    for path in args.inputs:
        if not path.exists():
            raise NotFoundError(f"image not found: {path}")
    model = zoo.load(args.ref, runtime=args.runtime, device=args.device, registry=_registry(args))
    if model.is_classifier:
        return _predict_classes(model, args)
    check_format(args.output, "int32" if model.makes_instances and not args.raw else model.spec.outputs[0].dtype)
    if len(args.inputs) != 1:
        raise InputError(f"{model.spec.ref} predicts one image per call (-o names its output); got "
                         f"{len(args.inputs)} images: run it once per image")
    args.input = args.inputs[0]
    update, close = _progress(f"{model.spec.name}")
    options = dict(axes=args.axes, tile=args.tile, batch_size=args.batch_size, blend=args.blend, progress=update,
                   raw=args.raw)
    written = dict(overwrite=args.overwrite, source=args.input)
    streamed = args.output.suffix.lower() in STREAM_SUFFIXES and not args.uncertainty   # uncertainty: in memory
    result = confidence = None
    try:
        if streamed:   # block by block, in bounded memory
            shape = model.predict_file(args.input, args.output, overwrite=args.overwrite, **options)
            print(f"{args.output}: {shape} from {model.spec.ref} ({model.runtime}, streamed)")
        else:
            check_output(args.output, **written)       # before the work, as the streamed path does
            image, stated = open_lazy(args.input)
            if args.uncertainty:
                result, confidence = _with_uncertainty(model, np.asarray(image), args.axes or stated, args)
            else:
                result = model.predict(np.asarray(image), **{**options, "axes": args.axes or stated})
            write_image(args.output, result, **written)
            print(f"{args.output}: {result.shape} {result.dtype} from {model.spec.ref} ({model.runtime})")
    finally:
        close()
    _report_shift(model, args, result)
    if args.figure:
        labels = model.makes_instances and not args.raw
        panels = [("input", args.input, None), (model.spec.outputs[0].name, args.output, "labels" if labels else None)]
        if args.reference:
            panels.append(("reference", args.reference, "labels" if labels else None))
        flat = [(title, preview(open_lazy(path)[0]), *([kind] if kind else []))
                for title, path, kind in panels]
        figure(args.figure, flat)
        print(f"{args.figure}: figure ({' | '.join(panel[0] for panel in flat)})")
    if args.measure:
        if not model.makes_instances or args.raw:
            raise InputError("--measure needs instance labels: a segmentation model, without --raw")
        table = args.output.with_name(args.output.stem.split(".")[0] + "_objects.csv")
        rows = _measure(open_lazy(args.output)[0], open_lazy(args.input)[0], args.classifier, 0.0, args)
        from .trust.calibrate import flag_rows

        flag_rows(model, rows)      # size_warning: objects far outside the training objects' sizes
        if confidence is not None:
            for row in rows:
                row["confidence"] = confidence.get(row["label"])
        print(f"{table}: {len(rows)} objects")
        from .quantify.measure import write_table

        write_table(rows, table)
    return 0


def _with_uncertainty(model, image, axes, args):
    """The prediction and ``OUT_uncertainty.tif`` (test-time augmentation, and the --ensemble
    packages); returns (prediction, per-object confidence or None)."""
    import zoo

    from .imageio import write_image
    from .trust.uncertainty import predict_with_uncertainty

    members = [model] + [zoo.load(ref, runtime=args.runtime, device=args.device, registry=_registry(args))
                         for ref in args.ensemble or []]
    result = predict_with_uncertainty(members, image, axes=axes, tta=not args.no_tta)
    target = args.output.with_name(args.output.stem.split(".")[0] + "_uncertainty.tif")
    write_image(target, result.uncertainty, overwrite=args.overwrite, source=args.input)
    what = "foreground disagreement 0-1" if model.makes_instances else "standard deviation, output units"
    print(f"{target}: uncertainty ({what}) over {result.members} members")
    return result.prediction, result.confidence


def _report_shift(model, args, result) -> None:
    """The dataset-shift check: a warning that says what differs, and ``--report OUT.json``."""
    import json

    import numpy as np

    from .imageio import open_lazy

    report = None
    if model.spec.trust:
        image, stated = open_lazy(args.input)
        centre = tuple(slice(max(0, (s - 1024) // 2), max(0, (s - 1024) // 2) + 1024) for s in image.shape)
        if result is not None and np.shape(result)[:2] != np.shape(image)[:2]:
            result = None
        image = np.asarray(image[centre]) if image.ndim <= 3 else np.asarray(image)
        labels = np.asarray(result)[centre[:np.ndim(result)]] if result is not None and model.makes_instances else None
        report = model.check_shift(image, axes=args.axes or stated, prediction=labels)
        if report.shift_warning:
            print(f"warning: {report.summary()}", file=sys.stderr)
    if args.report:
        body = report.to_dict() if report else {
            "shift_score": None, "shift_threshold": None, "shift_warning": None,
            "shift_messages": [f"{model.spec.ref} has no shift check (its package records no training statistics)"]}
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"model": model.spec.ref, "input": str(args.input),
                                           "output": str(args.output), **body}, indent=1))
        print(f"{args.report}: report (shift score {body['shift_score']})")


def _measure(labels, image, classifier_ref, margin: float, args) -> list[dict]:
    import numpy as np

    import zoo

    from .quantify.measure import measure_objects

    classifier = zoo.load(classifier_ref, runtime=args.runtime, device=args.device, registry=_registry(args)) \
        if classifier_ref else None
    if classifier is not None and not classifier.is_classifier:
        from .errors import InputError

        raise InputError(f"--classifier {classifier_ref}: {classifier.spec.ref} is a {classifier.spec.task} model, "
                         "not a classifier")
    return measure_objects(np.asarray(labels), None if image is None else np.asarray(image), classifier, margin)


def _predict_classes(model, args) -> int:
    """A classifier over one or more images: one row per image (file, class, probabilities)."""
    from .imageio import read_image
    from .quantify.measure import write_table

    rows = []
    for path in args.inputs:
        label, probabilities = model.predict(read_image(path), axes=args.axes)
        rows.append({"file": str(path), "class": label, "probability": round(float(probabilities.max()), 4),
                     **{f"p_{name}": round(float(p), 4) for name, p in zip(model.class_names, probabilities)}})
    write_table(rows, args.output)
    counts = {name: sum(r["class"] == name for r in rows) for name in model.class_names}
    print(f"{args.output}: {len(rows)} images classified by {model.spec.ref} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def cmd_measure(args) -> int:
    from .imageio import read_image
    from .quantify.measure import write_table

    rows = _measure(read_image(args.labels), read_image(args.image) if args.image else None, args.classifier,
                    args.margin, args)
    write_table(rows, args.output)
    print(f"{args.output}: {len(rows)} objects measured")
    return 0


def cmd_track(args) -> int:
    import numpy as np

    from .imageio import read_image
    from .quantify.tracking import track

    frames = [read_image(p) for p in args.labels]
    if len(frames) == 1 and frames[0].ndim >= 3:
        frames = list(frames[0])                  # one T-stack
    result = track([np.asarray(f) for f in frames], max_distance=args.max_distance,
                   divisions=not args.no_divisions, gap_closing=not args.no_gap_closing)
    result.write(args.output)
    print(f"{args.output}: {len(result.tracks)} tracks over {len(frames)} frames, {len(result.divisions())} divisions "
          "(res_track.txt, tracks.csv, relabelled masks)")
    return 0


def _blueprint(name: str, dims: int) -> Path:
    """A blueprint file, or the one an installed architecture ships (``care``, ``n2v`` ...)."""
    path = Path(name)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return path
    from . import architectures

    return architectures.get(name).blueprint_path(dims)


def cmd_evaluate(args) -> int:
    import zoo

    from .evaluate import evaluate_pairs, summary, write_figure, write_table
    from .trainers.data import list_images, match_targets

    model = zoo.load(args.ref, runtime=args.runtime, device=args.device, registry=_registry(args))
    images = list_images(args.data)
    targets = match_targets(images, args.target)
    if args.compare:
        return _evaluate_against(model, zoo.load(args.compare, runtime=args.runtime, device=args.device,
                                                 registry=_registry(args)), images, targets, args)
    if model.makes_instances:
        return _evaluate_segmentation(model, images, targets, args.out)
    rows = evaluate_pairs(model, images, targets, axes=args.axes)
    table = write_table(rows, args.out / "metrics.csv")
    fig = write_figure(model, images[0], targets[0], args.out / "figure.png", axes=args.axes)
    mean = summary(rows)
    print(f"{model.spec.ref} on {mean['n_images']} image(s): PSNR {mean['psnr_input']:.2f} -> "
          f"{mean['psnr_output']:.2f} dB, SSIM {mean['ssim_input']:.3f} -> {mean['ssim_output']:.3f}")
    print(f"{table}\n{fig}")
    return 0


def _evaluate_against(model, parent, images, targets, args) -> int:
    """``evaluate --compare``: both models and the classical baseline on the same data."""
    from .evaluate import compare, describe, write_comparison

    report = compare(model, images, targets, parent=parent, axes=args.axes)
    path = write_comparison(report, args.out / "comparison.json")
    print("\n".join(describe(report, names=(model.spec.ref, parent.spec.ref))))
    for warning in report["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(path)
    return 0


def _evaluate_segmentation(model, images, labels, out: Path) -> int:
    import json

    from .segmentation.evaluate import evaluate_segmentation, write_table

    results = evaluate_segmentation(model, images, labels)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    print(f"{model.spec.ref} on {len(images)} image(s), objects matched by IoU (Hungarian), next to the "
          f"Otsu + watershed baseline:")
    print(write_table(results, out / "metrics.md"), end="")
    print(f"{out / 'metrics.json'}\n{out / 'metrics.md'}")
    return 0


def cmd_train(args) -> int:
    from . import spec as specs
    from .trainers.fit import fit

    blueprint = _blueprint(args.blueprint, args.dims)
    if specs.load(blueprint).task.split("/")[0] == "classification":
        return _train_classifier(blueprint, args)
    path = fit(blueprint, args.data, args.out, target=args.target,
               name=args.name, version=args.version,
               val_fraction=args.val_fraction, patch=args.patch, batch_size=args.batch_size,
               max_steps=args.max_steps, lr=args.lr, seed=args.seed, accelerator=args.accelerator,
               devices=args.devices, precision=args.precision, strategy=args.strategy,
               progress=sys.stderr.isatty(), overwrite=args.overwrite)
    print(f"package written: {path} (publish it with `zoo push {path}`)")
    return 0


def _train_classifier(blueprint, args) -> int:
    from .trainers.classification import fit_classifier

    if args.target is not None:
        from .errors import InputError

        raise InputError("a classifier learns from labelled images (class folders or --labels CSV), not --target")
    path = fit_classifier(blueprint, args.data, args.out, labels=args.labels, group_column=args.group_column,
                          split_column=args.split_column, train_split=args.train_split, test_split=args.test_split,
                          val_fraction=args.val_fraction, canvas=args.canvas, scale=args.scale, name=args.name,
                          version=args.version, batch_size=args.batch_size, max_steps=args.max_steps, lr=args.lr,
                          seed=args.seed, progress=sys.stderr.isatty(), overwrite=args.overwrite,
                          accelerator=args.accelerator, devices=args.devices, precision=args.precision)
    print(f"package written: {path} (publish it with `zoo push {path}`)")
    return 0


def cmd_finetune(args) -> int:
    from .trainers.data import Rehearsal, list_images, match_targets
    from .trainers.finetune import finetune

    rehearsal = None
    if args.rehearsal_data:
        images = list_images(args.rehearsal_data)
        rehearsal = Rehearsal(images, args.rehearsal,
                              match_targets(images, args.rehearsal_target) if args.rehearsal_target else None)
    params = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            from .errors import InputError

            raise InputError(f"--set takes KEY=VALUE (e.g. n_rays=64), got '{item}'")
        from .spec import parse_yaml

        params[key] = parse_yaml(value, source=f"--set {key}")
    path = finetune(args.ref, args.data, args.out, target=args.target, name=args.name, version=args.version,
                    val_fraction=args.val_fraction, channels=args.channels, params=params, freeze=args.freeze,
                    unfreeze_every=args.unfreeze_every, lr=args.lr, warmup=args.warmup,
                    layer_decay=args.layer_decay, patience=args.patience or None, val_every=args.val_every,
                    rehearsal=rehearsal, patch=args.patch, batch_size=args.batch_size, max_steps=args.max_steps,
                    seed=args.seed, registry=_registry(args), progress=True if sys.stderr.isatty() else "lines",
                    overwrite=args.overwrite, accelerator=args.accelerator, devices=args.devices,
                    precision=args.precision)
    from . import spec as specs

    training = specs.load(path).training
    print(f"package written: {path} (fine-tuned from {training.parent['ref']}; publish it with `zoo push {path}`)")
    _print_finetune_result(path, training)
    return 0


def _print_finetune_result(path: Path, training) -> None:
    """The child's validation numbers beside the parent's and the classical baseline's."""
    from .evaluate import describe

    metrics = training.metrics
    if "parent_val_loss" in metrics:
        print(f"validation loss: parent {metrics['parent_val_loss']:.4g}, fine-tuned {metrics['val_loss']:.4g}")
    report = metrics.get("finetune_report")
    if report is None:
        print("compared by validation loss only (no targets to score against): score both on held-out pairs, beside "
              f"the classical baseline, with `zoo evaluate {path} --data IMAGES --target TARGETS --compare "
              f"{training.parent['ref']}`")
        return
    table = metrics.get("parent_vs_child", {})
    print("\n".join(describe({**report, "metrics": table}, names=("fine-tuned", "parent"))))


def cmd_lineage(args) -> int:
    from .lineage import chain, describe

    links = chain(_registry(args), args.ref)
    print(describe(links))
    return 0 if all(link.status in ("package", "verified") for link in links) else 1


def cmd_serve(args) -> int:
    from .serve.app import Limits
    from .serve.server import serve

    limits = Limits(max_body=args.max_body_mb << 20, max_pixels=args.max_pixels, max_batch=args.max_batch,
                    max_wait=args.max_wait_ms / 1000, max_queue=args.max_queue, timeout=args.timeout)
    print(f"serving {', '.join(args.refs) or 'no model yet'} on http://{args.host}:{args.port} "
          f"(API: /docs, /openapi.json)", file=sys.stderr, flush=True)
    serve(args.refs, host=args.host, port=args.port, runtime=args.runtime, device=args.device, token=args.token,
          limits=limits, registry=_registry(args))
    return 0


def cmd_export(args) -> int:
    registry, ref = _registry_and_ref(args, args.package)
    root = Path(ref) if Path(ref).is_dir() else registry.pull(ref)[1]
    if args.format == "bioimageio":
        from .export.bioimageio import export, zip_folder

        rdf, report = export(root, args.out)
        print(f"bioimage.io model description written: {rdf} (check it: bioimageio test {rdf})")
        for line in report.mapped:
            print(f"  mapped: {line}")
        for line in report.unmapped:
            print(f"  no bioimage.io equivalent (left to bioimage-zoo, documented): {line}")
        if args.zip:
            print(f"zipped: {zip_folder(args.out)}")
        return 0
    from .export.triton import export

    folder = export(root, args.out, max_batch=args.max_batch,
                    gpu={"auto": None, "gpu": True, "cpu": False}[args.instance_kind])
    print(f"Triton model repository written: {folder} (run: tritonserver --model-repository {args.out})")
    return 0


def cmd_import(args) -> int:
    if args.format == "onnx":
        from .export.onnx_import import import_onnx

        path = import_onnx(args.source, args.out, name=args.name, axes=args.axes, output_axes=args.output_axes,
                           input_ops=args.input_op, output_ops=args.output_op, test_input=args.test_input,
                           halo=args.halo, step=args.step, minimum=args.min, channels=args.channels,
                           version=args.version, description=args.description, authors=args.author or (),
                           license=args.license, task=args.task, tags=args.tag or (), overwrite=args.overwrite)
    else:
        from .export.bioimageio_import import import_package

        path = import_package(args.source, args.out, name=args.name, overwrite=args.overwrite, weights=args.weights)
    from . import spec as specs

    spec = specs.load(path)
    kind = "an ONNX graph alone: runs with --runtime onnx, cannot be fine-tuned" if spec.graph_only else \
        f"architecture {spec.architecture_id}: runs in torch and ONNX Runtime, can be fine-tuned"
    print(f"package written: {path} ({spec.ref}, {kind}); publish it with `zoo push {path}`")
    return 0


def cmd_bump(args) -> int:
    from . import spec as specs
    from .package.bump import bump

    path = bump(args.package, args.out, args.version, weights=args.weights, test_input=args.test_input,
                halo=args.halo, input_ops=args.input_op, output_ops=args.output_op, axes=args.axes,
                description=args.description, overwrite=args.overwrite)
    old, spec = specs.load(args.package), specs.load(path)
    print(f"package written: {path} ({spec.ref}, after {old.ref}: test output recomputed by the zoo, every sha256 "
          f"rewritten); publish it with `zoo push {path}`")
    if old.trust:
        print(f"note: {old.ref}'s shift check is not carried over (it was calibrated for that version); "
              "calibrate one for the new version (scripts/add_trust.py)")
    return 0


def _package_change_options(p: argparse.ArgumentParser) -> None:
    """What a graph import sets and a new version may change: test input, halo, ops, description."""
    p.add_argument("--test-input", type=Path, help="raw test input (.npy, the graph's axes or the natural layout); "
                                                   "default: synthetic nuclei (import) or the package's own (bump)")
    p.add_argument("--halo", type=int, help="receptive-field margin in pixels that every tile gets (per spatial axis)")
    p.add_argument("--input-op", action="append", metavar="OP[:K=V,...]",
                   help="preprocessing op of the op registry, e.g. percentile_normalize:low=1,high=99.8 (repeatable, "
                        "in order; see docs/publishing.md)")
    p.add_argument("--output-op", action="append", metavar="OP[:K=V,...]",
                   help="postprocessing op, e.g. sigmoid or restore_input_scale:input=input (repeatable)")
    p.add_argument("--description")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out package")


# ---------------------------------------------------------------------------- parser
def _data_options(p: argparse.ArgumentParser, default_name: str) -> None:
    """The training data and the package to write, for train and finetune."""
    p.add_argument("--data", type=Path, required=True, help="folder of training images (TIFF/PNG/NPY/Zarr)")
    p.add_argument("--target", type=Path, help="folder of targets or label images, same file names (care, n2n, "
                                               "segmentation)")
    p.add_argument("--out", type=Path, required=True, help="package folder to write")
    p.add_argument("--name", help=f"package name (default: {default_name})")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--val-fraction", type=float, default=0.15, help="fraction of images for validation")


def _lightning_options(p: argparse.ArgumentParser) -> None:
    """Options that pass straight to Lightning, and --overwrite, for train and finetune."""
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    p.add_argument("--devices", default="auto", help="Lightning devices, e.g. 1, 2 or auto")
    p.add_argument("--precision", default="32-true", help="Lightning precision, e.g. 32-true, 16-mixed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="bioimage-zoo: pretrained models for microscopy")
    parser.add_argument("--registry", help="registry: a folder, local (default: $ZOO_HOME/registry), "
                                           "http(s)://HOST/ROOT (read-only) or hf://ORG")
    parser.add_argument("--offline", action="store_true",
                        help="resolve from the cache alone (also ZOO_OFFLINE=1 or HF_HUB_OFFLINE=1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (providers, files)")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"bioimage-zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list packages in the registry, one per line, name first")
    p.add_argument("--remote", help="list this registry instead (folder, http(s)://..., hf://ORG)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("search", help="find packages by text, task, tag, architecture or input axes")
    p.add_argument("text", nargs="*", help="words that must all appear in the name, description or tags")
    p.add_argument("--task", help="e.g. segmentation, segmentation/instance, restoration/denoising")
    p.add_argument("--tag")
    p.add_argument("--architecture", help="architecture id, e.g. stardist")
    p.add_argument("--axes", help="input axes, e.g. bcyx or bczyx")
    p.add_argument("--remote", help="search this registry instead (folder, http(s)://..., hf://ORG)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("mirror", help="copy every package of one registry into another, verifying hashes (resumable)")
    p.add_argument("source", help="folder, local, http(s)://HOST/ROOT or hf://ORG")
    p.add_argument("destination", help="folder, local or hf://ORG")
    p.set_defaults(func=cmd_mirror)

    p = sub.add_parser("cache", help="the package cache: ls lists it, prune removes leftovers and older versions")
    p.add_argument("action", choices=["ls", "prune"])
    p.add_argument("--all", action="store_true", help="prune: remove every cached package")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("info", help="describe a package")
    p.add_argument("ref", help="NAME[@VERSION]")
    p.add_argument("--yaml", action="store_true", help="print its zoo.yaml")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("pull", help="fetch a package into the cache, verifying every sha256")
    p.add_argument("ref", help="NAME[@VERSION] (e.g. n2v-w2s@^0.1), or REGISTRY_URL/NAME[@VERSION] "
                               "(hf://ORG/NAME@1.0, http://HOST/ROOT/NAME), or a package archive "
                               "(PKG.zip, https://HOST/PKG.zip)")
    p.add_argument("--sha256", help="with an archive: the sha256 its author published (checked before unpacking)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("check", help="verify the registry folder and the cache (after a crash)")
    p.add_argument("--repair", action="store_true", help="remove what interrupted operations left behind")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("pack", help="write a package folder as one .zip (the same bytes every time)")
    p.add_argument("package", type=Path, help="package folder (holding zoo.yaml)")
    p.add_argument("-o", "--output", type=Path, help="the .zip to write (default: NAME-VERSION.zip here)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("push", help="publish a package folder or archive to the registry")
    p.add_argument("package", type=Path, help="package folder (holding zoo.yaml) or archive (.zip, .tar.gz)")
    p.add_argument("--no-test", action="store_true", help="skip reproducing the test tensors")
    p.add_argument("--to", help="registry to publish to: a folder, local (default) or hf://ORG")
    p.add_argument("--dry-run", action="store_true", help="with --to hf://ORG: print the repository, tag, files "
                                                          "and model card that would be sent, send nothing")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("validate", help="validate a spec file, a package folder or a registry package")
    p.add_argument("target", help="SPEC.yaml, PACKAGE_DIR or NAME[@VERSION]")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("predict", help="run a model on an image (tiled)")
    p.add_argument("ref", help="NAME[@VERSION] or a package folder")
    p.add_argument("inputs", type=Path, nargs="+", metavar="input",
                   help="image: TIFF/OME-TIFF, OME-Zarr, PNG, JPEG or NPY (classifiers: one or more images)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output image: .tif, .zarr or .npy (any output, written block by block), or .png (labels "
                        "and 8/16-bit images only; not the float output of a restoration model); classifiers: a .csv "
                        "(or .parquet) table, one row per image")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output of the same kind (a file, "
                                                            "or an OME-Zarr the zoo wrote); never the input")
    p.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--axes", help="axes of the input when the file does not say, e.g. yx, cyx, yxc, tyx, tczyx "
                                  "(t, b and, for a 2D model, z are predicted one image at a time)")
    p.add_argument("--tile", type=int, help="tile size in pixels per axis, context included "
                                            "(default: chosen from free memory)")
    p.add_argument("--batch-size", type=int, help="tiles per network call (default: from free memory)")
    p.add_argument("--blend", type=int, help="pixels cross-faded between neighbouring tiles "
                                             "(default a quarter of the halo; 0 = crop only)")
    p.add_argument("--figure", type=Path, help="also write a PNG figure: input | output")
    p.add_argument("--reference", type=Path, help="a reference image to add to the figure")
    p.add_argument("--raw", action="store_true", help="segmentation models: write the network's outputs "
                                                      "(probabilities, distances, flows) instead of instance labels")
    p.add_argument("--measure", action="store_true", help="segmentation models: also write one row per object "
                                                          "(OUT_objects.csv: centroid, area, intensities, shape)")
    p.add_argument("--classifier", help="with --measure: a classifier (NAME[@VERSION]) for each object's class")
    p.add_argument("--report", type=Path, help="write a JSON report: shift_score, shift_threshold, shift_warning "
                                               "and what differs from the training data")
    p.add_argument("--uncertainty", action="store_true", help="also write OUT_uncertainty.tif: disagreement under "
                                                              "8 flips/rotations (and --ensemble models); with "
                                                              "--measure, a confidence per object")
    p.add_argument("--ensemble", action="append", metavar="REF", help="with --uncertainty: another package of the "
                                                                      "same task to disagree with (repeatable)")
    p.add_argument("--no-tta", action="store_true", help="with --uncertainty and --ensemble: no flips/rotations")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("measure", help="one row per object of a label image: centroid, area/volume, bounding box, "
                                       "intensities, shape, and a classifier's class")
    p.add_argument("labels", type=Path, help="label image (2D or 3D; 0 = background)")
    p.add_argument("image", type=Path, nargs="?", help="the image the labels belong to (intensities, classes)")
    p.add_argument("-o", "--output", type=Path, required=True, help="table: .csv or .parquet")
    p.add_argument("--classifier", help="a classifier (NAME[@VERSION] or package) that classifies each object")
    p.add_argument("--margin", type=float, default=0.0, help="grow each object's crop by this fraction of its size")
    p.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("track", help="link instance masks over time (minimum-cost assignment, divisions, gaps)")
    p.add_argument("labels", type=Path, nargs="+", help="label images, one per time point in order (or one T-stack)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="folder: res_track.txt (Cell Tracking Challenge), tracks.csv and relabelled maskTTT.tif")
    p.add_argument("--max-distance", type=float, help="largest move between frames in pixels (default: twice the "
                                                      "median object diameter)")
    p.add_argument("--no-divisions", action="store_true", help="do not detect divisions")
    p.add_argument("--no-gap-closing", action="store_true", help="do not bridge objects missing for one frame")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("evaluate", help="a model on held-out data: PSNR/SSIM of restoration (image/target pairs), "
                                        "AP/F1/PQ of segmentation (image/label pairs)")
    p.add_argument("ref", help="NAME[@VERSION] or a package folder")
    p.add_argument("--data", type=Path, required=True, help="folder of input images")
    p.add_argument("--target", type=Path, required=True,
                   help="folder of targets (restoration) or label images (segmentation), same file names")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="folder for metrics.csv and figure.png (restoration) or metrics.json/.md (segmentation)")
    p.add_argument("--axes", help="axes of the images when they cannot be guessed")
    p.add_argument("--compare", metavar="PARENT", help="also score this model (NAME[@VERSION] or a package folder) "
                                                       "on the same data, each fed it in the channels it declares "
                                                       "(RGB made grey, grey repeated), beside the classical baseline")
    p.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train a blueprint on a folder of images and write a package")
    p.add_argument("blueprint", help="blueprint spec (models/care/spec.yaml) or an architecture: care, n2n, n2v, n2v2")
    p.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2D or 3D blueprint of an architecture")
    _data_options(p, "the blueprint's")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    _lightning_options(p)
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    g = p.add_argument_group("classifier", "labelled images: class folders under --data, or a CSV")
    g.add_argument("--labels", type=Path, help="CSV with columns file (relative to --data) and label")
    g.add_argument("--group-column", help="CSV column grouping images that must stay on one side of the split "
                                          "(e.g. the source image of each crop)")
    g.add_argument("--split-column", help="CSV column holding a split: only --train-split rows train")
    g.add_argument("--train-split", default="train")
    g.add_argument("--test-split", help="rows of this split are held out and scored into the model card")
    g.add_argument("--canvas", type=int, help="square canvas the network sees, in pixels (default 64)")
    g.add_argument("--scale", type=float, help="pixel scale images are resampled by before the canvas (default 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a pretrained package on a few of your own images")
    p.add_argument("ref", help="parent: NAME[@VERSION] or a package folder")
    _data_options(p, "the parent's with -ft")
    p.add_argument("--channels", type=int, help="input channels of the new model (default: from the images; "
                                                "the first convolution is adapted)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change an architecture parameter that sets the outputs (a new head), e.g. n_rays=64")
    p.add_argument("--freeze", choices=["none", "encoder", "all-but-head", "gradual"], default="none",
                   help="which parts keep the parent's weights (gradual: unfreeze one stage at a time from the head)")
    p.add_argument("--unfreeze-every", type=int, help="steps between unfreezing stages (gradual)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: half the parent's)")
    p.add_argument("--warmup", type=int, help="linear warm-up steps (default 5%% of --max-steps, at least 10)")
    p.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay per stage from the head, e.g. 0.7")
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping (0: never)")
    p.add_argument("--val-every", type=int, default=50, help="steps between validations")
    p.add_argument("--rehearsal-data", type=Path, help="images of the parent's own training data to rehearse")
    p.add_argument("--rehearsal-target", type=Path, help="their targets or label images")
    p.add_argument("--rehearsal", type=float, default=0.2, help="fraction of patches from the rehearsal data")
    p.add_argument("--patch", type=int, help="patch size (default: the parent's)")
    p.add_argument("--batch-size", type=int, help="default: the parent's")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    _lightning_options(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("serve", help="serve models over HTTP (FastAPI + uvicorn), with batching and limits")
    p.add_argument("refs", nargs="*", help="models to load: NAME[@VERSION], package folders or registry URLs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--token", help="bearer token for predict and admin (default: $ZOO_SERVE_TOKEN; "
                                   "without one, predict is open and admin is off)")
    p.add_argument("--max-batch", type=int, default=8, help="requests batched into one network call")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting per model before 503")
    p.add_argument("--max-body-mb", type=int, default=256, help="largest request body")
    p.add_argument("--max-pixels", type=int, default=64 << 20, help="largest image (values) accepted")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one prediction may take (504)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a package to another serving system")
    p.add_argument("format", choices=["triton", "bioimageio"],
                   help="triton: an NVIDIA Triton Inference Server model repository; bioimageio: a bioimage.io "
                        "model description (rdf.yaml, format 0.5)")
    p.add_argument("package", help="package folder or NAME[@VERSION]")
    p.add_argument("out", type=Path, help="the model repository folder")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--instance-kind", choices=["auto", "gpu", "cpu"], default="auto", help="triton")
    p.add_argument("--zip", action="store_true", help="bioimageio: also write OUT.zip (the bioimage.io package)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="turn a bioimage.io model package, or an ONNX model trained elsewhere, into a "
                                      "zoo package (hashes, test output by the zoo's runtime, card, cover)")
    p.add_argument("format", choices=["bioimageio", "onnx"])
    p.add_argument("source", type=Path, help="bioimageio: the package folder, rdf.yaml or .zip; onnx: MODEL.onnx")
    p.add_argument("--out", type=Path, required=True, help="package folder to write")
    p.add_argument("--name", help="package name (bioimageio default: from the description; required for onnx)")
    p.add_argument("--weights", choices=["pytorch_state_dict", "onnx"],
                   help="bioimageio: the weight format to import (default: a state dict of an installed "
                        "architecture, else onnx)")
    p.add_argument("--axes", help="onnx: the graph's input axes in its order, e.g. bcyx, byxc, bczyx")
    p.add_argument("--output-axes", help="onnx: the graph's output axes (default: --axes)")
    p.add_argument("--step", type=int, help="onnx: spatial sizes must be multiples of this (2^depth of a U-Net)")
    p.add_argument("--min", type=int, help="onnx: smallest spatial size the graph takes (default: --step)")
    p.add_argument("--channels", type=int, help="onnx: input channels, when the graph leaves that axis dynamic")
    p.add_argument("--version", default="0.1.0", help="onnx: the package version")
    p.add_argument("--author", action="append", help="onnx: an author's name (repeatable)")
    p.add_argument("--license", default="CC-BY-4.0", help="onnx: SPDX licence of the weights")
    p.add_argument("--task", help="onnx: e.g. restoration/denoising, segmentation (default: from the output ops)")
    p.add_argument("--tag", action="append", help="onnx: a search tag (repeatable)")
    _package_change_options(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("bump", help="make the next version of a package beside it: new weights, test input, halo "
                                    "or ops; test output, hashes, card and cover recomputed")
    p.add_argument("package", type=Path, help="the package folder to start from (it is left as it is)")
    p.add_argument("--version", required=True, help="the new version, higher than the package's (e.g. 1.1.0)")
    p.add_argument("--out", type=Path, required=True, help="folder for the new version")
    p.add_argument("--weights", type=Path, help="new weights: .onnx for an imported graph, .safetensors otherwise")
    p.add_argument("--axes", help="axes of a new .onnx graph (default: those it was imported with)")
    _package_change_options(p)
    p.set_defaults(func=cmd_bump)

    p = sub.add_parser("lineage", help="the chain of packages a package was fine-tuned from, each verified")
    p.add_argument("ref", help="NAME[@VERSION] or a package folder")
    p.set_defaults(func=cmd_lineage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tifffile").setLevel(logging.ERROR)  # corrupt files get our own error instead
    import os

    offline_before = os.environ.get("ZOO_OFFLINE")
    if args.offline:              # one switch for every part: registries, archive URLs, imports read ZOO_OFFLINE
        os.environ["ZOO_OFFLINE"] = "1"
    try:
        code = args.func(args)
        sys.stdout.flush()        # a reader that has gone (`zoo info | head -1`) shows here, not at exit
        return code
    except BrokenPipeError:       # stop quietly, as cat does: nothing more to say, and nobody to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                # 128 + SIGPIPE, what a shell reports for a command the pipe stopped
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if offline_before is None:
            os.environ.pop("ZOO_OFFLINE", None)
        else:
            os.environ["ZOO_OFFLINE"] = offline_before


if __name__ == "__main__":
    sys.exit(main())
