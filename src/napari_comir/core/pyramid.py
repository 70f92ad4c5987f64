"""Registration of images too large to hold as full-resolution CoMIRs: coarse search, fine windows.

Only a block-averaged copy of each image (long side ~``coarse_side``) and a few full-resolution
windows are ever in memory; the inputs may be numpy memmaps, zarr or dask arrays.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .inference import compute_comir_pair
from .registration import DEFAULT_TRANSFORM, RegistrationResult, register
from .registration.levels import from_level
from .transforms import AffineTransform
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


def _window(shape: tuple[int, int], centre_xy, size: int) -> tuple[slice, slice]:
    """(row, col) slices of a ``size`` x ``size`` window near ``centre_xy``, moved inside the image."""
    def axis(centre: float, length: int) -> slice:
        start = int(np.clip(round(centre - size / 2), 0, max(0, length - size)))
        return slice(start, start + size)

    return axis(centre_xy[1], shape[0]), axis(centre_xy[0], shape[1])


def register_pyramid(model: ComirModel, fixed, moving, *, coarse_side: int = 1024,
                     window: int = 768, rotation_range=180.0, fine_range_deg: float = 3.0,
                     transform: str = DEFAULT_TRANSFORM, scale_range=None, border: int = 0,
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
        The fine search looks within ± this of the coarse angle (and ± this many percent of
        its scale).
    transform, scale_range, border
        As in :func:`napari_comir.core.registration.register`.

    Returns
    -------
    RegistrationResult
        ``transform`` maps MOVING full-resolution pixel (x, y) to FIXED pixel (x, y); ``score``
        is the window's NCC; ``seconds`` the wall time of the whole call.
    """
    start = time.perf_counter()
    card = model.card
    fixed_modality = fixed_modality or card.fixed_modality
    moving_modality = moving_modality or card.moving_modality
    factor = max(1, math.ceil(max(*fixed.shape[:2], *moving.shape[:2]) / coarse_side))
    fixed_lo, moving_lo = block_mean(fixed, factor), block_mean(moving, factor)
    coarse = register(*compute_comir_pair(model, fixed_lo, fixed_modality, moving_lo, moving_modality),
                      transform=transform, rotation_range=rotation_range, scale_range=scale_range,
                      border=math.ceil(border / factor), device=model.device,
                      score_threshold=card.score_threshold, detail_threshold=card.detail_threshold)
    if factor == 1:
        return coarse
    estimate = from_level(coarse.transform, factor)
    centre_m = ((moving.shape[1] - 1) / 2, (moving.shape[0] - 1) / 2)
    rows_m, cols_m = _window(moving.shape[:2], centre_m, window)
    margin = 2 * factor + 16  # the coarse estimate is good to about a coarse pixel
    rows_f, cols_f = _window(fixed.shape[:2], estimate.apply_xy([centre_m])[0], window + 2 * margin)
    # The window's transform differs from the whole image's only by the windows' offsets.
    to_fixed = AffineTransform.rigid(0.0, (cols_f.start, rows_f.start))
    from_moving = AffineTransform.rigid(0.0, (-cols_m.start, -rows_m.start))
    coarse_scale = math.sqrt(abs(np.linalg.det(estimate.matrix_xy[:2, :2])))
    fine_scale = None if transform == "rigid" else (coarse_scale * (1 - fine_range_deg / 100),
                                                    coarse_scale * (1 + fine_range_deg / 100))
    fine = register(*compute_comir_pair(model, fixed[rows_f, cols_f], fixed_modality,
                                        moving[rows_m, cols_m], moving_modality),
                    transform=transform, scale_range=fine_scale, border=border,
                    rotation_range=(coarse.transform.angle_deg - fine_range_deg,
                                    coarse.transform.angle_deg + fine_range_deg),
                    device=model.device, score_threshold=card.score_threshold,
                    detail_threshold=card.detail_threshold)
    found = to_fixed.compose(fine.transform).compose(from_moving)
    timings = {"coarse": coarse.seconds, "fine": fine.seconds}
    return RegistrationResult(found, fine.score, time.perf_counter() - start, "pyramid", timings,
                              fine.success_likely, fine.detail_score, fine.overlap, fine.reasons,
                              tuple(moving.shape[:2]))
