"""Global search over rotation x scale x translation of two coarse images of one modality.

The moving image is rotated and scaled about its centre for a grid of (angle, scale) pairs, and
the masked normalised cross-correlation (Padfield 2012) with the fixed image is computed for
*all* translations at once with FFTs, batched over angles in torch. Translations whose overlap is
below a fraction of the smaller image are excluded. The best few (angle, scale, shift) peaks by
significance (the NCC's Fisher z times the square root of the overlap) are kept.

Arrays are torch ``(C, rows, cols)``; transforms map moving (x, y) to fixed (x, y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..transforms import AffineTransform
from .levels import fast_length

#: Images whose aspect ratio (long / short side) is at most this are searched with a disk mask:
#: a disk is rotation invariant, so one mask (and its FFT terms) serves every angle.
DISK_ASPECT = 1.25


@dataclass(frozen=True)
class Candidate:
    """One peak of the search: a moving -> fixed transform at the search level, and how
    significant its NCC is (see :func:`significance`)."""

    transform: AffineTransform
    significance: float


def search_angles(lo: float, hi: float, step: float) -> np.ndarray:
    """Angles (degrees) covering ``[lo, hi]`` with at most ``step`` spacing; no duplicate at 360."""
    if hi - lo >= 360.0 - 1e-9:
        n = max(1, math.ceil(360.0 / step))
        return lo + np.arange(n) * (360.0 / n)
    if hi == lo:
        return np.array([lo])
    n = max(1, math.ceil((hi - lo) / step))
    return np.linspace(lo, hi, n + 1)


def search_scales(lo: float, hi: float, log_step: float) -> np.ndarray:
    """Scales covering ``[lo, hi]`` geometrically, at most ``log_step`` apart in log scale."""
    if hi <= lo:
        return np.array([math.sqrt(lo * hi)])
    n = max(1, math.ceil(math.log(hi / lo) / log_step))
    return np.exp(np.linspace(math.log(lo), math.log(hi), n + 1))


def uses_disk(m: torch.Tensor) -> bool:
    """Whether the search compares only the disc inscribed in the moving image (near-square)."""
    return max(m.shape[1:]) / min(m.shape[1:]) <= DISK_ASPECT


def rim_radius(m: torch.Tensor) -> float:
    """Distance from the moving image's centre to the farthest pixel the search compares."""
    return min(m.shape[1:]) / 2.0 if uses_disk(m) else 0.5 * math.hypot(*m.shape[1:])


def significance(ncc, count):
    """How unlikely an NCC over ``count`` pixels is by chance: Fisher's z times sqrt(count).

    Ranks candidates of different overlaps: a chance correlation over a small overlap is
    larger than over a big one, and weak CoMIRs (a model trained on one pair for a minute)
    otherwise let such a match win. Works on numpy arrays and torch tensors; -inf stays -inf.
    """
    lib = torch if isinstance(ncc, torch.Tensor) else np
    z = lib.arctanh(lib.clip(ncc, -0.999999, 0.999999)) * lib.sqrt(count)
    return lib.where(ncc > -math.inf, z, ncc)


#: Bytes of correlation spectra the global search holds at a time (see :func:`_scale_peaks`).
SPECTRA_BYTES = 64 << 20


def _turn_batch(m: torch.Tensor, angles_deg: np.ndarray, scale: float, canvas_hw, centre_m):
    """Rotate and scale (C, h, w) about ``centre_m`` (x, y) onto a canvas centred on that centre.

    ``canvas(p) = m(R^-1 (p - c_canvas) / scale + centre_m)``. Returns the stack (B, C, Hc, Wc)
    and a validity mask (B, 1, Hc, Wc) of canvas pixels whose source lies inside ``m``.
    """
    _, h, w = m.shape
    hc, wc = canvas_hw
    dev = m.device
    ys, xs = torch.meshgrid(
        torch.arange(hc, device=dev, dtype=torch.float32) - (hc - 1) / 2,
        torch.arange(wc, device=dev, dtype=torch.float32) - (wc - 1) / 2,
        indexing="ij",
    )
    a = torch.as_tensor(np.radians(angles_deg), dtype=torch.float32, device=dev).view(-1, 1, 1)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    # R^-1 = R(-a): x' = cos x + sin y, y' = -sin x + cos y.
    src_x = cos * xs + sin * ys + centre_m[0]
    src_y = -sin * xs + cos * ys + centre_m[1]
    valid = (src_x >= 0) & (src_x <= w - 1) & (src_y >= 0) & (src_y <= h - 1)
    grid = torch.stack([2 * src_x / (w - 1) - 1, 2 * src_y / (h - 1) - 1], dim=-1)
    turned = torch.nn.functional.grid_sample(
        m[None].expand(len(angles_deg), -1, -1, -1), grid, mode="bilinear",
        padding_mode="zeros", align_corners=True)
    return turned, valid[:, None].float()


def _significance_maps(f: torch.Tensor, mov: torch.Tensor, mask_m: torch.Tensor,
                       min_overlap: float) -> torch.Tensor:
    """Significance of the masked NCC (Padfield 2012), averaged over channels, for all integer shifts.

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
    size = (fast_length(hf + hc - 1), fast_length(wf + wc - 1))
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
    out[:, keep] = significance(ncc, n[:, 0])
    return out.view(-1, *size)


def _subpixel_offset(lo: float, mid: float, hi: float) -> float:
    """Vertex offset in [-0.5, 0.5] of the parabola through three equally spaced samples."""
    den = lo - 2 * mid + hi
    if not math.isfinite(den) or den >= 0:
        return 0.0
    return float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))


def _scale_peaks(f, m, angles, scale, min_overlap_fraction):
    """Best shift per angle for one scale: (B,) significances, the map and its canvas size."""
    _, h, w = m.shape
    centre_m = ((w - 1) / 2.0, (h - 1) / 2.0)
    if uses_disk(m):
        radius = scale * (rim_radius(m) - 0.5)
        side = 2 * math.ceil(radius) + 1
        canvas = (side, side)
        ys, xs = torch.meshgrid(torch.arange(side, device=m.device) - (side - 1) / 2,
                                torch.arange(side, device=m.device) - (side - 1) / 2, indexing="ij")
        mask = ((xs**2 + ys**2) <= radius**2).float()[None, None]
        turned, _ = _turn_batch(m, angles, scale, canvas, centre_m)
    else:
        diag = math.ceil(scale * math.hypot(h, w))
        canvas = (diag, diag)
        turned, mask = _turn_batch(m, angles, scale, canvas, centre_m)
    min_area = min(f.shape[1] * f.shape[2], float(mask.sum(dim=(1, 2, 3)).min()))
    # a few angles at a time: the correlations' spectra take ~100 B per map pixel and angle
    # (180 angles of a 64 px image against a 512 px one held 600 MiB at once)
    batch = max(1, SPECTRA_BYTES // (100 * (f.shape[1] + canvas[0]) * (f.shape[2] + canvas[1])))
    maps = torch.cat([_significance_maps(f, turned[i:i + batch],
                                         mask if len(mask) == 1 else mask[i:i + batch],
                                         min_overlap_fraction * min_area)
                      for i in range(0, len(angles), batch)])
    return maps, canvas, centre_m


def global_search(f: torch.Tensor, m: torch.Tensor, angles: np.ndarray, scales: np.ndarray,
                  n_candidates: int, min_overlap_fraction: float) -> list[Candidate]:
    """Best (angle, scale, shift) candidates for coarse images ``f``, ``m`` (search-level transforms).

    A candidate is a local maximum of the best significance over shifts, in angle (circular when
    the angles close the circle) and in scale; angle, scale and shift are refined to sub-grid
    precision with parabolas through the neighbouring samples.
    """
    per_scale = [_scale_peaks(f, m, angles, s, min_overlap_fraction) for s in scales]
    best = [maps.flatten(1).max(dim=1) for maps, _, _ in per_scale]
    scores = np.stack([b.values.cpu().numpy() for b in best]).astype(float)  # (S, A)
    circular = len(angles) > 2 and (angles[1] - angles[0]) * len(angles) >= 360.0 - 1e-6
    pad_a = lambda s, k: (np.roll(s, k, axis=1) if circular else  # noqa: E731
                          np.roll(np.pad(s, ((0, 0), (1, 1)), constant_values=-np.inf), k, axis=1)[:, 1:-1])
    pad_s = lambda s, k: np.roll(np.pad(s, ((1, 1), (0, 0)), constant_values=-np.inf), k, axis=0)[1:-1]  # noqa: E731
    prev_a, next_a, prev_s, next_s = pad_a(scores, 1), pad_a(scores, -1), pad_s(scores, 1), pad_s(scores, -1)
    is_peak = ((scores >= prev_a) & (scores >= next_a) & (scores >= prev_s) & (scores >= next_s)
               & np.isfinite(scores))
    peaks = np.argwhere(is_peak)
    peaks = peaks[np.argsort(-scores[is_peak])][:n_candidates]
    angle_step = float(angles[1] - angles[0]) if len(angles) > 1 else 0.0
    log_scale_step = float(np.log(scales[1] / scales[0])) if len(scales) > 1 else 0.0
    out = []
    for si, ai in peaks:
        maps, canvas, centre_m = per_scale[si]
        n0, n1 = maps.shape[-2:]
        i, j = divmod(int(best[si].indices[ai]), n1)
        around = maps[ai, [i, (i - 1) % n0, (i + 1) % n0, i, i], [j, j, j, (j - 1) % n1, (j + 1) % n1]]
        peak, up, down, left, right = around.cpu().numpy().astype(float)
        u_rc = np.array([i if i < n0 // 2 else i - n0, j if j < n1 // 2 else j - n1], float)
        u_xy = u_rc[::-1] + (_subpixel_offset(left, peak, right), _subpixel_offset(up, peak, down))
        angle = angles[ai] + _subpixel_offset(prev_a[si, ai], peak, next_a[si, ai]) * angle_step
        scale = scales[si] * math.exp(_subpixel_offset(prev_s[si, ai], peak, next_s[si, ai]) * log_scale_step)
        cc = np.array([(canvas[1] - 1) / 2.0, (canvas[0] - 1) / 2.0])
        # moving p -> canvas s R (p - c_m) + c_canvas -> fixed  ... + u.
        transform = AffineTransform.about_center(float(angle), centre_m, cc - centre_m + u_xy, float(scale))
        out.append(Candidate(transform, float(scores[si, ai])))
    return out
