"""Request and response bodies: TIFF or NPY images in, TIFF / NPY / JSON out."""
from __future__ import annotations

import io
import json

import numpy as np

from ..errors import InputError

TIFF, NPY, JSON, PNG, JPEG = "image/tiff", "application/x-npy", "application/json", "image/png", "image/jpeg"
ACCEPTED = (TIFF, NPY, PNG, JPEG)
_BY_FORMAT = {"tiff": TIFF, "npy": NPY, "png": PNG, "jpeg": JPEG}   # imageio.sniff's names
_ALIASES = {"image/tif": TIFF, "application/npy": NPY, "image/jpg": JPEG}


class TooLarge(InputError):
    """The body, or the image it declares, is larger than the server accepts (HTTP 413)."""


class NotAcceptable(InputError):
    """No response format of the ``Accept`` header can be produced (HTTP 406)."""


def _kind(content_type: str, body: bytes) -> str:
    """The body's format: the one its content type names, or (none, octet-stream) its magic
    bytes, as the command line reads files."""
    from ..imageio import sniff

    base = (content_type or "").split(";")[0].strip().lower()
    base = _ALIASES.get(base, base)
    if base in ACCEPTED:
        return base
    if base in ("", "application/octet-stream") and sniff(body[:16]):
        return _BY_FORMAT[sniff(body[:16])]
    raise InputError(f"unsupported content type '{content_type or '(none)'}': send the image as "
                     f"{TIFF}, {PNG}, {JPEG} or {NPY} (a .npy file)")


def decode(body: bytes, content_type: str, max_pixels: int) -> np.ndarray:
    """The image in a request body; its declared size is checked before any pixel is read."""
    if not body:
        raise InputError("the request body is empty: send one image (TIFF, PNG, JPEG or NPY)")
    kind = _kind(content_type, body)
    try:
        if kind == TIFF:
            import tifffile

            with tifffile.TiffFile(io.BytesIO(body)) as tif:
                series = tif.series[0]
                _check_size(series.shape, max_pixels)
                image = series.asarray()
        elif kind in (PNG, JPEG):
            image = _raster(body, max_pixels)
        else:
            buffer = io.BytesIO(body)
            version = np.lib.format.read_magic(buffer)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise InputError(f"unsupported NPY format version {version}: save with numpy's default (1.0)")
            shape, _, _ = read_header(buffer)                          # the header only, no data
            _check_size(shape, max_pixels)
            image = np.load(io.BytesIO(body), allow_pickle=False)
    except (TooLarge, InputError):
        raise
    except Exception as e:   # noqa: BLE001 - any decoder failure is the client's corrupt file
        raise InputError(f"could not read the body as {kind}: {type(e).__name__}: {e}") from None
    if image.dtype.kind not in "biuf":
        raise InputError(f"expected a numeric image, got dtype {image.dtype}")
    if image.size == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    return image


def _raster(body: bytes, max_pixels: int) -> np.ndarray:
    """A PNG or JPEG body; its size (from the header) is checked before it is decoded."""
    from PIL import Image

    with Image.open(io.BytesIO(body)) as im:
        bands = len(im.getbands())
        _check_size((im.height, im.width) + ((bands,) if bands > 1 else ()), max_pixels)
        return np.asarray(im)


def _check_size(shape, max_pixels: int) -> None:
    pixels = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if pixels > max_pixels:
        raise TooLarge(f"the image declares {pixels} values (shape {tuple(shape)}); this server accepts at most "
                       f"{max_pixels}: tile it, or ask the operator to raise --max-pixels")


def response_type(accept: str | None, tables: bool = False, default: str = TIFF) -> str:
    """The response format the client accepts: TIFF or NPY images, or (``tables``: instance
    segmentation models) a JSON table of the objects."""
    if not accept or "*/*" in accept:
        return default
    for part in accept.split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in ("image/tiff", "image/tif"):
            return TIFF
        if kind in (NPY, "application/npy", "application/octet-stream"):
            return NPY
        if kind == JSON and tables:
            return JSON
    extra = f", or {JSON} (a table of the objects)" if tables else ""
    raise NotAcceptable(f"cannot answer with '{accept}': this model answers {TIFF} or {NPY}{extra}")


def encode(array: np.ndarray, kind: str) -> bytes:
    if kind == JSON:                                   # instance labels as a table of objects
        from ..segmentation.labels import object_table

        images = array if array.ndim > 2 and array.shape[0] > 1 else [array]
        tables = [object_table(np.squeeze(image)) for image in images]
        return json.dumps({"objects": tables[0]} if len(tables) == 1 else {"images": tables}).encode()
    out = io.BytesIO()
    if kind == TIFF:
        import tifffile

        tifffile.imwrite(out, array)
    else:
        np.save(out, array, allow_pickle=False)
    return out.getvalue()


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()
