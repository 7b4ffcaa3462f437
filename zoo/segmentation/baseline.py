"""The classical baseline every segmentation model must beat: Otsu threshold, then a watershed
on the distance transform seeded at its local maxima (scikit-image), as in the DSB2018 and
StarDist papers' comparisons."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def otsu_watershed(image: np.ndarray, min_distance: int = 4, min_size: int = 10,
                   smoothing: float = 1.0, bright_objects: bool | None = None) -> np.ndarray:
    """Instance labels (0 = background) of a 2D or 3D grey image, or an RGB(A) one (made grey).

    ``bright_objects``: objects brighter than the background (fluorescence); None decides from
    the image (the darker of the two Otsu classes is taken as background when it is the larger).
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2gray
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4) and image.shape[0] > 4:
        image = rgb2gray(image[..., :3])
    if image.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D grey image (or RGB), got shape {image.shape}")
    smooth = gaussian(image.astype(np.float32), sigma=smoothing, preserve_range=True)
    if np.ptp(smooth) == 0:
        return np.zeros(image.shape, np.int32)
    foreground = smooth > threshold_otsu(smooth)
    if bright_objects is None:
        bright_objects = foreground.mean() <= 0.5
    if not bright_objects:
        foreground = ~foreground
    components, _ = ndi.label(foreground)
    sizes = np.bincount(components.ravel())
    foreground &= (sizes >= min_size)[components] & (components > 0)     # drop specks
    distance = ndi.distance_transform_edt(foreground)
    markers = np.zeros(image.shape, np.int32)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=ndi.label(foreground)[0], exclude_border=False)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground).astype(np.int32)
