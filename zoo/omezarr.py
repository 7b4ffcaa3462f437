"""OME-Zarr (NGFF) images: the full-resolution array of a multiscale image and its axes.

Reads NGFF 0.4 (Zarr v2, ``multiscales`` in the group attributes) and 0.5 (Zarr v3, under
``ome``); writes 0.4, which every current viewer reads. Arrays are opened lazily: only the
chunks a tile touches are read.
"""
from __future__ import annotations

from pathlib import Path

from .errors import InputError, NotFoundError

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
WRITER_KEY = "bioimage-zoo"   # in the group attributes of every OME-Zarr the zoo writes


def is_zarr(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix.lower() == ".zarr" or (path.is_dir() and any(
        (path / name).exists() for name in (".zgroup", ".zarray", "zarr.json")))


def _multiscale(attrs: dict) -> dict | None:
    attrs = attrs.get("ome", attrs)          # 0.5 nests the metadata under "ome"
    scales = attrs.get("multiscales")
    return scales[0] if isinstance(scales, list) and scales else None


def open_omezarr(path: str | Path):
    """(lazy full-resolution array, axes such as ``tczyx``, or None when the store does not say)."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"image not found: {path}")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:   # noqa: BLE001 - zarr raises many kinds; the user needs one message
        raise InputError(f"could not open {path} as a Zarr store: {e}") from None
    if isinstance(node, zarr.Array):
        return node, None
    scale = _multiscale(dict(node.attrs))
    if scale is None:
        arrays = sorted(name for name, _ in node.arrays())
        if not arrays:
            raise InputError(f"{path} is a Zarr group without images: expected OME-Zarr (NGFF) "
                             "'multiscales' metadata or an array in it")
        return node[arrays[0]], None
    try:
        array = node[scale["datasets"][0]["path"]]
    except (KeyError, IndexError, TypeError):
        raise InputError(f"{path}: the OME-Zarr 'multiscales' metadata names no readable dataset") from None
    names = [a["name"] if isinstance(a, dict) else a for a in scale.get("axes", [])]
    axes = "".join(str(n).lower() for n in names)
    if len(axes) != array.ndim or set(axes) - set(AXIS_TYPES) or len(set(axes)) != len(axes):
        axes = None
    return array, axes


def written_by_zoo(path: str | Path) -> bool:
    """Whether ``path`` is an OME-Zarr image that the zoo wrote (so a prediction may replace it)."""
    import json

    try:
        attrs = json.loads((Path(path) / ".zattrs").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(attrs, dict) and isinstance(attrs.get(WRITER_KEY), dict) and _multiscale(attrs) is not None


def create_omezarr(path: str | Path, shape: tuple[int, ...], dtype, axes: str, chunks: tuple[int, ...] | None = None,
                   name: str = "prediction", pixel_size: dict[str, float] | None = None):
    """A new single-scale OME-Zarr 0.4 image at ``path``; returns its writable array.
    ``pixel_size`` (µm by axis z, y, x): the scale it declares; an axis without one is declared
    in pixels (scale 1, no unit), never as 1 µm."""
    import zarr

    if set(axes) - set(AXIS_TYPES):
        raise InputError(f"OME-Zarr axes must be among t, c, z, y, x; got '{axes}'")
    if chunks is None:
        chunks = tuple(min(s, 1 if a in "tc" else (64 if a == "z" else 512)) for a, s in zip(axes, shape))
    sizes = {a: v for a, v in (pixel_size or {}).items() if a in "zyx" and a in axes}
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": name,
        "axes": [{"name": a, "type": AXIS_TYPES[a]} | ({"unit": "micrometer"} if a in sizes else {})
                 for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [float(sizes.get(a, 1.0)) for a in axes]}]}],
    }]
    group.attrs[WRITER_KEY] = {"written": name}
    return array
