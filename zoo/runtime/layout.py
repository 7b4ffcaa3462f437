"""Between a user's array in its natural layout (``yx``, ``cyx``, ``yxc``, ``zyx``, ...) and
the network's tensor layout (``bcyx``, ``bczyx``)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def infer_axes(shape: tuple[int, ...], spatial: str, n_channels: int) -> str:
    """Guess the natural axes of an array for a model with these spatial axes and channels."""
    n = len(spatial)
    expected = (f"{spatial}" if n_channels == 1 else f"c{spatial} or {spatial}c") + f" (or with a leading batch axis)"
    if len(shape) == n:
        if n_channels == 1:
            return spatial
        raise InputError(f"the model expects {n_channels} channels but the image has shape {shape} "
                         f"with no channel axis; expected {expected}")
    if len(shape) == n + 1:
        if shape[-1] == n_channels and (n_channels > 1 or shape[0] != 1):
            return spatial + "c"
        if shape[0] == n_channels:
            return "c" + spatial
        if n_channels == 1 and n == 2 and 2 <= shape[-1] <= 4 < shape[0]:
            raise InputError(f"the model expects a single-channel (grey) image, got shape {shape}, which "
                             "looks like RGB(A) or a multi-channel image; convert it to grey or pick one "
                             "channel first (or pass axes='byx' if it really is a batch)")
        if n_channels == 1:
            return "b" + spatial
        raise InputError(f"cannot tell the axes of an image of shape {shape}: the model expects "
                         f"{n_channels} channel(s) with spatial axes '{spatial}'; expected {expected}. "
                         "Pass axes=... to say which is which.")
    if len(shape) == n + 2:
        if shape[1] == n_channels:
            return "bc" + spatial
        if shape[-1] == n_channels:
            return "b" + spatial + "c"
    raise InputError(f"the model expects a {n}D image with spatial axes '{spatial}' and {n_channels} "
                     f"channel(s); got an array of shape {shape}. Expected {expected}.")


def to_tensor(image: np.ndarray, axes: str | None, spatial: str, n_channels: int) -> tuple[np.ndarray, str]:
    """Return (float32 array in ``bc+spatial`` order, the natural axes used)."""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise InputError(f"expected a numeric image, got dtype {image.dtype}")
    if image.size == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    if axes is None:
        axes = infer_axes(image.shape, spatial, n_channels)
    axes = axes.lower()
    if len(axes) != image.ndim or len(set(axes)) != len(axes) or set(axes) - set("bc" + spatial):
        raise InputError(f"axes '{axes}' do not fit an image of shape {image.shape} for a model with "
                         f"spatial axes '{spatial}' (allowed letters: b, c, {', '.join(spatial)})")
    if not set(spatial) <= set(axes):
        raise InputError(f"axes '{axes}' lack spatial axes {sorted(set(spatial) - set(axes))}: the model "
                         f"needs '{spatial}'")
    full = "bc" + spatial
    x, current = image, axes
    for letter in "bc":
        if letter not in current:
            x, current = x[np.newaxis], letter + current
    x = np.transpose(x, [current.index(a) for a in full])
    if x.shape[1] != n_channels:
        raise InputError(f"the model expects {n_channels} channel(s); the image has {x.shape[1]} "
                         f"along axis 'c' (shape {image.shape}, axes '{axes}')")
    return np.ascontiguousarray(x, dtype=np.float32), axes


def from_tensor(y: np.ndarray, natural_axes: str, spatial: str) -> np.ndarray:
    """Put a ``bc+spatial`` output back into the user's natural axes (channel dropped when single)."""
    full = "bc" + spatial
    axes = natural_axes
    if "c" not in axes and y.shape[1] != 1:
        axes = "c" + axes if "b" not in axes else axes.replace("b", "bc", 1)
    missing = [i for i, a in enumerate(full) if a not in axes]
    y = np.squeeze(y, axis=tuple(missing)) if missing else y
    kept = [a for a in full if a in axes]
    return np.transpose(y, [kept.index(a) for a in axes])
