"""Gauss-Newton refinement of rigid, similarity or affine transforms, maximising the masked NCC.

The warp is parametrised fixed -> moving about the fixed image's centre ``c``:
``x_m = A (x_f - c) + s`` with ``A`` 2x2 and ``s`` the moving point shown at the fixed centre
(decouples the linear part from the shift). Internally every candidate is the six numbers
``(a00, a01, a10, a11, s_x, s_y)``; a transform model is a basis of allowed steps:

* ``affine``: all six;
* ``similarity``: ``A += dp I + dq J`` (J the quarter turn) and the shift;
* ``rigid``: ``A += dphi dA/dphi`` and the shift, then ``A`` is projected back onto a rotation.

The device reduces the sampled images to one small matrix of weighted moments per candidate and
channel, over the features ``1, w, f`` (warped moving, fixed) and the six derivative "atoms"
``gx dx, gx dy, gy dx, gy dy, gx, gy``; the model's basis projects it on the host. A handful of
device operations per iteration and one small copy back, whatever the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..transforms import AffineTransform
from .levels import block_mean, from_level, to_level
from .search import significance

#: Gauss-Newton stops when the largest pixel displacement of a step is below these (level px).
COARSE_TOLERANCE, FINAL_TOLERANCE = 0.1, 0.05
#: Gauss-Newton iterations at most, at coarser levels and at the finest one. The right candidate
#: converges in 1-3 iterations at any level; wrong ones wander and would use up any budget.
COARSE_MAX_ITERATIONS, FINAL_MAX_ITERATIONS = 5, 15
#: The finest level compares every FINAL_STRIDE-th fixed pixel in each direction (the moving image
#: is still sampled at full resolution) once the fixed image has FINAL_STRIDE_MIN_SIDE px a side:
#: half the refinement time on the CPU, same errors on the benchmark (docs/benchmarks.md).
FINAL_STRIDE, FINAL_STRIDE_MIN_SIDE = 2, 128

_N_BASE = 3  # moment features before the derivative atoms: 1, w, f
_SHIFT_X, _SHIFT_Y = np.eye(6)[4], np.eye(6)[5]


def _gradients(m: torch.Tensor) -> torch.Tensor:
    """Stack (C, H, W) images with their central-difference x and y gradients -> (3C, H, W)."""
    pad = F.pad(m[None], (1, 1, 1, 1), mode="replicate")[0]
    gx = (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]) / 2
    gy = (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]) / 2
    return torch.cat([m, gx, gy], dim=0)


def _moment_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (MPS does not): uncentred moment sums need it."""
    return torch.float32 if device.type == "mps" else torch.float64


def step_basis(model: str, p: np.ndarray) -> np.ndarray:
    """(B, k, 6) allowed step directions of ``model`` at parameters ``p`` (B, 6)."""
    b = len(p)
    if model == "affine":
        return np.broadcast_to(np.eye(6), (b, 6, 6))
    if model == "similarity":
        rows = [[1, 0, 0, 1, 0, 0], [0, -1, 1, 0, 0, 0], _SHIFT_X, _SHIFT_Y]
        return np.broadcast_to(np.array(rows, float), (b, 4, 6))
    # rigid: d/dphi of R(phi) = (-sin, -cos, cos, -sin) at the current angle
    phi = np.arctan2(p[:, 2] - p[:, 1], p[:, 0] + p[:, 3])
    d_phi = np.stack([-np.sin(phi), -np.cos(phi), np.cos(phi), -np.sin(phi), 0 * phi, 0 * phi], 1)
    return np.stack([d_phi, np.broadcast_to(_SHIFT_X, (b, 6)), np.broadcast_to(_SHIFT_Y, (b, 6))], 1)


def constrain(model: str, p: np.ndarray) -> np.ndarray:
    """Project the linear parts of ``p`` (B, 6) onto ``model``: the nearest ``[[c, -s], [s, c]]``
    for a similarity, scaled to a rotation for rigid."""
    if model == "affine":
        return p
    c, s = (p[:, 0] + p[:, 3]) / 2, (p[:, 2] - p[:, 1]) / 2
    if model == "rigid":
        norm = np.hypot(c, s)
        c, s = c / norm, s / norm
    return np.column_stack([c, -s, s, c, p[:, 4:]])


def ncc_from_moments(g: np.ndarray, min_overlap: float):
    """NCC (B,) averaged over channels (-1 where the overlap is too small), its validity (B,),
    and the per-channel variance of the moving image and covariance (C, B), from moments."""
    n = np.maximum(g[0, :, 0, 0], 1.0)
    var_w = g[..., 1, 1] - g[..., 0, 1] ** 2 / n
    var_f = g[..., 2, 2] - g[..., 0, 2] ** 2 / n
    cov = g[..., 1, 2] - g[..., 0, 1] * g[..., 0, 2] / n
    ncc = cov / np.maximum(np.sqrt(np.maximum(var_w * var_f, 0.0)), 1e-12)
    enough = g[0, :, 0, 0] >= min_overlap
    return np.where(enough, ncc.mean(axis=0), -1.0), enough, var_w, cov


def gauss_newton(g: np.ndarray, min_overlap: float):
    """One Gauss-Newton step per candidate from its projected moments (C, B, 3 + k, 3 + k).

    Minimises ``|f - a w(p) - b|^2`` per channel with the intensity fit (a, b) solved in closed
    form, which maximises the NCC. Returns the NCC before the step (B,), the step (B, k) and
    whether the overlap was large enough (B,).
    """
    ncc, enough, var_w, cov = ncc_from_moments(g, min_overlap)
    a = cov / np.maximum(var_w, 1e-12)
    n = np.maximum(g[..., :1, :1], 1.0)
    # Centred on the overlap (b absorbs constant changes): S_xy - S_x S_y / n.
    centred = g[..., _N_BASE:, :] - g[..., _N_BASE:, :1] * g[..., :1, :] / n  # (C, B, k, K)
    hess = ((a**2)[..., None, None] * centred[..., _N_BASE:]).sum(axis=0)
    grad = (a[..., None] * (centred[..., 2] - a[..., None] * centred[..., 1])).sum(axis=0)
    trace = np.trace(hess, axis1=1, axis2=2)
    solvable = enough & (trace > 0)
    k = hess.shape[-1]
    # A candidate without overlap or texture has no equations: it gets a zero step.
    hess = np.where(solvable[:, None, None], hess + 1e-9 * trace[:, None, None] * np.eye(k), np.eye(k))
    delta = np.linalg.solve(hess, np.where(solvable[:, None], grad, 0.0)[..., None])[..., 0]
    return ncc, delta, enough


class Level:
    """Fixed and moving images at one pyramid level, for batched NCC / Gauss-Newton evaluations.

    Pixels within ``border`` of either image's edge, and those whose warp falls outside the
    moving image, get weight 0. With ``stride`` > 1 only every stride-th fixed pixel (in each
    direction) is compared.
    """

    def __init__(self, f: torch.Tensor, m: torch.Tensor, min_overlap_fraction: float,
                 gradients: bool = True, stride: int = 1, border: int = 0):
        self.c, hf, wf = f.shape
        _, self.h, self.w = m.shape
        border = min(border, (min(hf, wf, self.h, self.w) - 1) // 4)
        self.border = border
        rows, cols = slice(border, hf - border, stride), slice(border, wf - border, stride)
        self.f = f[:, rows, cols].reshape(self.c, 1, -1)
        self.stack = (_gradients(m) if gradients else m)[None]
        ys, xs = torch.meshgrid(
            torch.arange(hf, device=f.device, dtype=torch.float32)[rows],
            torch.arange(wf, device=f.device, dtype=torch.float32)[cols],
            indexing="ij",
        )
        self.centre = np.array([(wf - 1) / 2.0, (hf - 1) / 2.0])
        self.dx = (xs - float(self.centre[0])).reshape(1, -1)
        self.dy = (ys - float(self.centre[1])).reshape(1, -1)
        self.min_overlap = min_overlap_fraction * min(hf * wf, self.h * self.w) / stride**2
        self.dtype = _moment_dtype(f.device)

    def params(self, transforms: list[AffineTransform]) -> np.ndarray:
        """(B, 6) warp parameters of the inverses of moving -> fixed ``transforms``."""
        rows = []
        for t in transforms:
            inv = t.inverse()
            rows.append([*inv.matrix_xy[:2, :2].ravel(), *inv.apply_xy(self.centre)[0]])
        return np.array(rows, dtype=np.float64)

    def transforms(self, p: np.ndarray, model: str) -> list[AffineTransform]:
        """Moving -> fixed transforms of the warp parameters ``p`` (B, 6)."""
        out = []
        for row in p:
            a = row[:4].reshape(2, 2)
            fixed_to_moving = np.eye(3)
            fixed_to_moving[:2, :2] = a
            fixed_to_moving[:2, 2] = row[4:] - a @ self.centre
            out.append(AffineTransform(np.linalg.inv(fixed_to_moving), model))
        return out

    def moments(self, p: np.ndarray, jacobian: bool = True) -> np.ndarray:
        """Weighted Gram matrices (C, B, K, K), float64, of per-pixel features on the overlap.

        Features: 1, moving w, fixed f and, with ``jacobian``, the six derivative atoms
        ``gx dx, gx dy, gy dx, gy dy, gx, gy`` (g the moving image's gradient where it is
        sampled, d the fixed pixel's offset from the centre).
        """
        p = torch.as_tensor(p, dtype=torch.float32, device=self.f.device)
        rx = p[:, 0:1] * self.dx + p[:, 1:2] * self.dy + p[:, 4:5]
        ry = p[:, 2:3] * self.dx + p[:, 3:4] * self.dy + p[:, 5:6]
        grid = torch.stack([rx * (2 / (self.w - 1)) - 1, ry * (2 / (self.h - 1)) - 1], dim=-1)
        inside = ((rx >= self.border) & (rx <= self.w - 1 - self.border)  # (B, N)
                  & (ry >= self.border) & (ry <= self.h - 1 - self.border)).float()
        vals = F.grid_sample(
            self.stack, grid[None], mode="bilinear", padding_mode="border", align_corners=True
        )[0]
        c = self.c
        w = vals[:c]
        features = [torch.ones_like(w), w, self.f.expand_as(w)]
        if jacobian:
            gx, gy = vals[c : 2 * c], vals[2 * c :]
            features += [gx * self.dx, gx * self.dy, gy * self.dx, gy * self.dy, gx, gy]
        # Weights are 0 or 1, so masking the features once masks every product.
        v = (torch.stack(features, dim=2) * inside[:, None]).to(self.dtype)  # (C, B, K, N)
        return (v @ v.transpose(-1, -2)).cpu().numpy()

    def ncc(self, p: np.ndarray) -> np.ndarray:
        """(B,) NCC on the overlap, averaged over channels (-1 where the overlap is too small)."""
        return ncc_from_moments(self.moments(p, jacobian=False), self.min_overlap)[0]


def _project(g: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Moments of ``1, w, f`` and the model's k derivatives, from those of the six atoms."""
    b, k, _ = basis.shape
    t = np.zeros((b, _N_BASE + k, _N_BASE + 6))
    t[:, :_N_BASE, :_N_BASE] = np.eye(_N_BASE)
    t[:, _N_BASE:, _N_BASE:] = basis
    return np.einsum("bij,cbjk,blk->cbil", t, g, t)


def refine_level(level: Level, transforms: list[AffineTransform], model: str,
                 max_iterations: int, tolerance: float):
    """Batched Gauss-Newton refinement of level transforms; returns [(transform, NCC, overlap)]
    with the overlap in (compared) pixels.

    A candidate stops when a step moves no pixel by more than ``tolerance``, and fails (NCC -1,
    transform unchanged) when its overlap becomes too small.
    """
    p = constrain(model, level.params(transforms))
    corners = np.array([[sx * level.centre[0], sy * level.centre[1]] for sx in (-1, 1) for sy in (-1, 1)])
    active = np.ones(len(p), dtype=bool)
    score = np.full(len(p), -1.0)
    count = np.zeros(len(p))
    for _ in range(max_iterations):
        g = level.moments(p)
        basis = step_basis(model, p)
        ncc, delta, enough = gauss_newton(_project(g, basis), level.min_overlap)
        moving = active & enough
        step = np.einsum("bk,bkj->bj", np.where(moving[:, None], delta, 0.0), basis)
        p = constrain(model, p + step)
        # The NCC before a candidate's last step is that of its result (it moved < tolerance);
        # it is already -1 where the overlap became too small.
        score = np.where(active, ncc, score)
        count = np.where(active, g[0, :, 0, 0], count)
        linear = step[:, :4].reshape(-1, 2, 2)
        moved = np.linalg.norm(corners @ linear.transpose(0, 2, 1) + step[:, None, 4:], axis=-1).max(axis=1)
        active = moving & (moved >= tolerance)
        if not active.any():
            break
    else:  # candidates still moving at the last iteration are scored where they ended
        g = level.moments(p, jacobian=False)
        score = np.where(active, ncc_from_moments(g, level.min_overlap)[0], score)
        count = np.where(active, g[0, :, 0, 0], count)
    return list(zip(level.transforms(p, model), score.tolist(), count.tolist(), strict=True))


def refine(f: torch.Tensor, m: torch.Tensor, candidates: list[AffineTransform], factors: list[int],
           model: str, min_overlap_fraction: float,
           border: int = 0, final_max_iterations: int | None = None) -> tuple[AffineTransform, float]:
    """Refine every candidate at the coarsest level, then the most significant one down to the
    finest level.

    ``final_max_iterations`` overrides :data:`FINAL_MAX_ITERATIONS`. ``border`` (full-resolution
    px) of both images is left out of the comparison: a CoMIR network
    pads its input with zeros, and its two networks' edge artefacts differ, so a comparison that
    includes them pulls the scale by ~1 % (4-6 px at the corners of a 512² pair).

    The coarsest level fits at most a similarity: a few hundred pixels do not constrain a shear,
    and a wrong candidate free to shear can out-score the right one there.

    Returns the refined full-resolution transform and its NCC at the finest level.
    """
    best = candidates
    for i, k in enumerate(factors):
        final = i == len(factors) - 1
        stride = FINAL_STRIDE if final and min(f.shape[1:]) >= FINAL_STRIDE_MIN_SIDE else 1
        level = Level(block_mean(f, k), block_mean(m, k), min_overlap_fraction, stride=stride,
                      border=math.ceil(border / k))
        level_model = "similarity" if model == "affine" and i == 0 and len(factors) > 1 else model
        # Intermediate levels only need to land in the next level's basin.
        results = refine_level(level, [to_level(t, k) for t in best], level_model,
                               max_iterations=(final_max_iterations or FINAL_MAX_ITERATIONS) if final
                               else COARSE_MAX_ITERATIONS,
                               tolerance=FINAL_TOLERANCE if final else COARSE_TOLERANCE)
        t, score, _ = max(results, key=lambda r: significance(r[1], r[2]))
        best = [from_level(AffineTransform(t.matrix_xy, model), k)]
    return best[0], score


def masked_ncc(f: torch.Tensor, m: torch.Tensor, t: AffineTransform, min_overlap_fraction: float) -> float:
    """NCC of fixed and moving warped by ``t`` on their overlap, averaged over channels."""
    level = Level(f, m, min_overlap_fraction, gradients=False)
    return float(level.ncc(level.params([t]))[0])
