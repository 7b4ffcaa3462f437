"""Between a user's array in its natural layout (``yx``, ``cyx``, ``yxc``, ``tzyx``, ...) and the
network's tensor layout (``bcyx``, ``bczyx``).

Axes the model does not know (a batch ``b``, time ``t``, or ``z`` for a 2D model applied slice by
slice) are folded into the tensor's batch axis and unfolded again on the way out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ColourImageError, InputError

BATCH_LIKE = "btz"     # axes that may be folded into the batch (z only when the model is 2D)


def infer_axes(shape: tuple[int, ...], spatial: str, n_channels: int) -> str:
    """Guess the natural axes of an array for a model with these spatial axes and channels."""
    n = len(spatial)
    expected = (f"{spatial}" if n_channels == 1 else f"c{spatial} or {spatial}c") + " (or with a leading batch axis)"
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
        if n_channels == 1 and n == 2 and shape[-1] in (3, 4) and shape[0] > 4:
            raise ColourImageError(f"the model expects a single-channel (grey) image, got shape {shape}, which "
                                   f"looks like {'RGB' if shape[-1] == 3 else 'RGBA'}: convert it to grey or pick "
                                   "one channel first, or use a model that takes colour")
        if n_channels == 1 and n == 2 and shape[-1] == 2 and shape[0] > 4:
            raise InputError(f"the model expects a single-channel (grey) image, got shape {shape}, which looks "
                             "like a two-channel (multi-channel) image: pick one channel first (or pass axes='yxb' if the last "
                             "axis really is a batch of two images)")
        if n_channels == 1:
            return "b" + spatial
        raise InputError(f"cannot tell the axes of an image of shape {shape}: the model expects "
                         f"{n_channels} channel(s) with spatial axes '{spatial}'; expected {expected}. "
                         "Pass axes=... (--axes) to say which is which.")
    if len(shape) == n + 2:
        if shape[1] == n_channels:
            return "bc" + spatial
        if shape[-1] == n_channels:
            return "b" + spatial + "c"
    raise InputError(f"the model expects a {n}D image with spatial axes '{spatial}' and {n_channels} "
                     f"channel(s); got an array of shape {shape}. Expected {expected}; pass axes=... "
                     "(--axes, e.g. 'tzyx') if the file does not say.")


@dataclass(frozen=True)
class Layout:
    """A natural layout: its axes, the model's spatial axes and the sizes folded into the batch."""

    axes: str
    spatial: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, shape: tuple[int, ...], axes: str | None, spatial: str, n_channels: int) -> "Layout":
        """Check (or infer) the axes of an array of ``shape`` for a model."""
        if axes is None:
            axes = infer_axes(tuple(shape), spatial, n_channels)
        axes = axes.lower()
        allowed = "c" + spatial + "".join(a for a in BATCH_LIKE if a not in spatial)
        if len(axes) != len(shape) or len(set(axes)) != len(axes) or set(axes) - set(allowed):
            raise InputError(f"axes '{axes}' do not fit an image of shape {tuple(shape)} for a model with "
                             f"spatial axes '{spatial}': give one letter per dimension from "
                             f"{', '.join(allowed)} (c = channel; {', '.join(a for a in allowed if a in BATCH_LIKE)} "
                             "are predicted one by one)")
        if not set(spatial) <= set(axes):
            raise InputError(f"axes '{axes}' lack spatial axes {sorted(set(spatial) - set(axes))}: the model "
                             f"needs '{spatial}'")
        layout = cls(axes, spatial, tuple(int(s) for s in shape))
        if layout.n_channels != n_channels:
            raise InputError(f"the model expects {n_channels} channel(s); the image has {layout.n_channels} "
                             f"along axis 'c' (shape {tuple(shape)}, axes '{axes}')")
        return layout

    @property
    def extra(self) -> str:
        return "".join(a for a in self.axes if a not in "c" + self.spatial)

    @property
    def extra_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.extra)

    @property
    def n_images(self) -> int:
        return math.prod(self.extra_shape)

    @property
    def n_channels(self) -> int:
        return self.shape[self.axes.index("c")] if "c" in self.axes else 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.spatial)

    def output(self, n_channels: int) -> "Layout":
        """The layout of a prediction with ``n_channels`` channels (no channel axis when one)."""
        axes = self.axes if "c" in self.axes or n_channels == 1 else self._with_channel_axis()
        if n_channels == 1 and "c" in axes and self.n_channels != 1:
            axes = axes.replace("c", "")
        shape = tuple(n_channels if a == "c" else self.shape[self.axes.index(a)] for a in axes)
        return Layout(axes, self.spatial, shape)

    def _with_channel_axis(self) -> str:
        first = min(self.axes.index(a) for a in self.spatial)
        return self.axes[:first] + "c" + self.axes[first:]

    # ---------------------------------------------------------------- whole arrays
    def to_tensor(self, image: np.ndarray) -> np.ndarray:
        order = [self.axes.index(a) for a in self.extra] + \
                ([self.axes.index("c")] if "c" in self.axes else []) + [self.axes.index(a) for a in self.spatial]
        x = np.transpose(np.asarray(image), order).reshape((self.n_images, self.n_channels) + self.spatial_shape)
        return np.ascontiguousarray(x, dtype=np.float32)

    def from_tensor(self, y: np.ndarray) -> np.ndarray:
        """A ``b, c, *spatial`` tensor back in this layout (this must be an :meth:`output` layout)."""
        tensor_axes = self.extra + "c" + self.spatial
        y = y.reshape(self.extra_shape + y.shape[1:])
        if "c" not in self.axes:
            y = y[(slice(None),) * len(self.extra) + (0,)]
            tensor_axes = tensor_axes.replace("c", "")
        return np.transpose(y, [tensor_axes.index(a) for a in self.axes])

    # ---------------------------------------------------------------- pieces of lazy arrays
    def index(self, b: int, region: tuple[slice, ...]) -> tuple:
        """Index into an array of this layout for image ``b``, all channels, a spatial region."""
        where = dict(zip(self.extra, np.unravel_index(b, self.extra_shape) if self.extra else ()))
        where.update(zip(self.spatial, region))
        return tuple(int(where[a]) if a in self.extra else where.get(a, slice(None)) for a in self.axes)

    def read(self, array, b: int, region: tuple[slice, ...]) -> np.ndarray:
        """Image ``b``'s region of a lazy array (memory map, Zarr) as float32 ``c, *region``."""
        block = np.asarray(array[self.index(b, region)])
        kept = [a for a in self.axes if a not in self.extra]
        order = ([kept.index("c")] if "c" in kept else []) + [kept.index(a) for a in self.spatial]
        block = np.transpose(block, order)
        return block[np.newaxis] if "c" not in kept else block

    def write(self, array, region: tuple[slice, ...], values: np.ndarray, first: int = 0) -> None:
        """Write ``values`` (``b, c, *region``) into a lazy array of this layout, as images
        ``first``, ``first + 1``, ... (all of them from 0 by default)."""
        kept = [a for a in self.axes if a not in self.extra]
        source = [a for a in "c" + self.spatial if a in kept]
        for i in range(values.shape[0]):
            block = values[i] if "c" in kept else values[i, 0]
            array[self.index(first + i, region)] = np.transpose(block, [source.index(a) for a in kept])


def for_input(shape: tuple[int, ...], axes: str | None, spatial: str, n_channels: int,
              grey_repeat: bool = False) -> tuple[Layout, int]:
    """(the natural layout of an input of ``shape``, how many times its channel is repeated).

    ``grey_repeat``: a model with several channels also takes a single-channel image, repeated
    into every channel (the conversion its spec declares); the repeat count is then
    ``n_channels``, otherwise 1."""
    try:
        return Layout.of(shape, axes, spatial, n_channels), 1
    except InputError:
        if not grey_repeat or n_channels == 1:
            raise
        try:
            return Layout.of(shape, axes, spatial, 1), n_channels
        except InputError:
            raise InputError(f"the model expects {n_channels} channels (or one grey channel, which it repeats); "
                             f"got shape {tuple(shape)}{f' with axes {axes!r}' if axes else ''}") from None


def check_finite(x: np.ndarray) -> None:
    """Refuse images holding NaN or infinities: every normalisation would turn them into a
    prediction of NaN without a word."""
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise InputError(f"the image holds {bad} NaN or infinite value(s); replace them (e.g. np.nan_to_num) "
                         "or crop them away before predicting")


def to_tensor(image: np.ndarray, axes: str | None, spatial: str, n_channels: int,
              grey_repeat: bool = False) -> tuple[np.ndarray, Layout]:
    """(float32 array in ``bc+spatial`` order, the natural layout it came from); see
    :func:`for_input` for ``grey_repeat``."""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise InputError(f"expected a numeric image, got dtype {image.dtype}")
    if image.size == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    layout, repeat = for_input(image.shape, axes, spatial, n_channels, grey_repeat)
    x = layout.to_tensor(image)
    return (np.repeat(x, repeat, axis=1) if repeat > 1 else x), layout


def from_tensor(y: np.ndarray, layout: Layout) -> np.ndarray:
    """Put a ``bc+spatial`` output back into the user's natural layout (channel dropped when single)."""
    return layout.output(y.shape[1]).from_tensor(y)


def layout_for(shape: tuple[int, ...], axes: str | None, tensor) -> tuple[Layout, int]:
    """:func:`for_input` as an input tensor spec declares it (its spatial axes, channels and grey
    repeat): the one place a spec's input is read into a layout."""
    return for_input(shape, axes, tensor.spatial_axes, tensor.n_channels, tensor.grey == "repeat")


def guess_axes(shape: tuple[int, ...], spatial: str) -> str:
    """The axes of an image whose channel count is not the model's yet (before channels are
    picked by name): its spatial axes, with a short first or last axis as the channels."""
    n = len(spatial)
    if len(shape) == n:
        return spatial
    if len(shape) == n + 1:
        if shape[-1] <= 8 and shape[-1] < min(shape[:-1]):
            return spatial + "c"
        if shape[0] <= 8:
            return "c" + spatial
    raise InputError(f"cannot tell which axis of an image of shape {tuple(shape)} holds its channels: pass --axes "
                     f"(e.g. c{spatial} or {spatial}c)")


def tensor_for(image: np.ndarray, axes: str | None, tensor) -> tuple[np.ndarray, Layout]:
    """:func:`to_tensor` as an input tensor spec declares it (see :func:`layout_for`)."""
    return to_tensor(image, axes, tensor.spatial_axes, tensor.n_channels, tensor.grey == "repeat")

