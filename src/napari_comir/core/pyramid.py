"""Registration of images too large to hold as full-resolution CoMIRs: coarse search, fine windows.

Only a block-averaged copy of each image (long side ~``coarse_side``) and a few full-resolution
windows are ever in memory; the inputs may be numpy memmaps, zarr or dask arrays.
"""

from __future__ import annotations

import math

import numpy as np

from .inference import compute_comir_pair
from .registration import RegistrationResult, register
from .transforms import RigidTransform
from .zoo import ComirModel


def block_mean(image, factor: int, band_rows: int = 1024) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of (rows, cols[, channels]), read in row bands.

    Trailing rows/columns that do not fill a block are dropped. Output pixel (r, c) covers
    input rows ``factor*r ... factor*r + factor - 1``: its centre is input
    ``factor*r + (factor - 1) / 2``.
    """
    rows, cols = (dim // factor for dim in image.shape[:2])
    rest = tuple(image.shape[2:])
    out = np.empty((rows, cols) + rest, np.float32)
    step = max(1, band_rows // factor)
    for start in range(0, rows, step):
        n = min(step, rows - start)
        band = np.asarray(image[start * factor:(start + n) * factor, :cols * factor], np.float32)
        out[start:start + n] = band.reshape(n, factor, cols, factor, *rest).mean(axis=(1, 3))
    return out


def _scaled(transform: RigidTransform, factor: int) -> RigidTransform:
    """A transform between block-averaged images, expressed between the full images."""
    level_to_full = RigidTransform(0.0, ((factor - 1) / 2, (factor - 1) / 2))
    scaled = RigidTransform(transform.angle_deg, tuple(factor * t for t in transform.translation_xy))
    # x_full = factor * x_level + (factor - 1) / 2, the same on both sides
    return level_to_full.compose(scaled).compose(level_to_full.inverse())


def _window(shape: tuple[int, int], centre_xy, size: int) -> tuple[slice, slice]:
    """(row, col) slices of a ``size`` x ``size`` window near ``centre_xy``, moved inside the image."""
    def axis(centre: float, length: int) -> slice:
        start = int(np.clip(round(centre - size / 2), 0, max(0, length - size)))
        return slice(start, start + size)

    return axis(centre_xy[1], shape[0]), axis(centre_xy[0], shape[1])


def register_pyramid(model: ComirModel, fixed, moving, *, coarse_side: int = 1024,
                     window: int = 768, rotation_range=180.0, fine_range_deg: float = 3.0,
                     fixed_modality: str | None = None,
                     moving_modality: str | None = None) -> RegistrationResult:
    """Register large images: coarse CoMIR search on block-averaged copies, then a full-resolution window.

    Parameters
    ----------
    model : ComirModel
    fixed, moving : array-like
        (rows, cols[, channels]) raw images of any size; sliced lazily.
    coarse_side : int
        Long side of the block-averaged copies used for the global search.
    window : int
        Side of the full-resolution moving window used for the sub-pixel refinement (the fixed
        window is taken larger, to hold the coarse estimate's uncertainty).
    rotation_range : float or (float, float)
        Angles of the coarse search, as in :func:`napari_comir.core.registration.register`.
    fine_range_deg : float
        The fine search looks within ± this of the coarse angle.

    Returns
    -------
    RegistrationResult
        ``transform`` maps MOVING full-resolution pixel (x, y) to FIXED pixel (x, y); ``score``
        is the window's NCC.
    """
    card = model.card
    fixed_modality = fixed_modality or card.fixed_modality
    moving_modality = moving_modality or card.moving_modality
    factor = max(1, math.ceil(max(*fixed.shape[:2], *moving.shape[:2]) / coarse_side))
    fixed_lo, moving_lo = block_mean(fixed, factor), block_mean(moving, factor)
    coarse = register(*compute_comir_pair(model, fixed_lo, fixed_modality, moving_lo, moving_modality),
                      rotation_range=rotation_range, device=model.device,
                      score_threshold=card.score_threshold)
    estimate = _scaled(coarse.transform, factor)
    if factor == 1:
        return coarse
    centre_m = ((moving.shape[1] - 1) / 2, (moving.shape[0] - 1) / 2)
    rows_m, cols_m = _window(moving.shape[:2], centre_m, window)
    margin = 2 * factor + 16  # the coarse estimate is good to about a coarse pixel
    rows_f, cols_f = _window(fixed.shape[:2], estimate.apply_xy([centre_m])[0], window + 2 * margin)
    fine = register(*compute_comir_pair(model, fixed[rows_f, cols_f], fixed_modality,
                                        moving[rows_m, cols_m], moving_modality),
                    rotation_range=(coarse.transform.angle_deg - fine_range_deg,
                                    coarse.transform.angle_deg + fine_range_deg),
                    device=model.device, score_threshold=card.score_threshold)
    # moving window -> fixed window, between the full images
    to_fixed = RigidTransform(0.0, (cols_f.start, rows_f.start))
    from_moving = RigidTransform(0.0, (-cols_m.start, -rows_m.start))
    transform = to_fixed.compose(fine.transform).compose(from_moving)
    timings = {"coarse": coarse.seconds, "fine": fine.seconds}
    return RegistrationResult(transform, fine.score, coarse.seconds + fine.seconds, "pyramid",
                              timings, fine.success_likely)
