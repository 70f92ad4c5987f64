"""Registration of images too large to hold as full-resolution CoMIRs: an overview, then windows.

1. **Overview**: each image is read at a reduced size (from its coarsest pyramid level that
   allows it, then block-averaged) so both show about the same physical pixel size and the
   longer one spans ``coarse_side`` px; the global CoMIR search (any rotation) runs on those.
2. **Windows**: several windows spread over the tissue are read at the model's training pixel
   size (full resolution when sizes are unknown) and registered within a few degrees and percent
   of the overview's answer. Points of each window, mapped by its local result, are pairs of
   corresponding full-resolution points; the requested model fitted to all of them is the
   answer. Windows far apart fix the rotation that one window alone gets wrong at the image's
   far edge; windows that disagree with the others are left out, and too few agreeing windows
   make the result "probably wrong".

Only the overviews and a window pair at a time are in memory; inputs may be numpy arrays,
memmaps, zarr arrays or :class:`~napari_comir.core.io.slides.Slide` pyramids (read lazily).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .inference import compute_comir_pair
from .io.slides import Slide, block_mean
from .progress import Progress
from .registration import DEFAULT_TRANSFORM, RegistrationResult, register
from .registration.landmarks import fit_landmarks
from .registration.levels import level_to_full_xy
from .transforms import MODELS, AffineTransform
from .zoo import ComirModel

#: Long side (px) of the overviews the global search runs on, and side (px) of the windows
#: registered at the model's scale, for whole slides and images over ``LARGE_SIDE``.
OVERVIEW_SIDE, WINDOW_SIDE = 1024, 768
#: Windows registered at full scale: the best of a GRID x GRID grid by tissue texture, if their
#: texture is at least MIN_TEXTURE_SHARE of the best's.
N_WINDOWS = 5
GRID = 5
MIN_TEXTURE_SHARE = 0.5
#: A window whose points miss the joint fit by more than this many window pixels is left out.
WINDOW_TOLERANCE_PX = 3.0
#: A looser model is fitted to the windows only if it lowers their RMS residual by this many
#: window pixels.
MODEL_GAIN_PX = 0.5


@dataclass
class _Reduced:
    """An image region read at ``factor`` level-0 px per px, whose pixel (0, 0) covers level-0
    pixels from (``row0``, ``col0``)."""

    pixels: np.ndarray
    factor: int
    row0: int = 0
    col0: int = 0

    def to_full(self) -> AffineTransform:
        """(x, y) of this region's pixels -> level-0 (x, y) (block centres)."""
        shift = AffineTransform.rigid(0.0, (self.col0, self.row0))
        return shift.compose(AffineTransform(level_to_full_xy(self.factor)))


def read_reduced(image, factor: int, rows: slice = slice(None), cols: slice = slice(None)) -> _Reduced:
    """Level-0 region ``image[rows, cols]`` at ``factor`` x coarser, from the coarsest pyramid
    level that divides ``factor`` (the region's start is moved down to a multiple of ``factor``)."""
    factor = max(1, int(factor))
    row0, row1, _ = rows.indices(image.shape[0])
    col0, col1, _ = cols.indices(image.shape[1])
    row0, col0 = row0 - row0 % factor, col0 - col0 % factor
    if isinstance(image, Slide):
        level = max((i for i, d in enumerate(image.downsamples) if factor % d == 0),
                    key=lambda i: image.downsamples[i])
        step = image.downsamples[level]
        # the level is sliced piece by piece inside block_mean: slicing it here would read the
        # whole region at once (a single-level 16384² TIFF: +256 MiB for its overview)
        pixels = block_mean(image.levels[level], factor // step, rows=slice(row0 // step, row1 // step),
                            cols=slice(col0 // step, col1 // step))
        return _Reduced(pixels, factor, row0, col0)
    return _Reduced(block_mean(image, factor, rows=slice(row0, row1), cols=slice(col0, col1)),
                    factor, row0, col0)


def _overview_factors(fixed, moving, fixed_size_um: float, moving_size_um: float,
                      coarse_side: int) -> tuple[int, int]:
    """Integer block sizes that give both images about one physical pixel size, the longer
    extent spanning about ``coarse_side`` px; for a Slide a multiple of one of its levels'
    downsampling, so the overview is read from that level, not from full resolution."""
    extent = max(max(fixed.shape[:2]) * fixed_size_um, max(moving.shape[:2]) * moving_size_um)
    target = extent / coarse_side

    def factor(image, size_um: float) -> int:
        wanted = max(1.0, target / size_um)
        step = image.downsamples[image.level_at_most(wanted)] if isinstance(image, Slide) else 1
        return step * max(1, round(wanted / step))

    return factor(fixed, fixed_size_um), factor(moving, moving_size_um)


def _window_starts(length: int, size: int, n: int) -> list[int]:
    """``n`` window starts spread evenly over ``length`` (one when the window covers it)."""
    if length <= size:
        return [0]
    return sorted({round(i * (length - size) / (n - 1)) for i in range(n)})


def _tissue_windows(overview: _Reduced, moving_shape, window_full: int, n: int,
                    inside_fixed) -> list[tuple[int, int]]:
    """(row, col) level-0 starts of ``n`` windows with tissue texture, spread as far apart as
    possible, among the centre window and a GRID x GRID grid, keeping only those
    ``inside_fixed(start)`` (a partner window cut by the fixed image's edge biases the match);
    the centre window alone if none is."""
    centre = tuple(max(0, (side - window_full) // 2) for side in moving_shape[:2])
    starts = [centre] + [(r, c) for r in _window_starts(moving_shape[0], window_full, GRID)
                         for c in _window_starts(moving_shape[1], window_full, GRID)]
    starts = [start for start in dict.fromkeys(starts) if inside_fixed(start)]
    if n == 1 or not starts:
        return [centre]
    grey = overview.pixels.mean(axis=-1) if overview.pixels.ndim == 3 else overview.pixels
    k = overview.factor

    def texture(start) -> float:
        """Median contrast of the window's 4 x 4 parts: high only where tissue fills the window
        (a tissue edge beside bare glass has one big step, and half a window to match)."""
        r, c = (s // k for s in start)
        patch = grey[r:r + max(4, window_full // k), c:c + max(4, window_full // k)]
        if min(patch.shape) < 4:
            return 0.0
        parts = [part.std() for band in np.array_split(patch, 4, axis=0)
                 for part in np.array_split(band, 4, axis=1)]
        return float(np.median(parts))

    scored = sorted(((texture(start), start) for start in starts), reverse=True)
    # Bare glass or empty background has nothing to match: only windows with real texture;
    # among them, each next one as far as possible from those chosen (the joint fit's lever arm).
    candidates = [start for value, start in scored if value >= MIN_TEXTURE_SHARE * scored[0][0]]
    chosen = candidates[:1]
    while len(chosen) < min(n, len(candidates)):
        chosen.append(max((start for start in candidates if start not in chosen),
                          key=lambda start: min(math.dist(start, other) for other in chosen)))
    return chosen


def register_pyramid(model: ComirModel, fixed, moving, **options) -> RegistrationResult:
    """Register large images (:func:`register_pyramid_events` run to its end): an overview
    search, then windows at the model's scale, fitted jointly; the same ``options``."""
    *_, last = register_pyramid_events(model, fixed, moving, **options)
    return last.result


def register_pyramid_events(model: ComirModel, fixed, moving, *, coarse_side: int = OVERVIEW_SIDE,
                            window: int = WINDOW_SIDE, n_windows: int = N_WINDOWS,
                            rotation_range=180.0, fine_range_deg: float = 3.0,
                            transform: str = DEFAULT_TRANSFORM, scale_range=None,
                            fixed_pixel_size_um: float | None = None,
                            moving_pixel_size_um: float | None = None, border: int = 0,
                            fixed_modality: str | None = None,
                            moving_modality: str | None = None) -> Iterator[Progress]:
    """Register large images: an overview search, then windows at the model's scale, fitted
    jointly; a :class:`~napari_comir.core.progress.Progress` event ("register") before the
    overview and before each window (a worker stops between them: a window takes seconds, the
    whole run a minute), the last one's ``result`` the :class:`RegistrationResult`.

    Parameters
    ----------
    model : ComirModel
    fixed, moving : array-like or Slide
        (rows, cols[, channels]) raw images of any size; read lazily (a Slide's coarser levels
        serve the overview).
    coarse_side : int
        Long side (px) of the overview the global search runs on.
    window : int
        Side of a moving window at the refinement scale (the fixed window is taken larger, to
        hold the overview's uncertainty).
    n_windows : int
        Windows registered at the refinement scale.
    rotation_range : float or (float, float)
        Angles of the overview search, as in :func:`napari_comir.core.registration.register`.
    fine_range_deg : float
        Windows search within ± this of the overview's angle (and ± this many percent of its
        scale).
    transform, scale_range, border
        As in :func:`napari_comir.core.registration.register`; ``scale_range`` (fixed px per
        moving px) is used when the pixel sizes are unknown.
    fixed_pixel_size_um, moving_pixel_size_um : float, optional
        Level-0 pixel sizes. With both, the overviews share one pixel size, only ± 5 % of scale
        is searched, and windows are read at the card's ``pixel_size_um``.

    Yields
    ------
    Progress
        The last one's ``result``: a RegistrationResult whose ``transform`` maps MOVING level-0
        pixel (x, y) to FIXED level-0 pixel (x, y); ``score`` and ``detail_score`` are the
        agreeing windows' medians; ``seconds`` the whole call.
    """
    start = time.perf_counter()
    card = model.card
    fixed_modality = fixed_modality or card.fixed_modality
    moving_modality = moving_modality or card.moving_modality
    known = fixed_pixel_size_um is not None and moving_pixel_size_um is not None and transform != "rigid"
    sizes = (fixed_pixel_size_um, moving_pixel_size_um) if known else (1.0, 1.0)
    factor_f, factor_m = _overview_factors(fixed, moving, *sizes, coarse_side)
    thresholds = dict(score_threshold=card.score_threshold, detail_threshold=card.detail_threshold,
                      device=model.device)

    # 1. Overview: both images at about one physical pixel size; a global search.
    yield Progress("register", 0, 0, f"an overview search on both images at 1/{max(factor_f, factor_m)} "
                   "of their size")
    fixed_lo, moving_lo = read_reduced(fixed, factor_f), read_reduced(moving, factor_m)
    expected_scale = (sizes[1] * factor_m) / (sizes[0] * factor_f)  # fixed px per moving px
    if known:
        overview_scale = (expected_scale / 1.05, expected_scale * 1.05)
    elif scale_range is not None:
        overview_scale = tuple(s * factor_m / factor_f for s in scale_range)
    else:
        overview_scale = None
    overview_model = "rigid" if transform == "rigid" else "similarity"
    coarse = register(*compute_comir_pair(model, fixed_lo.pixels, fixed_modality,
                                          moving_lo.pixels, moving_modality),
                      transform=overview_model, rotation_range=rotation_range,
                      scale_range=overview_scale, border=math.ceil(border / factor_f), **thresholds)
    estimate = fixed_lo.to_full().compose(coarse.transform).compose(moving_lo.to_full().inverse())
    timings = {"coarse": coarse.seconds}
    if max(factor_f, factor_m) == 1:
        coarse.transform, coarse.seconds = estimate, time.perf_counter() - start
        yield Progress("register", 1, 1, "registered", result=coarse)
        return

    # 2. Windows at the model's scale, spread over the tissue.
    refine_f = refine_m = 1
    if known and card.pixel_size_um:
        refine_f = max(1, min(factor_f, round(card.pixel_size_um / fixed_pixel_size_um)))
        refine_m = max(1, min(factor_m, round(card.pixel_size_um / moving_pixel_size_um)))
    scale = math.sqrt(abs(np.linalg.det(estimate.matrix_xy[:2, :2])))
    window_scale = scale * refine_m / refine_f
    margin_f = math.ceil(2 * factor_f / refine_f) + 16  # the overview is good to ~a coarse pixel
    fixed_points, moving_points, windows, tried = [], [], [], 0
    angle = coarse.transform.angle_deg
    window_full = window * refine_m

    def inside_fixed(start) -> bool:
        corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) * window_full + start[::-1]
        mapped = estimate.apply_xy(corners)
        pad = margin_f * refine_f
        return bool(mapped.min() >= pad and (mapped[:, 0].max() <= fixed.shape[1] - pad)
                    and mapped[:, 1].max() <= fixed.shape[0] - pad)

    # A window's own scale is no better than the overview's (it fitted 1.025 for 1.0 on 256 px
    # windows): where both show about one pixel size, windows fit rotation and shift only.
    local_model = "rigid" if transform == "rigid" or abs(window_scale - 1) < 0.01 else "similarity"
    # Windows that overlap give no lever arm, only edge-cut duplicates: one central window then.
    if max(moving.shape[:2]) < 2.5 * window_full:
        n_windows = 1
    starts = _tissue_windows(moving_lo, moving.shape, window_full, n_windows, inside_fixed)
    for number, (row, col) in enumerate(starts, start=1):
        yield Progress("register", number, len(starts) + 1,
                       f"overview: {angle:.1f}°; window {number} of {len(starts)} at the model's scale")
        moving_win = read_reduced(moving, refine_m, slice(row, row + window_full),
                                  slice(col, col + window_full))
        if min(moving_win.pixels.shape[:2]) < 64:
            continue
        centre = moving_win.to_full().apply_xy([[(moving_win.pixels.shape[1] - 1) / 2,
                                                 (moving_win.pixels.shape[0] - 1) / 2]])
        centre_f = estimate.apply_xy(centre)[0]
        half = (window * window_scale / 2 + margin_f) * refine_f
        rows_f = slice(max(0, int(centre_f[1] - half)), max(0, int(centre_f[1] + half)))
        cols_f = slice(max(0, int(centre_f[0] - half)), max(0, int(centre_f[0] + half)))
        fixed_win = read_reduced(fixed, refine_f, rows_f, cols_f)
        if min(fixed_win.pixels.shape[:2]) < 64:
            continue
        local = register(*compute_comir_pair(model, fixed_win.pixels, fixed_modality,
                                             moving_win.pixels, moving_modality),
                         transform=local_model,
                         rotation_range=(angle - fine_range_deg, angle + fine_range_deg),
                         scale_range=None if local_model == "rigid" else (
                             window_scale * (1 - fine_range_deg / 100),
                             window_scale * (1 + fine_range_deg / 100)),
                         border=border, **thresholds)
        tried += 1
        timings[f"window {tried}"] = local.seconds
        if not local.success_likely:
            continue
        # Points a quarter window from the centre, mapped by the window's own answer.
        h, w = moving_win.pixels.shape[:2]
        local_points = np.array([[w / 2, h / 2], [w / 4, h / 4], [3 * w / 4, h / 4],
                                 [w / 4, 3 * h / 4], [3 * w / 4, 3 * h / 4]])
        moving_points.append(moving_win.to_full().apply_xy(local_points))
        fixed_points.append(fixed_win.to_full().apply_xy(local.transform.apply_xy(local_points)))
        windows.append(local)
    result = _joint_fit(coarse, estimate, windows, tried, fixed_points, moving_points, transform,
                        refine_f, moving.shape, timings, start)
    yield Progress("register", len(starts) + 1, len(starts) + 1,
                   f"fitted to {len(windows)} of {tried} windows", result=result)


def _simplest_fit(fixed_xy: np.ndarray, moving_xy: np.ndarray, transform: str,
                  gain_px: float) -> AffineTransform:
    """The simplest model up to ``transform`` whose RMS residual is within ``gain_px`` of the
    loosest's: a few windows' points would otherwise let an affine fit their noise as shear."""
    fits = []
    for model in MODELS[:MODELS.index(transform) + 1]:
        try:
            fitted, residuals = fit_landmarks(fixed_xy, moving_xy, model)
        except InputError:  # too few or collinear points for this model
            continue
        fits.append((fitted, float(np.sqrt(np.mean(residuals**2)))))
    loosest = fits[-1][1]
    return next(fitted for fitted, rms in fits if rms <= loosest + gain_px)


def _joint_fit(coarse: RegistrationResult, estimate: AffineTransform, windows, tried: int,
               fixed_points, moving_points, transform: str, refine_f: int, moving_shape, timings,
               start: float) -> RegistrationResult:
    """The model fitted to the agreeing windows' points, with its verdict."""
    found = estimate
    tolerance = WINDOW_TOLERANCE_PX * refine_f
    keep = list(range(len(windows)))
    while keep:
        # With three windows or more, their centres alone (the best-known point of each) fix
        # rotation and scale over the lever arm between them.
        points = slice(0, 1) if len(keep) >= 3 else slice(None)
        found = _simplest_fit(np.concatenate([fixed_points[i][points] for i in keep]),
                              np.concatenate([moving_points[i][points] for i in keep]), transform,
                              MODEL_GAIN_PX * refine_f)
        misses = [float(np.linalg.norm(found.apply_xy(moving_points[i]) - fixed_points[i],
                                       axis=1).max()) for i in keep]
        worst = int(np.argmax(misses))
        if misses[worst] <= tolerance or len(keep) == 1:
            break
        keep.pop(worst)
    agreeing = [windows[i] for i in keep]
    needed = 2 if tried >= 2 else 1
    # The verdict is the windows': the overview's details are blurred away by design.
    reasons = []
    if len(agreeing) < needed:
        found = estimate
        reasons = coarse.reasons + [
            f"only {len(agreeing)} of {tried} full-scale windows matched (need {needed}): the "
            "overview's answer is kept, good to about a coarse pixel"]
    score = float(np.median([w.score for w in agreeing])) if agreeing else coarse.score
    detail = float(np.median([w.detail_score for w in agreeing])) if agreeing else coarse.detail_score
    likely = len(agreeing) >= needed
    return RegistrationResult(found, score, time.perf_counter() - start, "pyramid", timings,
                              likely, detail, coarse.overlap, reasons, tuple(moving_shape[:2]))
