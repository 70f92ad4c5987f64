"""Rigid registration of two images of the same modality (e.g. two CoMIRs).

Engine of :func:`register` with ``method="search"``:

1. **Global search** at a coarse level (block-averaged so the smaller image is ~50 px): the moving
   image is rotated about its centre for a grid of angles, and the masked normalised
   cross-correlation (Padfield 2012) with the fixed image is computed for *all* translations at once
   with FFTs, batched over angles in torch. Translations whose overlap is below
   :data:`MIN_OVERLAP` of the smaller image are excluded. The best few (angle, shift) peaks by
   significance (the NCC's Fisher z times the square root of the overlap) are kept.
2. **Refinement**: Gauss-Newton on (angle, translation) with a per-channel linear intensity fit
   (i.e. it maximises NCC), coarse to fine over a pyramid, ending at full resolution (every
   other fixed pixel of a large image, the moving image sampled at full resolution). The most
   significant candidate after the coarsest level goes on.
3. **Score**: masked NCC of the fixed image and the warped moving image on their overlap.

``method="sift"`` matches SIFT features and fits a rigid transform with RANSAC instead of step 1.

Coordinates: transforms map moving ``(x, y)`` to fixed ``(x, y)`` (x = column, y = row, 0-based
pixel centres, see :mod:`napari_comir.core.transforms`). Internally arrays are ``(C, rows, cols)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .device import resolve_device
from .errors import InputError, RegistrationError
from .transforms import RigidTransform

#: Default score (masked NCC on the overlap) at or above which a result counts as a likely
#: success, for two images of one modality. Calibrated on log-SHG crops
#: (benchmarks/registration_engine.py): successes >= 0.90, unrelated image pairs <= 0.61 after
#: the full search. CoMIRs score lower; their threshold lives in the model card.
SCORE_THRESHOLD = 0.65
#: Minimum overlap, as a fraction of the smaller image's area, for a transform to be considered.
MIN_OVERLAP = 0.25
#: Smallest image side accepted (pixels).
MIN_SIZE = 16
#: Long side of the smaller image at the global-search level (pixels), when ``downsample=None``.
#: 50 rather than 40: CoMIRs of a model trained on one pair for a minute keep too little at 40 px
#: to be found (docs/benchmarks.md, one-pair training); ~6 ms more per 300² pair on 2 CPU cores.
SEARCH_SIZE = 50
#: Default angle step of the global search: this arc length (search-level px) at the rim of what
#: is compared (the disc inscribed in the moving image, or its corners; see DISK_ASPECT).
ANGLE_STEP_PX = 3.0
#: Number of (angle, shift) candidates of the global search that are refined.
N_CANDIDATES = 3
#: Images whose aspect ratio (long / short side) is at most this are searched with a disk mask.
DISK_ASPECT = 1.25

#: Gauss-Newton stops when the largest pixel displacement of a step is below these (level px).
COARSE_TOL, FINAL_TOL = 0.1, 0.05
#: Gauss-Newton iterations at most, at coarser levels and at the finest one. The right candidate
#: converges in 1-3 iterations at any level; wrong ones wander and would use up any budget.
COARSE_MAX_ITER, FINAL_MAX_ITER = 5, 15
#: The finest level compares every FINAL_STRIDE-th fixed pixel in each direction (the moving image
#: is still sampled at full resolution) once the fixed image has FINAL_STRIDE_MIN_SIDE px a side:
#: half the refinement time on the CPU, same errors on the benchmark (docs/benchmarks.md).
FINAL_STRIDE, FINAL_STRIDE_MIN_SIDE = 2, 128

METHODS = ("search", "sift")


@dataclass
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes
    ----------
    transform : RigidTransform
        Moving -> fixed, in (x, y) pixel coordinates of the full-resolution images.
    score : float
        Masked NCC in [-1, 1] of fixed and warped moving on their overlap (mean over channels).
    seconds : float
        Wall time of the whole call.
    method : str
        ``"search"`` or ``"sift"``.
    timings : dict of str to float
        Seconds per phase.
    success_likely : bool
        ``score >= score_threshold`` (see :func:`register`).
    """

    transform: RigidTransform
    score: float
    seconds: float
    method: str
    timings: dict[str, float] = field(default_factory=dict)
    success_likely: bool = False


# ----------------------------------------------------------------------------- input checks


def _as_chw(image, name: str) -> np.ndarray:
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
            f"{name} image is too small to register: {arr.shape[:2]} (need at least "
            f"{MIN_SIZE} x {MIN_SIZE} px)"
        )
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
            f"got {rotation_range!r}"
        ) from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or hi - lo > 360.0 or lo < -360.0:
        raise InputError(
            f"rotation_range must satisfy lo <= hi, hi - lo <= 360 and finite values "
            f"(a single r must be in [0, 180]), got ({lo}, {hi})"
        )
    return lo, hi


def _search_angles(lo: float, hi: float, step: float) -> np.ndarray:
    """Angles (degrees) covering ``[lo, hi]`` with at most ``step`` spacing; no duplicate at 360."""
    if hi - lo >= 360.0 - 1e-9:
        n = max(1, math.ceil(360.0 / step))
        return lo + np.arange(n) * (360.0 / n)
    if hi == lo:
        return np.array([lo])
    n = max(1, math.ceil((hi - lo) / step))
    return np.linspace(lo, hi, n + 1)


# ----------------------------------------------------------------------------- pyramid helpers


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per channel (NCC is invariant to it; keeps float32 sums well scaled)."""
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1).view(-1, 1, 1)
    std = flat.std(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (x - mean) / std


def _block_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average k x k blocks of (C, H, W) (remainder rows/cols dropped).

    Pixel ``i`` of the result has its centre at ``k * i + (k - 1) / 2`` in the input, for any image,
    so the same ``k`` keeps fixed and moving in one consistent coordinate system.
    """
    if k == 1:
        return x
    return F.avg_pool2d(x[None], kernel_size=k, stride=k)[0]


def _to_level(t: RigidTransform, k: int) -> RigidTransform:
    """Express a full-resolution transform in the coordinates of block-average level ``k``."""
    rot = t.matrix_xy[:2, :2]
    c = np.full(2, (k - 1) / 2.0)
    tt = (rot @ c + np.asarray(t.translation_xy) - c) / k
    return RigidTransform(t.angle_deg, (tt[0], tt[1]))


def _from_level(t: RigidTransform, k: int) -> RigidTransform:
    """Inverse of :func:`_to_level`: a level-``k`` transform in full-resolution coordinates."""
    rot = t.matrix_xy[:2, :2]
    c = np.full(2, (k - 1) / 2.0)
    tt = k * np.asarray(t.translation_xy) + c - rot @ c
    return RigidTransform(t.angle_deg, (tt[0], tt[1]))


def _fast_len(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _pyramid_factors(k: int) -> list[int]:
    """Coarse-to-fine block sizes from ``k`` down to 1: then powers of 4, each >= 2x finer.

    Gauss-Newton converges from the previous level's estimate across a factor of 4 as well as
    across 2 (same results on the benchmark), and every level costs a fixed overhead.
    """
    levels = [k]
    while levels[-1] > 1:
        levels.append(4 ** int(math.log(levels[-1] / 2, 4) + 1e-9))
    return levels


# ----------------------------------------------------------------------------- global search


def _rotate_batch(m: torch.Tensor, angles_deg: np.ndarray, canvas_hw, centre_m) -> tuple:
    """Rotate (C, h, w) about ``centre_m`` (x, y) onto a canvas centred on the rotation centre.

    ``canvas(p) = m(R^-1 (p - c_canvas) + centre_m)``. Returns the rotated stack (B, C, Hc, Wc)
    and a validity mask (B, 1, Hc, Wc) of canvas pixels whose source lies inside ``m``.
    """
    c, h, w = m.shape
    hc, wc = canvas_hw
    dev = m.device
    ys, xs = torch.meshgrid(
        torch.arange(hc, device=dev, dtype=torch.float32) - (hc - 1) / 2,
        torch.arange(wc, device=dev, dtype=torch.float32) - (wc - 1) / 2,
        indexing="ij",
    )
    a = torch.as_tensor(np.radians(angles_deg), dtype=torch.float32, device=dev).view(-1, 1, 1)
    cos, sin = torch.cos(a), torch.sin(a)
    # R^-1 = R(-a): x' = cos x + sin y, y' = -sin x + cos y.
    src_x = cos * xs + sin * ys + centre_m[0]
    src_y = -sin * xs + cos * ys + centre_m[1]
    valid = (src_x >= 0) & (src_x <= w - 1) & (src_y >= 0) & (src_y <= h - 1)
    grid = torch.stack([2 * src_x / (w - 1) - 1, 2 * src_y / (h - 1) - 1], dim=-1)
    rotated = F.grid_sample(
        m[None].expand(len(angles_deg), -1, -1, -1),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return rotated, valid[:, None].float()


def _significance_maps(
    f: torch.Tensor, mov: torch.Tensor, mask_m: torch.Tensor, min_overlap: float
) -> torch.Tensor:
    """Significance of the masked NCC (Padfield 2012) for all integer shifts.

    The NCC, averaged over channels, as Fisher's z times the square root of the overlap (see
    :func:`_significance`), so that a small overlap's chance correlation does not outrank the
    true one.

    Parameters
    ----------
    f : (C, Hf, Wf) fixed image (its mask is all ones).
    mov : (B, C, Hc, Wc) moving canvases; mask_m : (B or 1, 1, Hc, Wc) their masks.
    min_overlap : minimum number of overlapping pixels for a valid shift.

    Returns
    -------
    (B, N0, N1) tensor: entry ``[b, i, j]`` scores ``f(p + u)`` against ``mov[b](p)`` with
    ``u = (i, j)`` modulo ``(N0, N1)`` in (row, col); invalid shifts are ``-inf``.
    """
    _, hf, wf = f.shape
    hc, wc = mov.shape[-2:]
    size = (_fast_len(hf + hc - 1), _fast_len(wf + wc - 1))
    fft = lambda x: torch.fft.rfft2(x, s=size)  # noqa: E731
    ones_f = torch.ones_like(f[:1])
    mf, ff, fff = fft(ones_f), fft(f), fft(f * f)
    mm = mov * mask_m
    m_m, m_mm, m_mmm = fft(mask_m), fft(mm), fft(mm * mov)
    n = torch.fft.irfft2(mf * m_m.conj(), s=size).round()  # overlap pixel counts
    # The per-shift arithmetic only where some canvas overlaps enough (a fraction of the map).
    keep = (n >= min_overlap).any(dim=0).flatten().nonzero()[:, 0]
    corr = lambda a, b: torch.fft.irfft2(a * b.conj(), s=size).flatten(2)[..., keep]  # noqa: E731
    n = n.flatten(2)[..., keep]
    s_f, s_ff = corr(ff, m_m), corr(fff, m_m)
    s_m, s_mm, s_fm = corr(mf, m_mm), corr(mf, m_mmm), corr(ff, m_mm)
    n_safe = n.clamp_min(1.0)
    num = s_fm - s_f * s_m / n_safe
    var_f = (s_ff - s_f * s_f / n_safe).clamp_min(0)
    var_m = (s_mm - s_m * s_m / n_safe).clamp_min(0)
    den = torch.sqrt(var_f * var_m)
    ok = (n >= min_overlap) & (den > 1e-3 * n_safe)
    ncc = torch.where(ok, num / den.clamp_min(1e-12), torch.full_like(num, -math.inf)).mean(dim=1)
    out = torch.full((mov.shape[0], size[0] * size[1]), -math.inf, device=f.device)
    out[:, keep] = _significance(ncc, n[:, 0])
    return out.view(-1, *size)


def _significance(ncc, count):
    """How unlikely an NCC over ``count`` pixels is by chance: Fisher's z times sqrt(count).

    Ranks candidates of different overlaps: a chance correlation over a small overlap is
    larger than over a big one, and weak CoMIRs (a model trained on one pair for a minute)
    otherwise let such a match win. Works on numpy arrays and torch tensors; -inf stays -inf.
    """
    lib = torch if isinstance(ncc, torch.Tensor) else np
    z = lib.arctanh(lib.clip(ncc, -0.999999, 0.999999)) * lib.sqrt(count)
    return lib.where(ncc > -math.inf, z, ncc)


def _subpixel_offset(lo: float, mid: float, hi: float) -> float:
    """Vertex offset in [-0.5, 0.5] of the parabola through three equally spaced samples."""
    den = lo - 2 * mid + hi
    if not math.isfinite(den) or den >= 0:
        return 0.0
    return float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))


def _uses_disk(m: torch.Tensor) -> bool:
    """Whether the search compares only the disc inscribed in the moving image (near-square)."""
    return max(m.shape[1:]) / min(m.shape[1:]) <= DISK_ASPECT


def _rim_radius(m: torch.Tensor) -> float:
    """Distance from the moving image's centre to the farthest pixel the search compares."""
    return min(m.shape[1:]) / 2.0 if _uses_disk(m) else 0.5 * math.hypot(*m.shape[1:])


def _global_search(
    f: torch.Tensor, m: torch.Tensor, angles: np.ndarray, n_candidates: int
) -> list[RigidTransform]:
    """Best (angle, shift) candidates for coarse images ``f``, ``m`` (transforms at this level)."""
    _, h, w = m.shape
    centre_m = ((w - 1) / 2.0, (h - 1) / 2.0)
    if _uses_disk(m):
        # A disk is rotation invariant: one mask (and its FFT terms) serves every angle.
        canvas = (h, w)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=m.device) - centre_m[1],
            torch.arange(w, device=m.device) - centre_m[0],
            indexing="ij",
        )
        mask = ((xs**2 + ys**2) <= (_rim_radius(m) - 0.5) ** 2).float()[None, None]
        rotated, _ = _rotate_batch(m, angles, canvas, centre_m)
    else:
        diag = math.ceil(math.hypot(h, w))
        canvas = (diag, diag)
        rotated, mask = _rotate_batch(m, angles, canvas, centre_m)
    min_area = min(f.shape[1] * f.shape[2], float(mask.sum(dim=(1, 2, 3)).min()))
    significance = _significance_maps(f, rotated, mask, MIN_OVERLAP * min_area)
    best = significance.flatten(1).max(dim=1)
    scores, idx = best.values.cpu().numpy(), best.indices.cpu().numpy()
    n0, n1 = significance.shape[-2:]
    # Keep local maxima along the angle axis (circular when the angles close the circle).
    circular = len(angles) > 2 and (angles[1] - angles[0]) * len(angles) >= 360.0 - 1e-6
    prev_s = np.roll(scores, 1) if circular else np.r_[-np.inf, scores[:-1]]
    next_s = np.roll(scores, -1) if circular else np.r_[scores[1:], -np.inf]
    peaks = np.flatnonzero((scores >= prev_s) & (scores >= next_s) & np.isfinite(scores))
    peaks = peaks[np.argsort(-scores[peaks])][:n_candidates]
    # Each peak and its 4 neighbours (circular shifts), fetched from the device in one copy.
    i, j = np.divmod(idx[peaks], n1)
    rows = np.stack([i, i - 1, i + 1, i, i], axis=1) % n0
    cols = np.stack([j, j, j, j - 1, j + 1], axis=1) % n1
    samples = significance[torch.as_tensor(np.repeat(peaks, 5)), torch.as_tensor(rows.ravel()),
                           torch.as_tensor(cols.ravel())].view(-1, 5).cpu().numpy().astype(float)
    step = float(angles[1] - angles[0]) if len(angles) > 1 else 0.0
    cc = np.array([(canvas[1] - 1) / 2.0, (canvas[0] - 1) / 2.0])
    out = []
    for b, ib, jb, (peak, up, down, left, right) in zip(peaks, i, j, samples, strict=True):
        di = _subpixel_offset(up, peak, down)
        dj = _subpixel_offset(left, peak, right)
        da = _subpixel_offset(prev_s[b], scores[b], next_s[b]) * step
        u_rc = np.array([ib if ib < n0 // 2 else ib - n0, jb if jb < n1 // 2 else jb - n1], float)
        u_xy = u_rc[::-1] + (dj, di)
        # moving p -> canvas R (p - c_m) + c_canvas -> fixed  ... + u.
        t = RigidTransform.about_center(float(angles[b] + da), centre_m, cc - centre_m + u_xy)
        out.append(t)
    return out


# ----------------------------------------------------------------------------- refinement


def _gradients(m: torch.Tensor) -> torch.Tensor:
    """Stack (C, H, W) images with their central-difference x and y gradients -> (3C, H, W)."""
    pad = F.pad(m[None], (1, 1, 1, 1), mode="replicate")[0]
    gx = (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]) / 2
    gy = (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]) / 2
    return torch.cat([m, gx, gy], dim=0)


def _moment_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (MPS does not): uncentred moment sums need it."""
    return torch.float32 if device.type == "mps" else torch.float64


def _ncc_from_moments(g: np.ndarray, min_overlap: float):
    """NCC (B,) averaged over channels (-1 where the overlap is too small), its validity (B,),
    and the per-channel variance of the moving image and covariance (C, B), from moments."""
    n = np.maximum(g[0, :, 0, 0], 1.0)
    var_w = g[..., 1, 1] - g[..., 0, 1] ** 2 / n
    var_f = g[..., 2, 2] - g[..., 0, 2] ** 2 / n
    cov = g[..., 1, 2] - g[..., 0, 1] * g[..., 0, 2] / n
    ncc = cov / np.maximum(np.sqrt(np.maximum(var_w * var_f, 0.0)), 1e-12)
    enough = g[0, :, 0, 0] >= min_overlap
    return np.where(enough, ncc.mean(axis=0), -1.0), enough, var_w, cov


def _gauss_newton(g: np.ndarray, min_overlap: float):
    """One Gauss-Newton step per candidate from its moments (see :meth:`_Level.moments`).

    Minimises ``|f - a w(p) - b|^2`` per channel with the intensity fit (a, b) solved in closed
    form, which maximises the NCC. Returns the NCC before the step (B,), the step (B, 3) and
    whether the overlap was large enough (B,).
    """
    ncc, enough, var_w, cov = _ncc_from_moments(g, min_overlap)
    a = cov / np.maximum(var_w, 1e-12)
    n = np.maximum(g[..., :1, :1], 1.0)
    # Centred on the overlap (b absorbs constant changes): S_xy - S_x S_y / n.
    centred = g[..., 3:, :] - g[..., 3:, :1] * g[..., :1, :] / n  # (C, B, 3, K)
    hess = ((a**2)[..., None, None] * centred[..., 3:]).sum(axis=0)
    grad = (a[..., None] * (centred[..., 2] - a[..., None] * centred[..., 1])).sum(axis=0)
    trace = np.trace(hess, axis1=1, axis2=2)
    solvable = enough & (trace > 0)
    # A candidate without overlap or texture has no equations: it gets a zero step.
    hess = np.where(solvable[:, None, None], hess + 1e-9 * trace[:, None, None] * np.eye(3), np.eye(3))
    delta = np.linalg.solve(hess, np.where(solvable[:, None], grad, 0.0)[..., None])[..., 0]
    return ncc, delta, enough


class _Level:
    """Fixed and moving images at one pyramid level, for batched NCC / Gauss-Newton evaluations.

    The warp is parametrised fixed -> moving around the fixed centre ``c_f``:
    ``x_m = R(phi) (x_f - c_f) + s`` (decouples angle and shift). Parameters are (B, 3) float64
    arrays ``(phi, sx, sy)``, one row per candidate. Pixels whose warp falls outside the moving
    image get weight 0. With ``stride`` > 1 only every stride-th fixed pixel (in each direction)
    is compared.

    The device reduces the sampled images to one small matrix of weighted moments per candidate
    and channel; the NCC and the Gauss-Newton system follow from it on the host. A handful of
    device operations per iteration, and one small copy back: on a GPU the time goes to launching
    operations, not to waiting for the copy.
    """

    def __init__(self, f: torch.Tensor, m: torch.Tensor, gradients: bool = True, stride: int = 1):
        self.c, hf, wf = f.shape
        _, self.h, self.w = m.shape
        self.f = f[:, ::stride, ::stride].reshape(self.c, 1, -1)
        self.stack = (_gradients(m) if gradients else m)[None]
        ys, xs = torch.meshgrid(
            torch.arange(0, hf, stride, device=f.device, dtype=torch.float32),
            torch.arange(0, wf, stride, device=f.device, dtype=torch.float32),
            indexing="ij",
        )
        self.centre = ((wf - 1) / 2.0, (hf - 1) / 2.0)
        self.dx = (xs - self.centre[0]).reshape(1, -1)
        self.dy = (ys - self.centre[1]).reshape(1, -1)
        self.min_overlap = MIN_OVERLAP * min(hf * wf, self.h * self.w) / stride**2
        self.dtype = _moment_dtype(f.device)

    def params(self, transforms: list[RigidTransform]) -> np.ndarray:
        """(B, 3) warp parameters equal to the inverses of moving -> fixed ``transforms``."""
        rows = []
        for t in transforms:
            inv = t.inverse()
            rows.append([math.radians(inv.angle_deg), *inv.apply_xy(self.centre)[0]])
        return np.array(rows, dtype=np.float64)

    def transforms(self, p: np.ndarray) -> list[RigidTransform]:
        """Moving -> fixed transforms of the warp parameters ``p`` (B, 3)."""
        return [
            RigidTransform.about_center(
                math.degrees(phi), self.centre, np.array([sx, sy]) - np.asarray(self.centre)
            ).inverse()
            for phi, sx, sy in p
        ]

    def moments(self, p: np.ndarray, jacobian: bool = True) -> np.ndarray:
        """Weighted Gram matrices (C, B, K, K), float64, of per-pixel features on the overlap.

        Features: 1, moving w, fixed f and, with ``jacobian``, dw/dphi, dw/dsx, dw/dsy (the
        warped moving image's derivatives with respect to the parameters).
        """
        p = torch.as_tensor(p, dtype=torch.float32, device=self.f.device)
        cos, sin = torch.cos(p[:, :1]), torch.sin(p[:, :1])
        rx = cos * self.dx - sin * self.dy  # warped offsets from the rotation centre s
        ry = sin * self.dx + cos * self.dy
        grid = torch.stack([(rx + p[:, 1:2]) * (2 / (self.w - 1)) - 1,
                            (ry + p[:, 2:3]) * (2 / (self.h - 1)) - 1], dim=-1)
        inside = (grid.abs() <= 1).all(dim=-1).float()  # (B, N): inside the moving image
        vals = F.grid_sample(
            self.stack, grid[None], mode="bilinear", padding_mode="border", align_corners=True
        )[0]
        c = self.c
        w = vals[:c]
        features = [torch.ones_like(w), w, self.f.expand_as(w)]
        if jacobian:
            gx, gy = vals[c : 2 * c], vals[2 * c :]
            features += [gy * rx - gx * ry, gx, gy]
        # Weights are 0 or 1, so masking the features once masks every product.
        v = (torch.stack(features, dim=2) * inside[:, None]).to(self.dtype)  # (C, B, K, N)
        return (v @ v.transpose(-1, -2)).cpu().numpy()

    def ncc(self, p: np.ndarray) -> np.ndarray:
        """(B,) NCC on the overlap, averaged over channels (-1 where the overlap is too small)."""
        return _ncc_from_moments(self.moments(p, jacobian=False), self.min_overlap)[0]


def _refine_level(level: _Level, transforms: list[RigidTransform], max_iter: int, tol: float):
    """Batched Gauss-Newton refinement of level transforms; returns [(transform, NCC, overlap)]
    with the overlap in (compared) pixels.

    A candidate stops when a step moves no pixel by more than ``tol``, and fails (NCC -1,
    transform unchanged) when its overlap becomes too small.
    """
    p = level.params(transforms)
    radius = math.hypot(*level.centre)
    active = np.ones(len(p), dtype=bool)
    score = np.full(len(p), -1.0)
    count = np.zeros(len(p))
    for _ in range(max_iter):
        g = level.moments(p)
        ncc, delta, enough = _gauss_newton(g, level.min_overlap)
        moving = active & enough
        p = p + np.where(moving[:, None], delta, 0.0)
        # The NCC before a candidate's last step is that of its result (it moved < tol px);
        # it is already -1 where the overlap became too small.
        score = np.where(active, ncc, score)
        count = np.where(active, g[0, :, 0, 0], count)
        moved = np.maximum(np.abs(delta[:, 0]) * radius, np.hypot(delta[:, 1], delta[:, 2]))
        active = moving & (moved >= tol)
        if not active.any():
            break
    else:  # candidates still moving at the last iteration are scored where they ended
        g = level.moments(p, jacobian=False)
        score = np.where(active, _ncc_from_moments(g, level.min_overlap)[0], score)
        count = np.where(active, g[0, :, 0, 0], count)
    return list(zip(level.transforms(p), score.tolist(), count.tolist(), strict=True))


def _masked_ncc(f: torch.Tensor, m: torch.Tensor, t: RigidTransform) -> float:
    """NCC of fixed and moving warped by ``t`` on their overlap, averaged over channels."""
    level = _Level(f, m, gradients=False)
    return float(level.ncc(level.params([t]))[0])


def _refine(
    f: torch.Tensor, m: torch.Tensor, candidates: list[RigidTransform], factors: list[int]
) -> tuple[RigidTransform, float]:
    """Refine every candidate at the coarsest level, then the most significant one (see
    :func:`_significance`) down to the finest level.

    Returns the refined full-resolution transform and its NCC at the finest level.
    """
    best = candidates
    for i, k in enumerate(factors):
        final = i == len(factors) - 1
        stride = FINAL_STRIDE if final and min(f.shape[1:]) >= FINAL_STRIDE_MIN_SIDE else 1
        level = _Level(_block_mean(f, k), _block_mean(m, k), stride=stride)
        # Intermediate levels only need to land in the next level's basin.
        results = _refine_level(level, [_to_level(t, k) for t in best],
                                max_iter=FINAL_MAX_ITER if final else COARSE_MAX_ITER,
                                tol=FINAL_TOL if final else COARSE_TOL)
        t, score, _ = max(results, key=lambda r: _significance(r[1], r[2]))
        best = [_from_level(t, k)]
    return best[0], score


# ----------------------------------------------------------------------------- SIFT


def _sift_transform(fixed: np.ndarray, moving: np.ndarray) -> RigidTransform:
    """Rigid transform from SIFT matches + RANSAC (first channel, rescaled to [0, 1])."""
    from skimage.feature import SIFT, match_descriptors
    from skimage.measure import ransac
    from skimage.transform import EuclideanTransform

    def features(img):
        g = img[0].astype(np.float64)
        g = (g - g.min()) / max(float(np.ptp(g)), 1e-12)
        sift = SIFT()
        try:
            sift.detect_and_extract(g)
        except RuntimeError as exc:  # skimage raises when no keypoint survives
            raise RegistrationError(f"SIFT found no features: {exc}") from exc
        return sift.keypoints[:, ::-1].astype(float), sift.descriptors  # (x, y)

    kf, df = features(fixed)
    km, dm = features(moving)
    matches = match_descriptors(dm, df, max_ratio=0.8, cross_check=True)
    if len(matches) < 4:
        raise RegistrationError(
            f"SIFT found only {len(matches)} matching features (need at least 4); "
            "try method='search'"
        )
    model, inliers = ransac(
        (km[matches[:, 0]], kf[matches[:, 1]]),
        EuclideanTransform,
        min_samples=3,
        residual_threshold=2.0,
        max_trials=2000,
        rng=np.random.default_rng(0),
    )
    if model is None or inliers is None or int(inliers.sum()) < 4:
        n_in = 0 if inliers is None else int(inliers.sum())
        raise RegistrationError(
            f"SIFT matches are inconsistent ({n_in} of {len(matches)} agree on one rigid "
            "transform; need at least 4); try method='search'"
        )
    return RigidTransform.from_matrix_xy(model.params)


# ----------------------------------------------------------------------------- public API


def register(
    fixed,
    moving,
    *,
    method: str = "search",
    rotation_range=180.0,
    angle_step=None,
    refine: bool = True,
    downsample=None,
    device=None,
    score_threshold: float = SCORE_THRESHOLD,
) -> RegistrationResult:
    """Find the rigid transform that maps the moving image onto the fixed image.

    Parameters
    ----------
    fixed : np.ndarray
        (H, W) or (H, W, C) image, e.g. a CoMIR of the fixed modality.
    moving : np.ndarray
        (h, w) or (h, w, C) image with the same number of channels; sizes may differ.
    method : {"search", "sift"}
        ``"search"``: exhaustive FFT search over rotations and translations (robust, any angle).
        ``"sift"``: SIFT feature matching + RANSAC (first channel only).
    rotation_range : float or (float, float)
        ``r`` searches angles in ``[-r, r]`` degrees (180 = full circle); a pair searches
        ``[lo, hi]``. Angles are in the (x, y) frame: positive is clockwise on screen.
        Only used by ``"search"``.
    angle_step : float, optional
        Angle spacing (degrees) of the global search; default: :data:`ANGLE_STEP_PX` of arc at the
        rim of what the search level compares (6.9° for a 300² image).
    refine : bool
        Refine angle and translation sub-pixel, coarse to fine, up to full resolution.
    downsample : int, optional
        Block-averaging factor of the global search; default makes the smaller image ~50 px.
    device : str or torch.device, optional
        Torch device (see :func:`napari_comir.core.device.resolve_device`); ``None`` = "auto".
    score_threshold : float
        ``success_likely`` is ``score >= score_threshold``; the default suits two images of one
        modality, a CoMIR model's card gives the value calibrated for its CoMIRs.

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
    f_np, m_np = _as_chw(fixed, "fixed"), _as_chw(moving, "moving")
    if f_np.shape[0] != m_np.shape[0]:
        raise InputError(
            f"fixed and moving images must have the same number of channels, got "
            f"{f_np.shape[0]} and {m_np.shape[0]}"
        )
    lo, hi = angle_bounds(rotation_range)
    if angle_step is not None and not (math.isfinite(float(angle_step)) and float(angle_step) > 0):
        raise InputError(f"angle_step must be a positive number of degrees, got {angle_step!r}")
    small = min(max(f_np.shape[1:]), max(m_np.shape[1:]))
    if downsample is None:
        k = max(1, round(small / SEARCH_SIZE))
    elif isinstance(downsample, (int, np.integer)) and downsample >= 1:
        k = int(downsample)
    else:
        raise InputError(f"downsample must be a positive integer or None, got {downsample!r}")
    k = min(k, max(1, min(*f_np.shape[1:], *m_np.shape[1:]) // 8))  # keep >= 8 px per side
    dev = resolve_device(device)
    f = _standardise(torch.from_numpy(f_np).to(dev))
    m = _standardise(torch.from_numpy(m_np).to(dev))
    timings = {"prepare": time.perf_counter() - t0}

    t1 = time.perf_counter()
    if method == "search":
        fk, mk = _block_mean(f, k), _block_mean(m, k)
        step = float(angle_step) if angle_step is not None else math.degrees(ANGLE_STEP_PX / _rim_radius(mk))
        candidates = [
            _from_level(t, k)
            for t in _global_search(fk, mk, _search_angles(lo, hi, step), N_CANDIDATES)
        ]
        if not candidates:
            raise RegistrationError(
                "no rotation/translation gives enough overlap to compare the images"
            )
    else:
        candidates = [_sift_transform(f_np, m_np)]
    timings[method] = time.perf_counter() - t1

    t2 = time.perf_counter()
    if refine:
        # The finest level is full resolution, so the refinement's NCC is the score.
        factors = _pyramid_factors(k) if method == "search" else [1]
        transform, score = _refine(f, m, candidates, factors)
        timings["refine"] = time.perf_counter() - t2
    else:
        transform = candidates[0]
        score = _masked_ncc(f, m, transform)
        timings["score"] = time.perf_counter() - t2
    angle = (transform.angle_deg + 180.0) % 360.0 - 180.0
    transform = RigidTransform(angle, transform.translation_xy)
    return RegistrationResult(
        transform=transform,
        score=score,
        seconds=time.perf_counter() - t0,
        method=method,
        timings=timings,
        success_likely=bool(score >= score_threshold),
    )
