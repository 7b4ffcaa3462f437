"""Reading and writing images (TIFF, PNG/JPEG, NPY) and side-by-side PNG figures."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, NotFoundError

TIFF = (".tif", ".tiff")
RASTER = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = TIFF + RASTER + (".npy",)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image into a numpy array (grey: ``yx``; colour: ``yxc``; TIFF stacks as stored)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"image not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"unsupported image format '{suffix}' for {path}: expected one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        if suffix in TIFF:
            import tifffile

            image = tifffile.imread(str(path))
        elif suffix == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                image = np.asarray(im)
    except (ValueError, OSError, SyntaxError) as e:
        raise InputError(f"could not read {path} as a {suffix[1:].upper()} image: {e}") from None
    if image.size == 0:
        raise InputError(f"could not read {path}: it holds no image data (corrupt or empty file)")
    return image


def write_image(path: str | Path, array: np.ndarray) -> Path:
    """Write an array as TIFF (any dtype), NPY, or PNG (uint8/uint16 grey or RGB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in TIFF:
        import tifffile

        tifffile.imwrite(str(path), array)
    elif suffix == ".npy":
        np.save(path, array, allow_pickle=False)
    elif suffix == ".png":
        from PIL import Image

        Image.fromarray(array).save(path)
    else:
        raise InputError(f"cannot write '{suffix}': expected .tif, .tiff, .npy or .png for {path}")
    return path


def stretch(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """uint8 view of an image for display, percentile-stretched."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high])
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def figure(path: str | Path, panels: Sequence[tuple[str, np.ndarray]], max_side: int = 512) -> Path:
    """Save 2D images side by side as one PNG, each stretched on its own, titled above."""
    from PIL import Image, ImageDraw

    tiles = []
    for title, image in panels:
        im = Image.fromarray(stretch(image))
        scale = max_side / max(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
        tiles.append((title, im))
    pad, header = 8, 22
    width = sum(im.width for _, im in tiles) + pad * (len(tiles) + 1)
    height = max(im.height for _, im in tiles) + header + pad
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for title, im in tiles:
        draw.text((x, 5), title, fill=0)
        canvas.paste(im, (x, header))
        x += im.width + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
