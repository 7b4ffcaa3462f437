"""The shipped sample images (``samples/``) in napari's File > Open Sample menu."""
from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _read(name: str):
    import tifffile

    path = SAMPLES / name
    if not path.is_file():
        from ..errors import NotFoundError

        raise NotFoundError(f"the sample {name} ships with the bioimage-zoo source checkout (samples/); it is not "
                            f"in {SAMPLES}. Open your own image instead, or install bioimage-zoo from its repository")
    return tifffile.imread(path)


def actin_low_snr():
    return [(_read("hagen_actin_lowsnr.tif"), {"name": "actin low SNR (Hagen)"}, "image")]


def actin_pair():
    return [(_read("hagen_actin_highsnr.tif"), {"name": "actin high SNR (Hagen)", "visible": False}, "image"),
            (_read("hagen_actin_lowsnr.tif"), {"name": "actin low SNR (Hagen)"}, "image")]


def nuclei_fluorescence():
    return [(_read("dsb_fluo_nuclei.tif"), {"name": "nuclei fluorescence (DSB2018)"}, "image")]


def nuclei_he():
    return [(_read("dsb_he_nuclei.tif"), {"name": "nuclei H&E (DSB2018)", "rgb": True}, "image")]


def nuclei_he_with_truth():
    return nuclei_he() + [(_read("dsb_he_nuclei_labels.tif").astype("int32"),
                           {"name": "nuclei H&E ground truth", "visible": False}, "labels")]
