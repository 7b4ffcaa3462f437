"""Reading and writing images (TIFF and OME-TIFF, OME-Zarr, PNG/JPEG, NPY) and PNG figures."""
from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, NotFoundError, storage
from .omezarr import is_zarr, open_omezarr, written_by_zoo

log = logging.getLogger("zoo")

TIFF = (".tif", ".tiff")
RASTER = (".png", ".jpg", ".jpeg")
ZARR = ".zarr"
IMAGE_SUFFIXES = TIFF + RASTER + (".npy", ZARR)
_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
NUMERIC_KINDS = "biuf"           # bool, integers, real floats: what a network can be given
MAX_DECODED_BYTES = 4 << 30
"""The most bytes an image is decoded into memory whole (a compressed TIFF, PNG, any image
predicted in memory): as much as one package archive member may hold. Memory-mapped TIFF and
NPY and OME-Zarr inputs are streamed block by block, limited only by what their files hold."""
_STREAM_ADVICE = ("predict it into .tif, .npy or .zarr from an uncompressed TIFF, an NPY or an OME-Zarr "
                  "(these are streamed block by block), or crop it")


def _bytes(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def check_numeric(dtype, what) -> None:
    """Refuse an array of something other than numbers (complex, strings, objects, records)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in NUMERIC_KINDS:
        fix = ("keep the real part, the magnitude (np.abs) or the phase, and save that" if dtype.kind == "c"
               else "save the pixel values as a bool, integer or float array")
        raise InputError(f"{what} holds {dtype} values, which are not real numbers: {fix}")


def check_declared(what, shape, dtype, limit: int | None = None, stored: int | None = None,
                   advice: str = _STREAM_ADVICE) -> None:
    """Refuse, before allocating, an array whose declared ``shape`` and ``dtype`` are not numbers,
    need more than ``limit`` bytes in memory, or more than the ``stored`` bytes its file holds
    (for uncompressed formats)."""
    check_numeric(dtype, what)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise InputError(f"{what} declares the impossible shape {shape}: the file is damaged")
    need = math.prod(shape) * np.dtype(dtype).itemsize
    declared = f"{what} declares shape {shape} of {np.dtype(dtype)} ({_bytes(need)})"
    if stored is not None and need > stored:
        raise InputError(f"{declared} but holds only {_bytes(stored)} of data: the file is truncated or "
                         "damaged; write it again")
    if limit is not None and need > limit:
        raise InputError(f"{declared}, more than the {_bytes(limit)} that are read whole into memory: {advice}")


def read_npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of an open ``.npy`` stream, left at its first byte of data."""
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported NPY format version {version}: save it with numpy's default (1.0)")
    shape, _, dtype = read(f)
    return shape, dtype


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data stored) of an ``.npy`` file, from its header alone."""
    with open(path, "rb") as f:
        shape, dtype = read_npy_header(f)
        return shape, dtype, Path(path).stat().st_size - f.tell()


def _check_npy(path: Path, limit: int | None) -> None:
    shape, dtype, stored = npy_header(path)
    check_declared(path, shape, dtype, limit, stored)


def _check_tiff(tif, path: Path, limit: int | None) -> None:
    """The first series' declared size: against ``limit``, and against the file when uncompressed."""
    if not tif.series:
        raise InputError(f"could not read {path}: it holds no image data (corrupt or empty file)")
    series = tif.series[0]
    compressed = getattr(series.keyframe, "compression", 1) != 1
    check_declared(path, series.shape, series.dtype, limit, None if compressed else path.stat().st_size)


_MAGIC = ((b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"),
          (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"\x93NUMPY", "npy"))
_OTHER_MAGIC = ((b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "a gzip file"), (b"GIF8", "a GIF image"),
                (b"BM", "a BMP image"), (b"%PDF", "a PDF document"), (b"\x89HDF", "an HDF5 file"))
FORMAT_NAMES = {"tiff": "TIFF", "png": "PNG", "jpeg": "JPEG", "npy": "NPY"}
_SUFFIX_FORMAT = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".npy": "npy"}


def sniff(head: bytes) -> str | None:
    """The image format (``tiff``, ``png``, ``jpeg``, ``npy``) that bytes begin with, else None."""
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _what_else(head: bytes) -> str:
    """Words for content that is not an image format the zoo reads."""
    if not head:
        return "an empty file"
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return what
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"text ({head[:16].decode()!r}...)"
    return f"unknown content (it begins with {head[:8].hex(' ')})"


def file_format(path: Path) -> str:
    """The format of an image file by its content (magic bytes), whatever its name says; a name
    that disagrees is logged, content the zoo cannot read is an InputError saying what it is."""
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image: give one image file (TIFF, PNG, JPEG, NPY) or an "
                         "OME-Zarr image")
    with storage(f"read {path}"), open(path, "rb") as f:
        head = f.read(16)
    kind = sniff(head)
    named = _SUFFIX_FORMAT.get(path.suffix.lower())
    if kind is None:
        expected = f"a {FORMAT_NAMES[named]} image, as its name says" if named else "an image"
        raise InputError(f"could not read {path}: expected {expected} (TIFF, PNG, JPEG, NPY or OME-Zarr), but it is "
                         f"{_what_else(head)}")
    if named != kind:
        log.warning("%s is a %s image%s: read as %s", path, FORMAT_NAMES[kind],
                    f" despite its {path.suffix} name" if named or path.suffix else " (no file extension)",
                    FORMAT_NAMES[kind])
    return kind


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
    if is_zarr(path):
        array, axes = open_omezarr(path)
        check_numeric(array.dtype, path)
        return array, axes
    if not path.exists():
        raise NotFoundError(f"image not found: {path}")
    kind = file_format(path)
    axes = None
    try:
        if kind == "npy":
            _check_npy(path, limit=None)        # streamed: it must only fit in its file
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        if kind == "tiff":
            with tifffile.TiffFile(str(path)) as tif:
                axes = tiff_axes(tif)
            image = tifffile.memmap(str(path), mode="r")
            if image.size:
                check_numeric(image.dtype, path)
                return image, axes
    except (ValueError, OSError, IndexError, tifffile.TiffFileError):   # compressed, tiled or damaged
        log.info("%s cannot be memory-mapped: reading it whole", path)
    return _read_whole(path, kind), axes   # clear errors for corrupt files


def read_image(path: str | Path) -> np.ndarray:
    """Read an image into a numpy array (grey: ``yx``; colour: ``yxc``; stacks as stored)."""
    path = Path(path)
    if is_zarr(path):
        array = open_omezarr(path)[0]
        check_declared(path, array.shape, array.dtype, MAX_DECODED_BYTES)
        return np.asarray(array[...])
    if not path.exists():
        raise NotFoundError(f"image not found: {path}")
    return _read_whole(path, file_format(path))


def _read_whole(path: Path, kind: str) -> np.ndarray:
    """An image file of format ``kind`` (see :func:`file_format`), decoded whole after its declared
    size is checked."""
    try:
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                _check_tiff(tif, path, MAX_DECODED_BYTES)
                image = tif.asarray()
        elif kind == "npy":
            _check_npy(path, MAX_DECODED_BYTES)
            image = np.load(path, allow_pickle=False)
        else:
            image = _read_raster(path)
    except (ValueError, OSError, SyntaxError, IndexError) as e:
        raise InputError(f"could not read {path} as a {FORMAT_NAMES[kind]} image: {e}") from None
    if image.size == 0:
        raise InputError(f"could not read {path}: it holds no image data (corrupt or empty file)")
    check_numeric(image.dtype, path)
    return image


def _read_raster(path: Path) -> np.ndarray:
    """A PNG or JPEG; Pillow refuses sizes it takes for decompression bombs."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: {e}; {_STREAM_ADVICE}") from None


def check_output(target: str | Path, overwrite: bool = False, source: str | Path | None = None) -> None:
    """Refuse to write ``target`` where that could lose data: never into the input ``source`` (nor
    a folder holding it); an existing output only with ``overwrite``, and only when it is the same
    kind of thing (a regular file, or for ``.zarr`` an OME-Zarr the zoo wrote)."""
    target = Path(target)
    if source is not None and Path(source).exists() and target.exists():
        inside, outside = Path(source).resolve(), target.resolve()
        if inside == outside or outside in inside.parents:
            what = "is the input" if inside == outside else f"holds the input {source}"
            raise InputError(f"the output {target} {what}: choose another output path")
    if not target.exists():
        return
    if target.suffix.lower() == ZARR:
        if not (target.is_dir() and written_by_zoo(target)):
            raise InputError(f"the output {target} exists and is not an OME-Zarr written by the zoo: it is left "
                             "as it is; choose another output path")
    elif not target.is_file():
        raise InputError(f"the output {target} exists and is {'a folder' if target.is_dir() else 'not a file'}: "
                         "it is left as it is; choose another output path")
    if not overwrite:
        raise InputError(f"the output {target} exists: pass --overwrite (overwrite=True) to replace it, or "
                         "choose another output path")


def partial_path(target: Path) -> Path:
    """Where an output is written until it is complete (beside it, hidden, one per process)."""
    return target.with_name(f".{target.name}.partial-{os.getpid()}")


def replace_output(partial: Path, target: Path, overwrite: bool = False, source: str | Path | None = None) -> None:
    """Move a complete ``partial`` output to ``target``, checked again by :func:`check_output`; an
    earlier OME-Zarr output is replaced whole, and restored if the move fails."""
    check_output(target, overwrite, source)
    if not target.is_dir():
        os.replace(partial, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(partial, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_partial(partial: Path) -> None:
    if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.unlink(missing_ok=True)


def write_image(path: str | Path, array: np.ndarray, axes: str | None = None, overwrite: bool = False,
                source: str | Path | None = None, pixel_size: dict[str, float] | None = None) -> Path:
    """Write an array as TIFF (any dtype; ``axes`` recorded), OME-Zarr, NPY, or PNG (uint8/uint16
    grey or RGB), under a temporary name renamed when complete. An existing ``path`` is replaced
    only with ``overwrite`` (see :func:`check_output`; ``source``: the input it came from).
    ``pixel_size`` (µm by axis; needs ``axes``): declared in TIFF and OME-Zarr outputs
    (:func:`zoo.metadata.tiff_options`)."""
    path = Path(path)
    check_output(path, overwrite, source)
    partial = partial_path(path)
    try:
        with storage(f"write {path}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(partial, path, array, axes, pixel_size if axes else None)
            replace_output(partial, path, overwrite, source)
    except BaseException:
        remove_partial(partial)
        raise
    return path


def _write(partial: Path, path: Path, array: np.ndarray, axes: str | None, pixel_size: dict | None = None) -> None:
    """Write ``array`` into ``partial`` in the format ``path``'s suffix names."""
    suffix = path.suffix.lower()
    if suffix in TIFF:
        import tifffile

        from .metadata import tiff_options

        tifffile.imwrite(str(partial), array, **tiff_options(axes, pixel_size),
                         photometric="rgb" if array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8
                         else "minisblack")
    elif suffix == ZARR:
        from .omezarr import create_omezarr

        create_omezarr(partial, array.shape, array.dtype, axes or "tczyx"[-array.ndim:],
                       pixel_size=pixel_size)[...] = array
    elif suffix == ".npy":
        with open(partial, "wb") as f:
            np.save(f, array, allow_pickle=False)
    elif suffix == ".png":
        from PIL import Image

        check_format(path, array.dtype)
        if array.dtype.kind in "iu" and array.dtype not in (np.uint8, np.uint16):       # labels
            if array.size and (array.min() < 0 or array.max() > 65535):
                raise InputError(f"{path.name}: these labels run from {array.min()} to {array.max()}, more than a "
                                 "16-bit PNG holds: write them as .tif (or .zarr, .npy)")
            array = array.astype(np.uint16)
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
            raise InputError(f"PNG holds one 2D grey or RGB(A) image; this one has shape {array.shape}: write it "
                             f"as .tif (or .zarr, .npy) instead of {path.name}")
        Image.fromarray(array).save(partial, format="PNG")
    else:
        check_format(path, array.dtype)


WRITABLE = TIFF + (ZARR, ".npy", ".png")


def check_format(path: str | Path, dtype) -> None:
    """Refuse, before any work, an output whose format cannot hold values of ``dtype``: TIFF,
    OME-Zarr and NPY hold any number; PNG holds 8- or 16-bit images and integer labels."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE:
        raise InputError(f"cannot write '{suffix or path.name}': expected .tif, .tiff, .zarr, .npy or .png for "
                         f"{path}")
    dtype = np.dtype(dtype)
    if suffix == ".png" and dtype.kind not in "biu":
        raise InputError(f"PNG holds 8- or 16-bit images and labels; this output is {dtype}: write it as .tif "
                         f"(or .zarr, .npy) instead of {path.name}")


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


def is_colour(image) -> bool:
    """Whether an array is one RGB(A) picture (``yxc`` with 3 or 4 channels)."""
    return np.ndim(image) == 3 and np.shape(image)[-1] in (3, 4)


def preview(array, max_side: int = 1024) -> np.ndarray:
    """A 2D view for figures: the middle slice of a stack (an RGB picture stays in colour),
    subsampled to about ``max_side``."""
    while np.ndim(array) > 2 and not is_colour(array):
        array = array[array.shape[0] // 2]
    stride = max(1, max(array.shape[:2]) // max_side)
    return np.asarray(array[::stride, ::stride])


def _picture(image: np.ndarray, is_labels: bool) -> np.ndarray:
    """uint8 grey or RGB for display: labels in colours, 8-bit RGB as it is, the rest stretched."""
    if is_labels:
        return label_colours(image)
    if is_colour(image):
        rgb = np.asarray(image)[..., :3]
        return rgb if rgb.dtype == np.uint8 else stretch(rgb)
    return stretch(image)


def figure(path: str | Path, panels: Sequence[tuple], max_side: int = 512) -> Path:
    """Save 2D images side by side as one PNG at their own aspect ratios, each stretched on its
    own (8-bit RGB shown as it is), titled above. A panel is ``(title, image)``, or ``(title,
    labels, "labels")`` for a label image (drawn in colours)."""
    from PIL import Image, ImageDraw

    tiles = []
    for title, image, *kind in panels:
        is_labels = kind == ["labels"]
        im = Image.fromarray(_picture(image, is_labels))
        scale = max_side / max(im.size)
        if scale < 1:
            resample = Image.Resampling.NEAREST if is_labels else Image.Resampling.BILINEAR
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
        tiles.append((title, im))
    pad, header = 8, 22
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    slots = [max(im.width, int(draw.textlength(title)) + 4) for title, im in tiles]   # titles never overlap
    width = sum(slots) + pad * (len(tiles) + 1)
    height = max(im.height for _, im in tiles) + header + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for (title, im), slot in zip(tiles, slots):
        draw.text((x, 5), title, fill=(0, 0, 0))
        canvas.paste(im, (x + (slot - im.width) // 2, header))
        x += slot + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
