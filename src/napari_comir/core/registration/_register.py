"""The engine of :func:`register`: input checks, the search or SIFT start, the refinement of
every model up to the one asked for, and the verdict (see the package's docstring)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..defaults import (
    DEFAULT_METHOD,
    DEFAULT_ROTATION_RANGE,
    DEFAULT_SCALE_RANGE,
    DEFAULT_TRANSFORM,
    REGISTRATION_METHODS,
    SUCCESS_FRACTION,
    WIDEST_SCALE_RANGE,
)
from ..device import resolve_device
from ..errors import InputError, RegistrationError
from ..transforms import MODELS, AffineTransform, corner_error
from . import confidence
from .confidence import DETAIL_THRESHOLD, SCORE_THRESHOLD
from .levels import block_mean, from_level, pyramid_factors, standardise
from .refine import constrain, masked_ncc
from .refine import refine as refine_candidates
from .search import global_search, rim_radius, search_angles, search_scales
from .sift import sift_transform

#: Minimum overlap, as a fraction of the smaller image's area, for a transform to be considered.
MIN_OVERLAP = 0.25
#: Smallest image side accepted (pixels): the global search works on images of at least 8 px a
#: side, and below 32 px a chance match is as good as a true one (docs/benchmarks.md, confidence).
MIN_SIZE = 32
#: Most elongated image accepted (long side / short side). The search turns the image on a
#: canvas as wide as its diagonal: for a thin strip that canvas, and the memory, grow with the
#: long side squared (64 x 4096 took 9.9 GiB) while a turned strip meets the other image in a
#: sliver. Cut long strips into near-square tiles instead.
MAX_ASPECT = 8.0
#: Long side of the smaller image at the global-search level (pixels), when ``downsample=None``.
#: 50 rather than 40: CoMIRs of a model trained on one pair for a minute keep too little at 40 px
#: to be found (docs/benchmarks.md, one-pair training); ~6 ms more per 300² pair on 2 CPU cores.
SEARCH_SIZE = 50
#: Longest side of either image in the global search: one image much larger than the other (a
#: crop against a whole field, pixel sizes 1:8) is reduced further, or the search compares
#: hundreds of angles at full resolution (64² against 512² took 1.4 GiB and 36 s, 512² against
#: 64² over 400 s).
MAX_SEARCH_SIDE = 4 * SEARCH_SIZE
#: Angle step of the global search: this many search-level px of arc at the rim of what is
#: compared (the disc inscribed in the moving image, or its corners).
ANGLE_STEP_PX = 3.0
#: Scale step of the global search: this many search-level px of radial displacement at the rim
#: (4 scales over 0.8-1.25 at ~50 px). 3 px gave 5 scales, the same results on the raw and the
#: synthetic cases, and a search 25 % slower (docs/benchmarks.md, "Real pairs").
SCALE_STEP_PX = 4.0
#: Number of (angle, scale, shift) candidates of the global search that are refined.
N_CANDIDATES = 3
#: How much more significant (detail score, see :mod:`.confidence`) a looser transform model's
#: fit must be to be kept over a stricter one's. The raw pancreas cases gained 5-11 from affine
#: over similarity; rigid synthetic cases gained at most 0.1, and lost precision (docs/benchmarks.md).
MODEL_SELECTION_GAIN = 1.0

#: Or this share of the loosest fit's detail score, where that is less and the score reaches
#: the detail threshold: a gain counts against how significant the details are. Serial H&E/IHC
#: sections (an affine stretch of 1-4 % between sections; details 1-4) gained 21-41 % of the
#: loosest fit's detail score from affine over similarity or rigid, and stepping down cost
#: 0.5-2.7 px of landmark error; rigid synthetic pairs gain at most 4 % (hard) and 1 % (+-30 deg)
#: (docs/benchmarks.md, "A looser model kept for serial sections").
MODEL_SELECTION_SHARE = 0.15

#: Below this many times the detail threshold, the loosest fit's details are too weak to tell
#: a looser model's gain from fitted noise: the strictest model within reach is kept. (Hard
#: 256² synthetic rigid pairs kept affine fits 2-3x as far off as their rigid fits.)
WEAK_DETAIL_FACTOR = 2.0

#: With weak details, how much worse (detail score) than the loosest fit's a stricter model's fit
#: may make them agree and still be stepped down to (or :data:`MODEL_SELECTION_SHARE` of the
#: loosest fit's, where that is less and it reaches the threshold). Serial H&E/IHC sections
#: registered by a model taught on another stain stepped down to rigid fits losing 0.57-0.60 in
#: detail score and 1.3-3 px of landmark error (Cc10 14.0 -> 12.2 px as similarity, proSPC 14.4 ->
#: 11.4 px as affine: best affine maps 10.8 and 10.3); each step on the 40 hard synthetic rigid
#: pairs lost at most 0.03 (docs/benchmarks.md, "Precision and speed, third pass").
WEAK_STEP_LOSS = MODEL_SELECTION_GAIN / 2

#: Coarsest pyramid factor of a fit started near the answer (a given start, or a fit refitted
#: as another model): a short pyramid is enough there.
NEAR_START_FACTOR = 4

#: Gauss-Newton iterations at most of a stricter model's fit started from the loosest one's.
STRICTER_MAX_ITERATIONS = 4

#: How much better (detail score) a stricter model's own fit beyond :data:`SUCCESS_FRACTION`
#: of a result with weak details must make them agree for that result to be ambiguous. A 192 px
#: crop's affine fit 14 px off (detail 1.77, likely) had a similarity fit 12 px away at 2.59;
#: such rivals of 143 right crops and of the raw and synthetic pairs scored at most 0.25 better
#: (docs/benchmarks.md, "Crops of matching pairs").
RIVAL_GAIN = MODEL_SELECTION_GAIN / 2

METHODS = REGISTRATION_METHODS


def _constrained(transform: AffineTransform, model: str) -> AffineTransform:
    """``transform`` with its linear part projected onto ``model`` (see :func:`.refine.constrain`)."""
    m = transform.matrix_xy
    p = constrain(model, np.array([[*m[:2, :2].ravel(), *m[:2, 2]]]))[0]
    projected = np.eye(3)
    projected[:2, :2], projected[:2, 2] = p[:4].reshape(2, 2), p[4:]
    return AffineTransform(projected, model)


def _better_rival(f: torch.Tensor, m: torch.Tensor, details: tuple[torch.Tensor, torch.Tensor],
                  found: AffineTransform, detail: float, border: int) -> tuple[str, float, float] | None:
    """A stricter transform model's fit, started from ``found``'s projection and converged, that
    lies beyond a success's tolerance of ``found`` yet makes the details agree better by
    :data:`RIVAL_GAIN`: ``(model, its detail score, mean corner distance px)``, or ``None``.

    Weak details on a small overlap let a looser model bend the image to fit one part of it (a
    stretched crop, right only where it was pinned); a simpler model that explains more of the
    details elsewhere says the result is not the one the evidence supports.
    """
    for stricter in MODELS[: MODELS.index(found.model)]:
        edge = 0 if stricter == "rigid" else border  # as in the selection's fits
        fitted, _ = refine_candidates(f, m, [_constrained(found, stricter)], [1], stricter, MIN_OVERLAP, edge)
        distance = corner_error(found, fitted, m.shape[1:])
        rival_detail = confidence.detail_score(*details, fitted, MIN_OVERLAP, border)
        if distance > SUCCESS_FRACTION * m.shape[2] and rival_detail >= detail + RIVAL_GAIN:
            return stricter, rival_detail, distance
    return None


@dataclass
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes
    ----------
    transform : AffineTransform
        Moving -> fixed, in (x, y) pixel coordinates of the full-resolution images.
    score : float
        Masked NCC in [-1, 1] of fixed and warped moving on their overlap (mean over channels).
    seconds : float
        Wall time of the whole call.
    method : str
        ``"search"``, ``"sift"``, ``"initial"`` (refined from a given transform) or ``"pyramid"``.
    timings : dict of str to float
        Seconds per phase.
    success_likely : bool
        The verdict of :func:`napari_comir.core.registration.confidence.verdict`.
    detail_score : float
        How significantly the images' fine details agree under ``transform`` (see
        :func:`napari_comir.core.registration.confidence.detail_score`).
    overlap : float
        Overlap of the images under ``transform``, as a fraction of the smaller one.
    reasons : list of str
        Why success is unlikely, in plain words (empty when it is likely).
    moving_shape : tuple of int
        ``(rows, cols)`` of the moving image (the centre its decomposition is taken about).
    deformable : dict, optional
        With ``transform="deformable"``: the deformable stage's verdict
        (:meth:`.deformable.DeformableResult.summary`: kept, reasons, detail scores, largest
        displacement, least Jacobian); ``transform`` is then a
        :class:`~napari_comir.core.field_transform.DisplacementFieldTransform` when it was kept.
    """

    transform: AffineTransform
    score: float
    seconds: float
    method: str
    timings: dict[str, float] = field(default_factory=dict)
    success_likely: bool = False
    detail_score: float = 0.0
    overlap: float = 1.0
    reasons: list[str] = field(default_factory=list)
    moving_shape: tuple[int, int] = (0, 0)
    deformable: dict | None = None

    @property
    def moving_centre_xy(self) -> tuple[float, float]:
        """Centre (x, y) of the moving image, about which the transform reads most naturally."""
        return (self.moving_shape[1] - 1) / 2.0, (self.moving_shape[0] - 1) / 2.0

    def to_dict(self) -> dict:
        """The transform (with its decomposition about the moving centre), score, verdict, timing
        (and the deformable stage's verdict, when there was one)."""
        out = {**self.transform.to_dict(self.moving_centre_xy), "score": self.score,
               "detail_score": self.detail_score, "success_likely": self.success_likely,
               "reasons": list(self.reasons),
               "overlap": self.overlap, "seconds": self.seconds, "timings": dict(self.timings),
               "method": self.method}
        if self.deformable is not None:
            out["deformable"] = dict(self.deformable)
        return out


# ----------------------------------------------------------------------------- input checks


def as_chw(image, name: str) -> np.ndarray:
    """Validate an (H, W) or (H, W, C) image and return it as float32 (C, H, W)."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise InputError(f"{name} image is empty (shape {arr.shape})")
    if arr.ndim not in (2, 3):
        raise InputError(f"{name} image must be 2-D (H, W) or 3-D (H, W, C), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"{name} image must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32) if arr.ndim == 3 else arr.astype(np.float32)[..., None]
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} image contains NaN or infinite values")
    if min(arr.shape[:2]) < MIN_SIZE:
        raise InputError(
            f"{name} image is too small to register: {arr.shape[0]} x {arr.shape[1]} px (need at "
            f"least {MIN_SIZE} x {MIN_SIZE}: smaller images match noise as well as tissue)")
    if max(arr.shape[:2]) > MAX_ASPECT * min(arr.shape[:2]):
        raise InputError(
            f"{name} image is too thin to register: {arr.shape[0]} x {arr.shape[1]} px (at most "
            f"{MAX_ASPECT:g}:1; the search turns it on a canvas as wide as its diagonal)")
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
    std = chw.reshape(chw.shape[0], -1).std(axis=1)
    if np.all(std <= 1e-6 * (1.0 + np.abs(chw).max())):
        raise RegistrationError(f"{name} image is constant — nothing to register")
    return chw


def angle_bounds(rotation_range) -> tuple[float, float]:
    """Return ``(lo, hi)`` degrees from ``r`` (meaning ``[-r, r]``) or a ``(lo, hi)`` pair."""
    try:
        if np.ndim(rotation_range) == 0:
            r = float(rotation_range)
            lo, hi = -r, r
        else:
            lo, hi = (float(v) for v in rotation_range)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"rotation_range must be a number r (search [-r, r] degrees) or a (lo, hi) pair, "
            f"got {rotation_range!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or hi - lo > 360.0 or lo < -360.0:
        raise InputError(
            f"rotation_range must satisfy lo <= hi, hi - lo <= 360 and finite values "
            f"(a single r must be in [0, 180]), got ({lo}, {hi})")
    return lo, hi


def scale_bounds(scale_range, model: str) -> tuple[float, float]:
    """``(lo, hi)`` scales to search: ``None`` gives the model's default (1 for rigid)."""
    if model == "rigid":
        if scale_range is not None and tuple(float(v) for v in scale_range) != (1.0, 1.0):
            raise InputError("a rigid transform does not scale: use transform='similarity' or "
                             "'affine' with a scale_range")
        return 1.0, 1.0
    if scale_range is None:
        return DEFAULT_SCALE_RANGE
    try:
        lo, hi = (float(v) for v in scale_range)
    except (TypeError, ValueError) as exc:
        raise InputError(f"scale_range must be a (low, high) pair of scales, got {scale_range!r}") from exc
    widest = WIDEST_SCALE_RANGE
    if not (widest[0] <= lo <= hi <= widest[1]):
        raise InputError(
            f"scale_range must satisfy {widest[0]} <= low <= high <= {widest[1]}, got ({lo}, {hi}); "
            "for images of very different pixel sizes give the pixel sizes instead")
    return lo, hi


def check_model(model: str) -> str:
    """``model`` if it names a transform model, else an InputError naming the choices."""
    if model not in MODELS:
        raise InputError(f"transform must be one of {', '.join(MODELS)}, got {model!r}")
    return model


def transform_score(fixed, moving, transform: AffineTransform, *, device=None) -> float:
    """The score :func:`register` gives a transform it is started at and not let refine: the NCC
    of the two images (e.g. CoMIRs) on their overlap under ``transform`` (moving -> fixed (x, y)
    px), averaged over channels; -1 where they overlap too little (:data:`MIN_OVERLAP`)."""
    dev = resolve_device(device)
    f, m = (standardise(torch.from_numpy(as_chw(image, name)).to(dev))
            for image, name in ((fixed, "fixed"), (moving, "moving")))
    return masked_ncc(f, m, transform, MIN_OVERLAP)


# ----------------------------------------------------------------------------- public API


def register(
    fixed,
    moving,
    *,
    method: str = DEFAULT_METHOD,
    transform: str = DEFAULT_TRANSFORM,
    rotation_range=DEFAULT_ROTATION_RANGE,
    scale_range=None,
    angle_step=None,
    refine: bool = True,
    downsample=None,
    border: int = 0,
    select_model: bool = True,
    initial: AffineTransform | None = None,
    device=None,
    score_threshold: float = SCORE_THRESHOLD,
    detail_threshold: float = DETAIL_THRESHOLD,
) -> RegistrationResult:
    """Find the transform that maps the moving image onto the fixed image.

    Parameters
    ----------
    fixed : np.ndarray
        (H, W) or (H, W, C) image, e.g. a CoMIR of the fixed modality.
    moving : np.ndarray
        (h, w) or (h, w, C) image with the same number of channels; sizes may differ.
    method : {"search", "sift"}
        ``"search"``: exhaustive FFT search over rotations, scales and translations (robust, any
        angle). ``"sift"``: SIFT feature matching + RANSAC (first channel only).
    transform : {"rigid", "similarity", "affine"}
        The transform model: rotation + translation; + isotropic scale; or any affine map (see
        ``select_model``).
    rotation_range : float or (float, float)
        ``r`` searches angles in ``[-r, r]`` degrees (180 = full circle); a pair searches
        ``[lo, hi]``. Angles are in the (x, y) frame: positive is clockwise on screen.
        Only used by ``"search"``.
    scale_range : (float, float), optional
        Scales (fixed px per moving px) searched; default :data:`DEFAULT_SCALE_RANGE` for
        similarity and affine, 1 for rigid. At most :data:`WIDEST_SCALE_RANGE`.
    angle_step : float, optional
        Angle spacing (degrees) of the global search; default: :data:`ANGLE_STEP_PX` of arc at the
        rim of what the search level compares (6.9° for a 300² image).
    refine : bool
        Refine the transform sub-pixel, coarse to fine, up to full resolution.
    downsample : int, optional
        Block-averaging factor of the global search; default makes the smaller image ~50 px.
    border : int
        Pixels along both images' edges left out of the similarity and affine refinements and of
        the detail score (a CoMIR's edge is unreliable and pulls the scale: see
        :func:`napari_comir.core.registration.refine.refine`).
    initial : AffineTransform, optional
        Start the refinement here (moving -> fixed, e.g. from landmarks) instead of searching:
        for a pair the search gets wrong, or to check a transform found elsewhere.
    select_model : bool
        Fit every model from rigid up to ``transform`` and keep the simplest whose details agree
        about as well as any looser one's (by :data:`MODEL_SELECTION_GAIN`, or
        :data:`MODEL_SELECTION_SHARE` of the loosest fit's detail score when it reaches
        ``detail_threshold``), or the strictest
        within reach when the details are weak (:data:`WEAK_DETAIL_FACTOR`) that they do not
        reject (:data:`WEAK_STEP_LOSS`); ``transform`` is then the loosest model allowed.
        ``False`` fits ``transform`` alone. Either way, with weak details the loosest model is
        also fitted from a rigid fit at scale 1 (the pixel sizes' scale, when 1 is searched) and
        the fit whose details agree better is kept: a fit free to scale drifts with them.
    device : str or torch.device, optional
        Torch device (see :func:`napari_comir.core.device.resolve_device`); ``None`` = "auto".
    score_threshold, detail_threshold : float
        Least score and detail score (see :mod:`.confidence`) for ``success_likely``; the
        defaults suit two images of one modality, a CoMIR model's card gives the values measured
        for its CoMIRs.

    Returns
    -------
    RegistrationResult
        ``transform`` maps moving (x, y) pixel coordinates to fixed (x, y) pixel coordinates;
        use ``transform.matrix_rc`` as the napari ``affine`` of the moving layer.

    Raises
    ------
    InputError
        Unusable images or parameters (shape, channels, NaN/inf, too small, bad range).
    RegistrationError
        Constant image, no valid overlap, or too few SIFT matches.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    model = check_model(transform)
    f_np, m_np = as_chw(fixed, "fixed"), as_chw(moving, "moving")
    if f_np.shape[0] != m_np.shape[0]:
        raise InputError(
            f"fixed and moving images must have the same number of channels, got "
            f"{f_np.shape[0]} and {m_np.shape[0]}")
    lo, hi = angle_bounds(rotation_range)
    scale_lo, scale_hi = scale_bounds(scale_range, model)
    if angle_step is not None and not (math.isfinite(float(angle_step)) and float(angle_step) > 0):
        raise InputError(f"angle_step must be a positive number of degrees, got {angle_step!r}")
    small = min(max(f_np.shape[1:]), max(m_np.shape[1:]))
    large = max(*f_np.shape[1:], *m_np.shape[1:])
    if downsample is None:
        k = max(1, round(small / SEARCH_SIZE), math.ceil(large / MAX_SEARCH_SIDE))
    elif isinstance(downsample, (int, np.integer)) and downsample >= 1:
        k = int(downsample)
    else:
        raise InputError(f"downsample must be a positive integer or None, got {downsample!r}")
    k = min(k, max(1, min(*f_np.shape[1:], *m_np.shape[1:]) // 8))  # keep >= 8 px per side
    if not (isinstance(border, (int, np.integer)) and border >= 0):
        raise InputError(f"border must be a non-negative integer number of pixels, got {border!r}")
    dev = resolve_device(device)
    f = standardise(torch.from_numpy(f_np).to(dev))
    m = standardise(torch.from_numpy(m_np).to(dev))
    timings = {"prepare": time.perf_counter() - t0}

    t1 = time.perf_counter()
    if initial is not None:
        if not isinstance(initial, AffineTransform):
            raise InputError(f"initial must be an AffineTransform, got {type(initial).__name__}")
        candidates, method = [initial], "initial"
    elif method == "search":
        fk, mk = block_mean(f, k), block_mean(m, k)
        rim = rim_radius(mk)
        step = float(angle_step) if angle_step is not None else math.degrees(ANGLE_STEP_PX / rim)

        def search(scales) -> list[AffineTransform]:
            found = global_search(fk, mk, search_angles(lo, hi, step), scales, N_CANDIDATES,
                                  MIN_OVERLAP)
            if not found:
                raise RegistrationError("no rotation/translation gives enough overlap to compare "
                                        "the images")
            return [from_level(c.transform, k) for c in found]

        candidates = search(search_scales(scale_lo, scale_hi, SCALE_STEP_PX / rim))
    else:
        candidates = [sift_transform(f_np, m_np, model)]
    timings[method] = time.perf_counter() - t1
    if initial is not None:
        k = max(1, min(k, NEAR_START_FACTOR))

    t2 = time.perf_counter()
    factors = pyramid_factors(k) if method != "sift" else [1]
    sigma = confidence.detail_sigma(f, m)
    fixed_details, moving_details = confidence.details(f, sigma), confidence.details(m, sigma)

    def fit(start: list[AffineTransform], fit_model: str, levels: list[int], iterations=None):
        if refine:
            # Edge artefacts pull a fit only through its scale: a rigid fit keeps every pixel
            # (0.17-0.45 px instead of 0.42-0.6 px on 300² rigid cases).
            edge = 0 if fit_model == "rigid" else int(border)
            fitted, score = refine_candidates(f, m, start, levels, fit_model, MIN_OVERLAP, edge,
                                              iterations)
        else:
            fitted = _constrained(start[0], fit_model)
            score = masked_ncc(f, m, fitted, MIN_OVERLAP)
        detail = confidence.detail_score(fixed_details, moving_details, fitted, MIN_OVERLAP, int(border))
        return fitted, score, detail

    # The loosest model allowed, coarse to fine; then each stricter one from its projection, at
    # full resolution only. The simplest model that fits wins: a looser one must make the details
    # agree significantly better (fitted to a rigid pair it only adds noise).
    best = loosest = fit(candidates, model, factors)
    if loosest[2] < WEAK_DETAIL_FACTOR * detail_threshold and method == "search" and \
            model != "rigid" and scale_lo <= 1.0 <= scale_hi:
        # Weak details let a fit free to scale settle where the search's coarse scales left it
        # (serial sections: 1.11 for 1.02, 17 px off at the corners): the same model fitted
        # again from a rigid fit at the scale the pixel sizes give, the better kept.
        rigid = fit(search([1.0]), "rigid", factors)
        again = fit([rigid[0]], model, pyramid_factors(max(1, min(k, NEAR_START_FACTOR))))
        if again[2] > loosest[2]:
            best = loosest = again
    weak = loosest[2] < WEAK_DETAIL_FACTOR * detail_threshold
    # A share of details that are significant counts too; below the threshold they are chance,
    # and a looser model's gain in them is fitted noise.
    share = MODEL_SELECTION_SHARE * loosest[2] if loosest[2] >= detail_threshold else math.inf
    if select_model:
        previous = loosest
        for stricter in reversed(MODELS[: MODELS.index(model)]):
            # Weak details: step down one model at a time, to the strictest within reach
            # that the details do not reject.
            source = previous if weak else loosest
            start = _constrained(source[0], stricter)
            # A stricter model that cannot come within a success's tolerance of the looser fit
            # would be a failure if that fit is right.
            if corner_error(source[0], start, m_np.shape[1:]) > SUCCESS_FRACTION * m_np.shape[2]:
                continue
            # Near the looser fit it converges in 2-3 steps; one that needs more is far from it
            # (weak details: it is kept, so it converges fully).
            fitted = fit([start], stricter, factors[-1:], None if weak else STRICTER_MAX_ITERATIONS)
            loss = loosest[2] - fitted[2]
            if weak and loss > min(WEAK_STEP_LOSS, share):
                break  # even weak details say the stricter model misses what the looser one fits
            if weak or loss < min(MODEL_SELECTION_GAIN, share):
                best = previous = fitted
    found_transform, score, detail = best
    rival = None
    if detail_threshold <= detail < WEAK_DETAIL_FACTOR * detail_threshold:
        rival = _better_rival(f, m, (fixed_details, moving_details), found_transform, detail, int(border))
    timings["refine" if refine else "score"] = time.perf_counter() - t2
    overlap = confidence.overlap_fraction(f.shape[1:], m.shape[1:], found_transform)
    likely, reasons = confidence.verdict(found_transform, score, detail, overlap,
                                         (score_threshold, detail_threshold), (scale_lo, scale_hi),
                                         rival)
    return RegistrationResult(
        transform=found_transform, score=score, seconds=time.perf_counter() - t0, method=method,
        timings=timings, success_likely=likely, detail_score=detail, overlap=overlap,
        reasons=reasons, moving_shape=tuple(m_np.shape[1:]))
