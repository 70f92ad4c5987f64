"""Whether a registration result is likely right: the scores, the overlap and the transform's shape.

Two scores: the NCC of the images on their overlap, and the **detail score**, the NCC of their
details (each image minus a Gaussian blur of itself). The first is high whenever the outlines
agree: two round tissue cores of different patients score up to 0.64 after an affine fit. The
details (fibres, nuclei, vessels) only agree when the images show the same tissue in the same
place: mismatched cores reached an NCC of 0.07 on their details, right answers at least 0.18.
Because chance agreement is larger on a small overlap, the detail score is that NCC's
significance: Fisher's z times the square root of the overlap's size.

A result is reported likely only when every check passes; each failed check gives a reason in
plain words. Thresholds were measured on the real raw BF/SHG cases, the synthetic rigid sets
and garbage or mismatched pairs (benchmarks/confidence.py, docs/benchmarks.md "Confidence").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..transforms import AffineTransform
from .refine import Level, ncc_from_moments

#: Default least score (masked NCC on the overlap) of a likely success for two images of one
#: modality. Calibrated on log-SHG crops (benchmarks/registration_engine.py): successes >= 0.90,
#: unrelated image pairs <= 0.61 after the full search. CoMIRs score lower; their threshold
#: lives in the model card.
SCORE_THRESHOLD = 0.65
#: Least detail score of a likely success (see :func:`detail_score`), for two images of one
#: modality (a CoMIR model's card holds the value measured for its CoMIRs).
DETAIL_THRESHOLD = 1.7
#: Area (px) counted as one independent sample of the details: the mismatched cores' detail NCC
#: (after the search picked the best of ~10^5 placements) was that of ~200 samples on 512² px.
DETAIL_PATCH_PX = 1024
#: Gaussian sigma (px) of the blur the detail score takes away: finer than a tissue core's
#: outline, coarser than the CoMIRs' noise.
DETAIL_SIGMA = 4.0
#: Least overlap (fraction of the smaller image) of a likely success.
MIN_LIKELY_OVERLAP = 0.5
#: Most anisotropy (|log(scale_x / scale_y)|) and shear of a likely success: two microscopes'
#: pixel grids differ by a scale and a few degrees, not by a stretch or a shear of this size.
MAX_ANISOTROPY, MAX_SHEAR = 0.25, 0.1
#: How far (as a factor) the found scale may leave the searched range and still be likely.
SCALE_SLACK = 1.05


def _clip(polygon: np.ndarray, axis: int, bound: float, keep_below: bool) -> np.ndarray:
    """Sutherland-Hodgman: the part of a convex polygon (N, 2) on one side of a line x_axis = bound."""
    out = []
    for i, p in enumerate(polygon):
        q = polygon[(i + 1) % len(polygon)]
        p_in = (p[axis] <= bound) if keep_below else (p[axis] >= bound)
        q_in = (q[axis] <= bound) if keep_below else (q[axis] >= bound)
        if p_in:
            out.append(p)
        if p_in != q_in:
            t = (bound - p[axis]) / (q[axis] - p[axis])
            out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 2)


def _area(polygon: np.ndarray) -> float:
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def overlap_fraction(fixed_shape, moving_shape, transform: AffineTransform) -> float:
    """Area of the moving image mapped into the fixed frame and inside it, over the smaller area.

    Images are rectangles of pixel extents ``[-0.5, side - 0.5]``; shapes are ``(rows, cols)``.
    """
    (hf, wf), (hm, wm) = tuple(fixed_shape)[:2], tuple(moving_shape)[:2]
    corners = np.array([[-0.5, -0.5], [wm - 0.5, -0.5], [wm - 0.5, hm - 0.5], [-0.5, hm - 0.5]])
    polygon = transform.apply_xy(corners)
    for axis, bound, below in ((0, -0.5, False), (0, wf - 0.5, True), (1, -0.5, False), (1, hf - 0.5, True)):
        polygon = _clip(polygon, axis, bound, below)
        if len(polygon) == 0:
            return 0.0
    moving_area = hm * wm * abs(np.linalg.det(transform.matrix_xy[:2, :2]))
    return _area(polygon) / min(hf * wf, moving_area)


def detail_sigma(*images: torch.Tensor) -> float:
    """:data:`DETAIL_SIGMA`, kept below an eighth of the smallest side of the (C, H, W) images,
    one value for all of them so that their details are comparable."""
    return min(DETAIL_SIGMA, min(side for x in images for side in x.shape[1:]) / 8)


def details(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) minus its Gaussian blur of ``sigma`` px (separable, reflected at the edges): what
    :func:`detail_score` compares (see :func:`detail_sigma`)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    c, h, w = x.shape
    blurred = x.reshape(c * h, 1, w)
    blurred = F.conv1d(F.pad(blurred, (radius, radius), mode="reflect"), kernel).reshape(c, h, w)
    blurred = blurred.transpose(1, 2).reshape(c * w, 1, h)
    blurred = F.conv1d(F.pad(blurred, (radius, radius), mode="reflect"), kernel)
    return x - blurred.reshape(c, w, h).transpose(1, 2)


def detail_score(fixed_details: torch.Tensor, moving_details: torch.Tensor,
                 transform: AffineTransform, min_overlap_fraction: float, border: int = 0) -> float:
    """How significant the agreement of the :func:`details` of fixed (C, H, W) and moving
    (C, h, w) under ``transform`` is: Fisher's z of their NCC on the overlap times the square root
    of the overlap in :data:`DETAIL_PATCH_PX` patches (``border`` px along the edges left out).

    A chance agreement shrinks as the overlap grows; the z does not, for a real one.
    """
    stride = 2 if min(fixed_details.shape[1:]) >= 256 else 1
    level = Level(fixed_details, moving_details, min_overlap_fraction, gradients=False,
                  stride=stride, border=border)
    moments = level.moments(level.params([transform]), jacobian=False)
    ncc = float(ncc_from_moments(moments, level.min_overlap)[0][0])
    pixels = float(moments[0, 0, 0, 0]) * stride**2
    return float(np.arctanh(np.clip(ncc, -0.999999, 0.999999)) * np.sqrt(pixels / DETAIL_PATCH_PX))


def verdict(transform: AffineTransform, score: float, detail: float, overlap: float,
            thresholds: tuple[float, float], scale_range: tuple[float, float],
            rival: tuple[str, float, float] | None = None) -> tuple[bool, list[str]]:
    """``(likely, reasons)``: success is likely when ``reasons`` (plain words) is empty.

    ``thresholds`` are the least score and detail score of a likely success. ``rival`` is a
    stricter model's fit that makes the details agree better, far from ``transform``:
    ``(model, detail score, mean corner distance px)``.
    """
    reasons = []
    score_threshold, detail_threshold = thresholds
    if not score >= score_threshold:
        reasons.append(f"the images agree poorly where they overlap (score {score:.2f}, "
                       f"a success scores at least {score_threshold:.2f})")
    if not detail >= detail_threshold:
        reasons.append(f"their fine details do not match (detail score {detail:.2f}, a success "
                       f"scores at least {detail_threshold:.2f}): the outlines may agree, the "
                       "tissue does not")
    if rival is not None:
        model, rival_detail, distance = rival
        reasons.append(f"a {model} transform {distance:.0f} px away explains the fine details "
                       f"better (detail score {rival_detail:.2f}): the details are too few to "
                       "tell where the image belongs")
    if overlap < MIN_LIKELY_OVERLAP:
        reasons.append(f"the images overlap by only {overlap:.0%} of the smaller one")
    parts = transform.decompose()
    sx, sy = parts.scale_xy
    if sy <= 0:
        reasons.append("the transform mirrors the image")
    else:
        scale = float(np.sqrt(sx * sy))
        if not scale_range[0] / SCALE_SLACK <= scale <= scale_range[1] * SCALE_SLACK:
            reasons.append(f"the images match at scale {scale:.3f}, beyond the range searched "
                           f"({scale_range[0]:.3g}-{scale_range[1]:.3g})")
        if abs(np.log(sx / sy)) > MAX_ANISOTROPY:
            reasons.append(f"the transform stretches one axis against the other ({sx:.3f} vs {sy:.3f})")
    if abs(parts.shear) > MAX_SHEAR:
        reasons.append(f"the transform shears the image ({parts.shear:.3f})")
    return not reasons, reasons
