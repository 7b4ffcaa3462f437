"""What an image file says about itself beyond its pixels: physical pixel size and channel names.

Read from OME-TIFF (``PhysicalSizeX/Y/Z`` and ``Channel/@Name`` in the OME-XML), ImageJ TIFF
(``XResolution``/``YResolution`` with the ``unit``, ``spacing`` for z), the zoo's own TIFF outputs
(``pixel_size_um`` in their JSON description) and OME-Zarr (``coordinateTransformations`` scale
of the first dataset with the axes' units; ``omero`` channel labels). Sizes are in micrometres;
an axis the file does not describe is left out. A prediction's output declares its input's
pixel size (:func:`tiff_options`; :func:`zoo.omezarr.create_omezarr`).
"""
from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("zoo")

_TO_UM = {"m": 1e6, "meter": 1e6, "cm": 1e4, "centimeter": 1e4, "mm": 1e3, "millimeter": 1e3,
          "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
          "\\u00B5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "å": 1e-4, "angstrom": 1e-4}


@dataclass
class ImageMetadata:
    pixel_size: dict[str, float] = field(default_factory=dict)   # axis (z, y, x) -> micrometres
    channel_names: list[str] = field(default_factory=list)
    source: str = ""                                             # where it was read: "OME-TIFF", ...


def _um(value, unit) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    factor = _TO_UM.get(str(unit or "µm").strip().lower(), None)
    if factor is None or not math.isfinite(value) or value <= 0:
        return None
    return value * factor


def read(path: str | Path) -> ImageMetadata:
    """The metadata of an image file; empty where the file says nothing (never an error)."""
    path = Path(path)
    try:
        from .omezarr import is_zarr

        if is_zarr(path):
            return _zarr(path)
        if path.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8"):
            return _tiff(path)
    except Exception as e:   # noqa: BLE001 - metadata is a hint: a damaged header must not stop a prediction
        log.info("%s: could not read its metadata (%s)", path, e)
    return ImageMetadata()


def _tiff(path: Path) -> ImageMetadata:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        if tif.is_ome and tif.ome_metadata:
            found = _ome_xml(tif.ome_metadata)
            if found.pixel_size or found.channel_names:
                return found
        if tif.is_imagej:
            return _imagej(tif)
        if tif.is_shaped and tif.shaped_metadata:
            return _shaped(tif.shaped_metadata[0])
    return ImageMetadata()


def _shaped(meta: dict) -> ImageMetadata:
    """A TIFF the zoo wrote: its pixel size is ``pixel_size_um`` in the JSON description."""
    given = meta.get("pixel_size_um") if isinstance(meta, dict) else None
    if not isinstance(given, dict):
        return ImageMetadata()
    sizes = {a: _um(v, "µm") for a, v in given.items() if a in ("z", "y", "x")}
    return ImageMetadata({a: v for a, v in sizes.items() if v is not None}, [], "zoo TIFF")


def tiff_options(axes: str | None, pixel_size: dict[str, float] | None = None) -> dict:
    """``tifffile`` write options that record ``axes`` and the pixel size (µm by axis): in the JSON
    description, which :func:`read` reads back, and as resolution tags in pixels per centimetre
    for y and x, which Fiji and other TIFF readers show."""
    if not axes:
        return {"metadata": {}}
    sizes = {a: float(v) for a, v in (pixel_size or {}).items() if a in "zyx" and a in axes.lower()}
    options: dict = {"metadata": {"axes": axes.upper(), **({"pixel_size_um": sizes} if sizes else {})}}
    if "y" in sizes and "x" in sizes:
        options["resolution"] = (1e4 / sizes["x"], 1e4 / sizes["y"])
        options["resolutionunit"] = "CENTIMETER"
    return options


def _ome_xml(text: str) -> ImageMetadata:
    root = ET.fromstring(text)
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None)
    if pixels is None:
        return ImageMetadata()
    sizes = {}
    for axis in "zyx":
        size = _um(pixels.get(f"PhysicalSize{axis.upper()}"), pixels.get(f"PhysicalSize{axis.upper()}Unit"))
        if size is not None:
            sizes[axis] = size
    names = [c.get("Name") or "" for c in pixels if c.tag.endswith("}Channel") or c.tag == "Channel"]
    return ImageMetadata(sizes, names if any(names) else [], "OME-TIFF")


def _imagej(tif) -> ImageMetadata:
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit", "")
    if unit in ("", "pixel", "pixels", None):
        return ImageMetadata(source="ImageJ TIFF")
    page = tif.pages[0]
    sizes = {}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        if tag in page.tags:
            numerator, denominator = page.tags[tag].value
            if numerator:
                size = _um(denominator / numerator, unit)
                if size is not None:
                    sizes[axis] = size
    if "spacing" in meta:
        size = _um(meta["spacing"], unit)
        if size is not None:
            sizes["z"] = size
    labels = meta.get("Labels") or []
    return ImageMetadata(sizes, [str(x) for x in labels] if isinstance(labels, list) else [], "ImageJ TIFF")


def _zarr(path: Path) -> ImageMetadata:
    import zarr

    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    attrs = attrs.get("ome", attrs)
    scales = attrs.get("multiscales") or []
    sizes = {}
    if scales:
        axes = scales[0].get("axes") or []
        transforms = (scales[0].get("datasets") or [{}])[0].get("coordinateTransformations") or []
        scale = next((t.get("scale") for t in transforms if t.get("type") == "scale"), None)
        if scale and len(scale) == len(axes):
            for axis, value in zip(axes, scale):
                name = str(axis.get("name") if isinstance(axis, dict) else axis).lower()
                unit = axis.get("unit") if isinstance(axis, dict) else None
                if name in ("z", "y", "x") and unit:
                    size = _um(value, unit)
                    if size is not None:
                        sizes[name] = size
    channels = ((attrs.get("omero") or {}).get("channels")) or []
    names = [str(c.get("label", "")) for c in channels if isinstance(c, dict)]
    return ImageMetadata(sizes, names if any(names) else [], "OME-Zarr")
