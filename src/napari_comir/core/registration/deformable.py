"""Deformable refinement of an affine result on the CoMIRs: a smooth, bounded, fold-free field.

Serial sections stretch and tear a little; an affine map leaves several px where they do. This
stage starts from the affine result ``A`` (moving -> fixed), resamples the moving CoMIR onto the
fixed grid with it, and fits a displacement field ``u`` (fixed px) so that the fixed CoMIR at
``p`` matches the affinely resampled moving one at ``p + u(p)``:

1. ``u`` comes from block matching (:mod:`.block_matching`): on a block mean of at most
   :data:`WORK_SIDE` px a side, each fixed block of :data:`BLOCK_HALF` * 2 px (centres
   :data:`BLOCK_SPACING` px apart) finds its best shift in the resampled moving CoMIR by NCC,
   up to :data:`SEARCH_RADIUS` px; the distinctive shifts that agree with their neighbours give
   ``u`` by Gaussian kernel regression (:data:`SMOOTHING_SIGMA`). On serial sections this matched
   or beat a B-spline fitted to the whole image by gradient descent on every H&E-vs-IHC pair
   (docs/benchmarks.md, "Block matching"): regions whose cells differ between the sections find
   no distinctive shift and no longer pull the field.
2. Displacements longer than ``max_displacement_px`` are shortened to it: no point moves
   further than that beyond the affine result.
3. The result is checked: no fold (det(I + grad u) > :data:`MIN_JACOBIAN` on every node of the
   stored field) and an inverse field that converges; otherwise the affine result stands.
4. **Verdict**: the detail score (as :func:`.confidence.detail_score`: Fisher's z of the NCC of
   the CoMIRs' details, here band-passed (:func:`_band`), times the square root of the overlap
   in detail patches) with the field must beat the affine result's, on the same overlap, by
   :data:`MIN_DETAIL_GAIN` (the difference over sqrt 2) — beyond what fitting a smooth field to
   an already aligned pair gives (docs/benchmarks.md, "Deformable refinement"); or, with a
   smaller gain that is still a gain, the field fitted the other way round (the fixed CoMIR onto
   the moving one, from the inverse affine result) must reproduce it
   (:data:`MAX_INCONSISTENCY`). Otherwise the affine result stands, with the reason.

The work level is the coarsest block mean with a long side of at most :data:`WORK_SIDE` px
(px below are of that level): a field smooth over tens of px is found there as well as at full
size, in a bounded time whatever the image size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..errors import InputError
from ..field_transform import DisplacementFieldTransform, coverage, grid_shape, resample
from ..transforms import AffineTransform
from . import confidence
from .block_matching import match_blocks, reject_outliers, smooth_field
from .image_detail import with_image_detail
from .levels import block_mean, standardise

#: Long side (px) of the level the field is fitted on: larger images are fitted on block means.
WORK_SIDE = 512
#: Block matching on that level (see :mod:`.block_matching`): centres' spacing, half the block
#: side and the largest shift searched (px), and the kernel regression's Gaussian sigma (px).
BLOCK_SPACING = 8
BLOCK_HALF = 16
SEARCH_RADIUS = 8
SMOOTHING_SIGMA = 20.0
#: Long side (px) of the block mean the verdict compares details on (its thresholds below were
#: set there).
VERDICT_SIDE = 256
#: Default bound on how far the field may move a point beyond the affine result, as a fraction
#: of the fixed image's long side.
MAX_DISPLACEMENT_FRACTION = 0.05
#: Least det(I + grad u) accepted: the field neither folds nor squeezes tissue to nothing.
MIN_JACOBIAN = 0.1
#: Least detail-score gain (z) for the field to be kept over the affine result without more:
#: block-matched fields of smooth deformations (<= 10 px) of BF/SHG CoMIRs gained 0.4-1.8,
#: fields fitted to the aligned pairs themselves (their own 1-2 px residual) 0.2-0.8, noise
#: fitted on an aligned pair under heavy noise 0.07-0.09 (docs/benchmarks.md, "Block matching").
MIN_DETAIL_GAIN = 1.5
#: Most the field fitted the other way round (the fixed CoMIR onto the moving one, from the
#: inverse affine result) may differ from the field, as a fraction of how far the field moves
#: points beyond the affine result, for a field whose gain is not significant to be kept all
#: the same. Two fits agree only where the images hold the deformation; a field fitted to
#: details that differ between the images (serial sections) or to noise is not reproduced.
#: Block-matched fields on the H&E-vs-IHC serial sections, all of which helped (0.6-1.5 px, the
#: bundled and three held-out models), differed by 0.19-0.48 of their displacement; noise fitted
#: on an aligned pair under heavy noise (tests/core/test_deformable.py, four draws) by 0.52-1.23,
#: and those fields move points by at most 0.8-1.7 px (docs/benchmarks.md, "Block matching"; the
#: B-spline fields before: helpful 0.21-0.48, harmful 0.97-1.21).
MAX_INCONSISTENCY = 0.5
#: Least ratio of the share of blocks matched (:mod:`.block_matching`) to the share matched
#: against the moving image turned half a turn, for the field to be kept at all. NCC is symmetric,
#: so a block's chance match is found again the other way round: the reproduction above cannot
#: tell a field of chance matches (noise, mismatched cores: 1.0-1.2, three of four noise fields
#: were reproduced) from a real one (serial sections, smooth deformations: 2.2-5.3)
#: (docs/benchmarks.md, "Block matching").
MIN_MATCH_RATIO = 1.5
#: Spacing (fixed px) of the points on which the two fits are compared, and their least
#: distance from either image's edge as a fraction of its long side (near an edge, where the
#: images end, neither fit is held by anything).
CONSISTENCY_SPACING_PX = 8
CONSISTENCY_MARGIN = 0.05
#: Least node spacing (fixed px) of the stored field, and most nodes along its long side: finer
#: adds size and the work of inverting, reviewing and applying it, not precision (bilinear between
#: nodes of a field smooth over SMOOTHING_SIGMA px of a level twice as fine).
MIN_STORAGE_SPACING = 4
MAX_STORED_NODES = 256
#: Gaussian sigma (px) of the finest detail the verdict leaves out (see :func:`_band`).
FINEST_DETAIL_SIGMA = 1.0


@dataclass
class DeformableResult:
    """Outcome of :func:`register_deformable`.

    Attributes
    ----------
    transform : DisplacementFieldTransform or AffineTransform
        The field when it was kept, else the affine result it started from.
    kept : bool
        Whether the field was kept (the verdict).
    reasons : list of str
        Why the field was not kept, in plain words (empty when kept).
    field : DisplacementFieldTransform or None
        The field found (also when not kept, for review), ``None`` when it folded.
    affine_detail_score, deformable_detail_score : float
        Detail scores (see :mod:`.confidence`) of the affine result and of the field, on the
        same overlap.
    detail_gain : float
        ``(deformable - affine) / sqrt(2)``: the gain's significance.
    max_displacement_px, min_jacobian : float
        Of the field found (0 and 1 when none).
    mean_displacement_px : float
        The field's mean displacement over the overlap (its nodes the affinely placed moving
        image covers): what it typically does, where ``max_displacement_px`` is often an edge's.
    inconsistency : float or None
        How far the field fitted the other way round puts the fixed image's points in the moving
        one from where the field puts them, as a fraction of the field's own displacement (mean
        over the overlap; ``inf`` when the field fitted the other way round folds); measured
        only for a field whose gain is positive but not significant, else ``None``.
    matched_share, chance_share : float or None
        The share of the fixed image's blocks that found a distinctive match in the moving
        image, and in the moving image turned half a turn (what chance gives these textures);
        ``None`` when no field was fitted (it folded, or the overlap was too small).
    image_detail : bool
        Whether the images' tissue density was matched beside the CoMIRs (two colour bright
        fields, :mod:`.image_detail`).
    seconds : float
        Wall time.
    """

    transform: object
    kept: bool
    reasons: list[str] = field(default_factory=list)
    field: DisplacementFieldTransform | None = None
    affine_detail_score: float = 0.0
    deformable_detail_score: float = 0.0
    detail_gain: float = 0.0
    max_displacement_px: float = 0.0
    mean_displacement_px: float = 0.0
    min_jacobian: float = 1.0
    inconsistency: float | None = None
    matched_share: float | None = None
    chance_share: float | None = None
    image_detail: bool = False
    seconds: float = 0.0

    def summary(self) -> dict:
        """The verdict's numbers (no field arrays), for a result's JSON."""
        return {"kept": self.kept, "reasons": list(self.reasons),
                "affine_detail_score": self.affine_detail_score,
                "deformable_detail_score": self.deformable_detail_score,
                "detail_gain": self.detail_gain, "max_displacement_px": self.max_displacement_px,
                "mean_displacement_px": self.mean_displacement_px,
                "min_jacobian": self.min_jacobian, "seconds": self.seconds,
                "matched_share": self.matched_share, "chance_share": self.chance_share,
                "image_detail": self.image_detail,
                # JSON has no infinity: a backward fit that folded reads as unmeasured (None)
                "inconsistency": (self.inconsistency if self.inconsistency is not None
                                  and math.isfinite(self.inconsistency) else None)}


def displacement_text(summary: dict) -> str:
    """How far a field moves points beyond its affine part, in words, from a
    :meth:`DeformableResult.summary` (one written before the mean was recorded: the maximum)."""
    most = f"up to {summary['max_displacement_px']:.1f} px"
    mean = summary.get("mean_displacement_px")
    return most if mean is None else f"{mean:.1f} px on average over the overlap, {most}"


def _as_hwc(image, name: str) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or min(arr.shape[:2]) < 32:
        raise InputError(f"{name} CoMIR must be (rows, cols[, channels]) of at least 32 x 32 px, "
                         f"got shape {np.shape(image)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} CoMIR contains NaN or infinite values")
    return arr


def _level_px(k: int, n: int) -> np.ndarray:
    """Full-resolution positions of the n pixel centres of block-mean level ``k`` along an axis."""
    return k * np.arange(n) + (k - 1) / 2


def _on_level(k: int, full_px) -> np.ndarray:
    """Positions on block-mean level ``k`` of full-resolution positions (:func:`_level_px`'s inverse)."""
    return (np.asarray(full_px, float) - (k - 1) / 2) / k


def _warp(images: torch.Tensor, valid: torch.Tensor,
          displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) images read at ``p + displacement(p)`` ((2, H, W), px of these images), and
    the weight (H, W) of the pixels whose reading lies inside ``valid`` (1, H, W) there."""
    c, h, w = images.shape
    y, x = torch.meshgrid(torch.arange(h, device=images.device, dtype=images.dtype),
                          torch.arange(w, device=images.device, dtype=images.dtype), indexing="ij")
    grid = torch.stack([(x + displacement[0]) / max(w - 1, 1) * 2 - 1,
                        (y + displacement[1]) / max(h - 1, 1) * 2 - 1], dim=-1)[None]
    moved = F.grid_sample(torch.cat([images, valid])[None], grid, mode="bilinear",
                          padding_mode="zeros", align_corners=True)[0]
    return moved[:c], (moved[c] > 0.99).float()


def _masked_ncc(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """NCC of (C, H, W) ``a`` and ``b`` weighted by (H, W) ``weight``, averaged over channels."""
    total = weight.sum().clamp_min(1.0)
    ma = (a * weight).sum(dim=(1, 2)) / total
    mb = (b * weight).sum(dim=(1, 2)) / total
    da, db = (a - ma[:, None, None]) * weight, (b - mb[:, None, None]) * weight
    cov = (da * db).sum(dim=(1, 2))
    return (cov / ((da * da).sum(dim=(1, 2)) * (db * db).sum(dim=(1, 2))).sqrt().clamp_min(1e-12)).mean()


def _band(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`.confidence.details` without the finest scale (below :data:`FINEST_DETAIL_SIGMA`):
    interpolation blurs that scale by how far from a pixel centre it reads, which would favour
    whichever result happens to read nearer the centres, not the one that matches better."""
    return confidence.details(x, sigma) - confidence.details(x, FINEST_DETAIL_SIGMA)


def _detail_z(fixed_details: torch.Tensor, moving_details: torch.Tensor, weight: torch.Tensor) -> float:
    """The detail score of details already on one grid: Fisher z of their NCC over ``weight``
    times the square root of the overlap in detail patches (as :func:`.confidence.detail_score`)."""
    ncc = float(_masked_ncc(fixed_details, moving_details, weight))
    pixels = float(weight.sum())
    return float(np.arctanh(np.clip(ncc, -0.999999, 0.999999))
                 * np.sqrt(pixels / confidence.DETAIL_PATCH_PX))


class _Folded(Exception):
    """A field whose stored form folds (no inverse): the message says why."""

    def __init__(self, message: str, max_displacement_px: float):
        super().__init__(message)
        self.max_displacement_px = max_displacement_px


def _fitted_field(fixed_hwc: np.ndarray, moving_hwc: np.ndarray, affine: AffineTransform,
                  limit: float, dev, with_chance: bool = False):
    """The field on top of ``affine`` (moving -> fixed): the stored
    :class:`DisplacementFieldTransform`, the field's displacement at any full-resolution
    positions (a function of x and y px, see below) and the (fixed, affinely warped moving, valid)
    full-resolution tensors it was fitted to, and the share of blocks matched (and, ``with_chance``,
    the share matched against the moving image turned half a turn). Raises :class:`_Folded`."""
    rows, cols = fixed_hwc.shape[:2]
    warped_hwc = resample(moving_hwc, affine, (rows, cols), preserve_dtype=False)
    inside = coverage(moving_hwc.shape, affine, (rows, cols))
    to_chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().to(dev)  # noqa: E731
    fixed_t = standardise(to_chw(fixed_hwc))
    valid = torch.from_numpy(inside.astype(np.float32))[None].to(dev)
    warped_t = to_chw(warped_hwc)
    inside_mask = valid[0] > 0.99
    if int(inside_mask.sum()) < 64:
        raise InputError("the affine result leaves too little overlap for a deformable refinement")
    # Standardise the moving CoMIR on the overlap only: the zeros outside would skew it.
    mean = warped_t[:, inside_mask].mean(dim=1)[:, None, None]
    std = warped_t[:, inside_mask].std(dim=1).clamp_min(1e-12)[:, None, None]
    warped_t = torch.where(inside_mask, (warped_t - mean) / std, torch.zeros_like(warped_t))
    k = max(1, math.ceil(max(rows, cols) / WORK_SIDE))
    fixed_level, warped_level, valid_level = (block_mean(t, k) for t in (fixed_t, warped_t, valid))
    half = min(BLOCK_HALF, min(fixed_level.shape[1:]) // 2)
    covered = (valid_level[0] > 0.99).float()
    matches = match_blocks(fixed_level, warped_level, covered, spacing=BLOCK_SPACING, half=half,
                           radius=SEARCH_RADIUS)
    shares = [float((matches.weight > 0).mean())]
    if with_chance:  # the same blocks against the moving image turned half a turn
        chance = match_blocks(fixed_level, torch.flip(warped_level, (1, 2)), torch.flip(covered, (0, 1)),
                              spacing=BLOCK_SPACING, half=half, radius=SEARCH_RADIUS)
        shares.append(float((chance.weight > 0).mean()))
    matches = reject_outliers(matches, SMOOTHING_SIGMA)

    def field_at(x_px: np.ndarray, y_px: np.ndarray) -> np.ndarray:
        """(len y, len x, 2) displacement at full-resolution px, bounded by ``limit``."""
        return _bounded(k * smooth_field(matches, _on_level(k, x_px), _on_level(k, y_px),
                                         SMOOTHING_SIGMA), limit)

    spacing = max(MIN_STORAGE_SPACING, math.ceil(max(rows, cols) / MAX_STORED_NODES))
    n_rows, n_cols = grid_shape((rows, cols), spacing)
    displacement = field_at(spacing * np.arange(n_cols), spacing * np.arange(n_rows)).astype(np.float32)
    try:
        found = DisplacementFieldTransform.from_displacement(affine, displacement, spacing)
    except InputError as exc:
        raise _Folded(str(exc), float(np.linalg.norm(displacement, axis=-1).max())) from exc
    return found, field_at, (fixed_t, warped_t, valid), shares


def _mean_over_overlap(found: DisplacementFieldTransform, overlap: np.ndarray) -> float:
    """The field's mean displacement (fixed px) over its nodes inside ``overlap`` (rows, cols)."""
    rows, cols = (np.minimum(found.spacing_px * np.arange(n), size - 1).astype(int)
                  for n, size in zip(found.displacement_xy.shape[:2], overlap.shape, strict=True))
    covered = overlap[np.ix_(rows, cols)]
    return float(found.displacement_magnitude()[covered].mean()) if covered.any() else 0.0


def _bounded(displacement_xy: np.ndarray, limit: float) -> np.ndarray:
    """``displacement_xy`` (..., 2) with every vector longer than ``limit`` shortened to it."""
    length = np.linalg.norm(displacement_xy, axis=-1, keepdims=True)
    return displacement_xy * np.minimum(1.0, limit / np.maximum(length, 1e-12))


def _inconsistency(found: DisplacementFieldTransform, fixed_hwc: np.ndarray, moving_hwc: np.ndarray,
                   affine: AffineTransform, limit: float, dev) -> float:
    """How far the field fitted the other way round (the fixed CoMIR onto the moving one, from
    ``affine``'s inverse) puts the fixed image's points in the moving image from where ``found``
    puts them, as a fraction of how far ``found`` moves them beyond ``affine`` (means over the
    points of a :data:`CONSISTENCY_SPACING_PX` grid that both images hold, :data:`CONSISTENCY_MARGIN`
    inside their edges); ``inf`` when the other fit folds or nothing moves."""
    try:
        backward, *_ = _fitted_field(moving_hwc, fixed_hwc, affine.inverse(), limit, dev)
    except _Folded:
        return math.inf
    rows, cols = fixed_hwc.shape[:2]
    margin = CONSISTENCY_MARGIN * max(rows, cols)
    y, x = np.mgrid[margin:rows - margin:CONSISTENCY_SPACING_PX, margin:cols - margin:CONSISTENCY_SPACING_PX]
    fixed_xy = np.stack([x.ravel(), y.ravel()], axis=1).astype(float)
    by_affine = affine.inverse().apply_xy(fixed_xy)
    margin = CONSISTENCY_MARGIN * max(moving_hwc.shape[:2])
    inside = np.all((by_affine >= margin)
                    & (by_affine <= np.array(moving_hwc.shape[1::-1]) - 1 - margin), axis=1)
    if not inside.any():
        return math.inf
    by_field = found.fixed_to_moving_xy(fixed_xy[inside])
    moved = np.linalg.norm(by_field - by_affine[inside], axis=1).mean()
    differ = np.linalg.norm(backward.apply_xy(fixed_xy[inside]) - by_field, axis=1).mean()
    return float(differ / moved) if moved > 0 else math.inf


def register_deformable(fixed, moving, affine: AffineTransform, *, max_displacement_px=None,
                        device=None) -> DeformableResult:
    """Refine an affine result with a smooth displacement field on two CoMIRs, and judge it.

    Parameters
    ----------
    fixed, moving : np.ndarray
        (rows, cols[, channels]) CoMIRs (or any two images of one modality) with the same
        channels.
    affine : AffineTransform
        The affine result, moving -> fixed (pixel (x, y)).
    max_displacement_px : float, optional
        How far the field may move a point beyond the affine result (fixed px); default
        :data:`MAX_DISPLACEMENT_FRACTION` of the fixed image's long side.
    device : str or torch.device, optional
        Torch device (``None`` = "auto").

    Returns
    -------
    DeformableResult
        ``transform`` is the field when the verdict keeps it, else ``affine``; ``reasons`` say why.
    """
    t0 = time.perf_counter()
    if not isinstance(affine, AffineTransform):
        raise InputError(f"the deformable stage starts from an AffineTransform, got {type(affine).__name__}")
    fixed_hwc, moving_hwc = _as_hwc(fixed, "fixed"), _as_hwc(moving, "moving")
    if fixed_hwc.shape[2] != moving_hwc.shape[2]:
        raise InputError(f"fixed and moving CoMIRs must have the same channels, got "
                         f"{fixed_hwc.shape[2]} and {moving_hwc.shape[2]}")
    rows, cols = fixed_hwc.shape[:2]
    limit = (MAX_DISPLACEMENT_FRACTION * max(rows, cols) if max_displacement_px is None
             else float(max_displacement_px))
    if not (math.isfinite(limit) and limit > 0):
        raise InputError("max_displacement_px must be a positive number of pixels, "
                         f"got {max_displacement_px!r}")
    dev = resolve_device(device)
    result = DeformableResult(transform=affine, kept=False)
    try:
        found, field_at, (fixed_t, warped_t, valid), shares = _fitted_field(
            fixed_hwc, moving_hwc, affine, limit, dev, with_chance=True)
    except _Folded as exc:
        result.max_displacement_px = exc.max_displacement_px
        result.reasons.append(f"the field folds ({exc}); the affine result stands")
        result.seconds = time.perf_counter() - t0
        return result
    result.field, result.min_jacobian = found, found.min_jacobian
    result.matched_share, result.chance_share = shares
    result.max_displacement_px = found.max_displacement_px
    result.mean_displacement_px = _mean_over_overlap(found, valid[0].cpu().numpy() > 0.99)

    # The verdict, on the level its thresholds were set on: details of both results over the
    # overlap both share.
    k = max(1, math.ceil(max(rows, cols) / VERDICT_SIDE))
    fixed_level, warped_level, valid_level = (block_mean(t, k) for t in (fixed_t, warped_t, valid))
    level_field = field_at(_level_px(k, fixed_level.shape[2]), _level_px(k, fixed_level.shape[1])) / k
    level_field = torch.from_numpy(level_field.transpose(2, 0, 1).astype(np.float32)).to(dev)
    deformed, deformed_inside = _warp(warped_level, valid_level, level_field)
    weight = (valid_level[0] > 0.99).float() * deformed_inside
    sigma = confidence.detail_sigma(fixed_level)
    fixed_details = _band(fixed_level, sigma)
    result.affine_detail_score = _detail_z(fixed_details, _band(warped_level, sigma), weight)
    result.deformable_detail_score = _detail_z(fixed_details, _band(deformed, sigma), weight)
    result.detail_gain = (result.deformable_detail_score - result.affine_detail_score) / math.sqrt(2)
    if result.min_jacobian <= MIN_JACOBIAN:
        result.reasons.append(f"the field folds or squeezes the tissue (least Jacobian "
                              f"{result.min_jacobian:.2f}, at least {MIN_JACOBIAN} needed)")
    if result.matched_share < MIN_MATCH_RATIO * result.chance_share:
        result.reasons.append(
            f"the images' blocks find their counterparts no more often than by chance "
            f"({result.matched_share:.0%} of them, {result.chance_share:.0%} against the moving "
            f"image turned half a turn; at least {MIN_MATCH_RATIO:g} times that needed)")
    if 0 < result.detail_gain < MIN_DETAIL_GAIN and not result.reasons:  # else refused anyway
        result.inconsistency = _inconsistency(found, fixed_hwc, moving_hwc, affine, limit, dev)
    reproduced = result.inconsistency is not None and result.inconsistency <= MAX_INCONSISTENCY
    if result.detail_gain < MIN_DETAIL_GAIN and not reproduced:
        result.reasons.append(
            f"the field does not make the details agree beyond chance (detail score "
            f"{result.affine_detail_score:.1f} -> {result.deformable_detail_score:.1f}, a gain of "
            f"{result.detail_gain:.1f}; at least {MIN_DETAIL_GAIN:g} needed)")
        if result.inconsistency is not None:
            result.reasons[-1] += (
                f", nor does the field fitted the other way round reproduce it (they differ by "
                f"{result.inconsistency:.0%} of its displacement; at most {MAX_INCONSISTENCY:.0%})")
    if not result.reasons:
        result.transform, result.kept = found, True
    else:
        result.reasons[-1] += "; the affine result stands"
    result.seconds = time.perf_counter() - t0
    return result


def refine_result(result, fixed_comir, moving_comir, fixed_image, moving_image, *,
                  device=None) -> DeformableResult:
    """Run the deformable stage on a registration result's CoMIRs (with the images' own detail
    where both are colour bright fields, :func:`.image_detail.with_image_detail`) and record it
    in the result (:func:`record_refinement`). CoMIRs and images are (rows, cols[, channels]),
    the fixed ones on the fixed image's grid, the moving ones on the moving image's."""
    fixed, moving, image_detail = with_image_detail(fixed_comir, moving_comir, fixed_image, moving_image)

    def refine(affine: AffineTransform) -> DeformableResult:
        found = register_deformable(fixed, moving, affine, device=device)
        found.image_detail = image_detail
        return found

    return record_refinement(result, refine)


def record_refinement(result, refine) -> DeformableResult:
    """Run ``refine`` (the affine result -> a :class:`DeformableResult`) and record it in ``result``.

    ``result.transform`` (an affine result) becomes the field when the verdict keeps it;
    ``result.deformable`` gets the verdict's :meth:`DeformableResult.summary` and
    ``result.timings["deformable"]`` its seconds. An :class:`InputError` of the stage (e.g. too
    little overlap) leaves the affine result standing, with the reason.
    """
    start = time.perf_counter()
    try:
        refined = refine(result.transform)
    except InputError as exc:
        refined = DeformableResult(result.transform, False, [f"{exc}; the affine result stands"])
    refined.seconds = time.perf_counter() - start
    result.transform = refined.transform
    result.deformable = refined.summary()
    result.timings["deformable"] = refined.seconds
    result.seconds += refined.seconds
    return refined
