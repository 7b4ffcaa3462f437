"""Build a bioimage.io package with CAREamics' own exporter (``CAREamist.export_to_bmz``).

Runs inside the CAREamics peer virtual environment (``scripts/peer_careamics.py setup
.bench/careamics-venv``), never in the project's: CAREamics, Lightning and bioimageio.core stay
out of bioimage-zoo's environment. The network is a CAREamics Noise2Void U-Net (its default 2D
configuration, 8 channels wide by default to keep the export small), trained for ``--steps`` optimisation steps (0: random weights) on a synthetic
image; the export is what a CAREamics user uploads to bioimage.io.

    .bench/careamics-venv/bin/python tests/data/bioimageio/build_careamics.py OUT.zip [--steps 0]
        [--size 64] [--axes YX|ZYX] [--channels 8] [--seed 0]

Prints one JSON line: the archive, its size and CAREamics' version. The test that uses it
(tests/test_bioimageio_corpus.py, marked slow) builds it in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the .zip to write")
    p.add_argument("--steps", type=int, default=0, help="training steps before the export (0: random weights)")
    p.add_argument("--size", type=int, default=64, help="edge of the test image (a multiple of 4)")
    p.add_argument("--axes", default="YX", choices=["YX", "ZYX"])
    p.add_argument("--channels", type=int, default=8, help="the U-Net's first layer width (CAREamics' default is 32)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import pydantic

    if tuple(int(p) for p in pydantic.VERSION.split(".")[:2]) >= (2, 13):
        raise SystemExit(f"pydantic {pydantic.VERSION} breaks bioimageio.spec 0.5.12's packaging (its serializers call "
                         "pydantic's handler with the old signature); in the peer venv run: "
                         "pip install 'pydantic==2.12.5'")
    sys.path.insert(0, str(REPO / "scripts"))
    import numpy as np
    import torch
    from peer_careamics import _import_careamics, _quiet_libraries

    torch.manual_seed(args.seed)
    careamics = _import_careamics()
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config

    _quiet_libraries()
    rng = np.random.default_rng(args.seed)
    shape = (args.size,) * len(args.axes)
    yy = np.indices(shape).sum(axis=0).astype(np.float32)
    image = (100 + 50 * np.sin(yy / 6.0) + rng.normal(0, 10, shape)).astype(np.float32)
    patch = [min(args.size, 64)] * len(args.axes)
    if args.axes == "ZYX":
        patch = [min(args.size, 16)] * 3
    config = create_advanced_n2v_config(
        experiment_name="careamics_n2v_export", data_type="array", axes=args.axes, patch_size=patch,
        batch_size=2, num_epochs=1,
        normalization_params={"input_means": [float(image.mean())], "input_stds": [float(image.std())]},
        model_params={"num_channels_init": args.channels}, num_workers=0, seed=args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="careamics-export-") as work:
        careamist = CAREamist(config, work_dir=work, enable_progress_bar=False)
        if args.steps:
            careamist.cfg.training_config.lightning_trainer_config = {"max_steps": args.steps}
            careamist.train(train_source=image, val_source=image)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        careamist.export_to_bmz(
            path_to_archive=args.out, friendly_model_name=f"careamics-n2v-{args.axes.lower()}-synthetic",
            input_array=image, authors=[{"name": "bioimage-zoo tests"}],
            general_description="A CAREamics Noise2Void U-Net exported by CAREamics itself, for bioimage-zoo's "
                                "import tests (synthetic data, not for real use).",
            data_description="Synthetic sine pattern with Gaussian noise.")
    print(json.dumps({"archive": str(args.out), "bytes": args.out.stat().st_size,
                      "careamics_version": careamics.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
