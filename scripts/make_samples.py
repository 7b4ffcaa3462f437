"""Cut the main job's sample images from ../shared/data (Hagen et al., CC0) into samples/.

Reproduce:  python scripts/make_samples.py
"""
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HAGEN = REPO.parent / "shared" / "data" / "hagen_snr"
CROP = (slice(0, 1024), slice(512, 1536))  # a 1024 x 1024 field with several cells


def main() -> None:
    out = REPO / "samples"
    out.mkdir(exist_ok=True)
    for folder, name in (("images", "hagen_actin_lowsnr.tif"), ("targets", "hagen_actin_highsnr.tif")):
        image = np.asarray(Image.open(HAGEN / folder / "actin-20x-noise1.png"))[CROP]
        tifffile.imwrite(out / name, image, compression="zlib")
        print(out / name, image.shape, image.dtype)


if __name__ == "__main__":
    main()
