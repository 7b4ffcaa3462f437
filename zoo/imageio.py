"""Reading and writing images (TIFF and OME-TIFF, OME-Zarr, PNG/JPEG, NPY) and PNG figures."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, NotFoundError
from .omezarr import is_zarr, open_omezarr

log = logging.getLogger("zoo")

TIFF = (".tif", ".tiff")
RASTER = (".png", ".jpg", ".jpeg")
ZARR = ".zarr"
IMAGE_SUFFIXES = TIFF + RASTER + (".npy", ZARR)
_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}


def tiff_axes(tif) -> str | None:
    """Axes a TIFF states (OME-TIFF, ImageJ hyperstack, or tifffile's own metadata), else None."""
    series = tif.series[0]
    stated = tif.is_ome or tif.is_imagej or (tif.is_shaped and "axes" in (tif.shaped_metadata or [{}])[0])
    axes = "".join(_TIFF_AXES.get(a, "?") for a in series.axes)
    return axes if stated and "?" not in axes and len(set(axes)) == len(axes) else None


def open_lazy(path: str | Path):
    """(array that loads pages on demand where the format allows, axes the file states or None).

    Uncompressed TIFF and NPY are memory-mapped, OME-Zarr is read chunk by chunk; anything else
    is read whole."""
    import tifffile

    path = Path(path)
    suffix = path.suffix.lower()
    if is_zarr(path):
        return open_omezarr(path)
    axes = None
    if path.is_file():
        try:
            if suffix == ".npy":
                return np.load(path, mmap_mode="r", allow_pickle=False), None
            if suffix in TIFF:
                with tifffile.TiffFile(str(path)) as tif:
                    axes = tiff_axes(tif)
                image = tifffile.memmap(str(path), mode="r")
                if image.size:
                    return image, axes
        except (ValueError, OSError, IndexError, tifffile.TiffFileError):   # compressed, tiled or damaged
            log.info("%s cannot be memory-mapped: reading it whole", path)
    return read_image(path), axes   # clear errors for missing, corrupt and unsupported files


def read_image(path: str | Path) -> np.ndarray:
    """Read an image into a numpy array (grey: ``yx``; colour: ``yxc``; stacks as stored)."""
    path = Path(path)
    if is_zarr(path):
        return np.asarray(open_omezarr(path)[0][...])
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


def write_image(path: str | Path, array: np.ndarray, axes: str | None = None) -> Path:
    """Write an array as TIFF (any dtype; ``axes`` recorded), OME-Zarr, NPY, or PNG (uint8/uint16
    grey or RGB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in TIFF:
        import tifffile

        tifffile.imwrite(str(path), array, metadata={"axes": axes.upper()} if axes else {},
                         photometric="rgb" if array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8
                         else "minisblack")
    elif suffix == ZARR:
        from .omezarr import create_omezarr

        create_omezarr(path, array.shape, array.dtype, axes or "tczyx"[-array.ndim:])[...] = array
    elif suffix == ".npy":
        np.save(path, array, allow_pickle=False)
    elif suffix == ".png":
        from PIL import Image

        if array.dtype not in (np.uint8, np.uint16) or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
            raise InputError(f"PNG holds 8- or 16-bit grey or RGB(A) images; this one is {array.dtype} with shape "
                             f"{array.shape}: write it as .tif (or .zarr, .npy) instead of {path.name}")
        Image.fromarray(array).save(path)
    else:
        raise InputError(f"cannot write '{suffix}': expected .tif, .tiff, .zarr, .npy or .png for {path}")
    return path


def stretch(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """uint8 view of an image for display, percentile-stretched."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high])
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def label_colours(labels: np.ndarray) -> np.ndarray:
    """An RGB picture of a label image: a fixed pseudo-random colour per object, black background."""
    ids = np.asarray(labels).astype(np.uint64)
    rgb = np.stack([(ids * np.uint64(k) + np.uint64(71)) % np.uint64(200) + np.uint64(55)
                    for k in (2654435761, 40503, 2246822519)], axis=-1).astype(np.uint8)
    rgb[ids == 0] = 0
    return rgb


def figure(path: str | Path, panels: Sequence[tuple], max_side: int = 512) -> Path:
    """Save 2D images side by side as one PNG, each stretched on its own, titled above. A panel
    is ``(title, image)``, or ``(title, labels, "labels")`` for a label image (drawn in colours)."""
    from PIL import Image, ImageDraw

    tiles = []
    for title, image, *kind in panels:
        is_labels = kind == ["labels"]
        im = Image.fromarray(label_colours(image) if is_labels else stretch(image))
        scale = max_side / max(im.size)
        if scale < 1:
            resample = Image.Resampling.NEAREST if is_labels else Image.Resampling.BILINEAR
            im = im.resize((round(im.width * scale), round(im.height * scale)), resample)
        tiles.append((title, im))
    pad, header = 8, 22
    width = sum(im.width for _, im in tiles) + pad * (len(tiles) + 1)
    height = max(im.height for _, im in tiles) + header + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for title, im in tiles:
        draw.text((x, 5), title, fill=(0, 0, 0))
        canvas.paste(im, (x, header))
        x += im.width + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
