"""Cut the sample images from ../shared/data into samples/: the main job's Hagen actin pair (CC0)
and DSB2018 fluorescence and H&E validation images with their nuclei labels (CC0; never trained on).

Reproduce:  python scripts/make_samples.py
"""
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HAGEN = REPO.parent / "shared" / "data" / "hagen_snr"
CROP = (slice(0, 1024), slice(512, 1536))  # a 1024 x 1024 field with several cells
DSB = REPO.parent / "shared" / "data" / "dsb2018"
DSB_ID = "0ea221716cf13710214dcd331a61cea48308c3940df1d28cfc7fd817c83714e1"  # 520 x 696, 369 nuclei
DSB_HE_ID = "2dd3356f2dcf470aec4003800744dfec6490e75d88011e1d835f4f3d60f88e7a"  # 256 x 320 RGB, 117 nuclei


def main() -> None:
    out = REPO / "samples"
    out.mkdir(exist_ok=True)
    for folder, name in (("images", "hagen_actin_lowsnr.tif"), ("targets", "hagen_actin_highsnr.tif")):
        image = np.asarray(Image.open(HAGEN / folder / "actin-20x-noise1.png"))[CROP]
        tifffile.imwrite(out / name, image, compression="zlib")
        print(out / name, image.shape, image.dtype)
    image = np.asarray(Image.open(DSB / "images" / f"{DSB_ID}.png"))
    image = image if image.ndim == 2 else image[..., 0]        # grey stored as RGB: one channel
    tifffile.imwrite(out / "dsb_fluo_nuclei.tif", image, compression="zlib")
    labels = tifffile.imread(DSB / "masks" / f"{DSB_ID}.tif")
    tifffile.imwrite(out / "dsb_fluo_nuclei_labels.tif", labels, compression="zlib")
    print(out / "dsb_fluo_nuclei.tif", image.shape, image.dtype, f"{labels.max()} nuclei")
    image = np.asarray(Image.open(DSB / "images" / f"{DSB_HE_ID}.png"))[..., :3]
    tifffile.imwrite(out / "dsb_he_nuclei.tif", image, compression="zlib", photometric="rgb")
    labels = tifffile.imread(DSB / "masks" / f"{DSB_HE_ID}.tif")
    tifffile.imwrite(out / "dsb_he_nuclei_labels.tif", labels, compression="zlib")
    print(out / "dsb_he_nuclei.tif", image.shape, image.dtype, f"{labels.max()} nuclei")


if __name__ == "__main__":
    main()
