"""A final refinement on the original images: Mattes mutual information (as elastix maximises
it), from a transform that is already nearly right.

CoMIRs give a capture range no intensity metric has (any rotation, scale 0.5-2) but blur the
finest details a little; the images themselves keep them. This refinement starts from the
CoMIR result and maximises the mutual information of the two original images (grey) under a
transform model, over a fixed set of fixed-image pixels (one drawn at random in each cell of a
grid), coarse to fine, by L-BFGS with the analytic gradient of the Parzen-window estimate (a
zero-order kernel for the fixed image, a cubic B-spline for the moving one, as in Mattes et al.
2003). The moving image and its gradient are sampled by torch's bilinear ``grid_sample``, in
float32; the histogram is built from four sums per cell (see `_FixedSamples`): an evaluation
at 65 536 pixels takes 3-4 ms on one core.

The warp is parametrised fixed -> moving about the fixed image's centre ``c`` as in
:mod:`.refine`: ``x_m = A (x_f - c) + s``; rigid uses an angle, similarity ``[[a, -b], [b, a]]``;
linear parameters are scaled by the image's half-diagonal, so one unit moves its rim ~1 px.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import optimize
from threadpoolctl import threadpool_limits
from torch.nn import functional

from ..io.slides import block_mean
from ..transforms import AffineTransform
from .levels import level_to_full_xy

#: Histogram bins of each image (elastix's default is 32).
BINS = 32
#: Block-averaging factors of the levels, coarse to fine, and the fixed pixels sampled at each:
#: one set per level, so that the optimiser sees one smooth function. The finest level's count
#: sets the precision (raw pairs, 3 draws each: mean corner error 1.09 px at 32 768, 1.02 at
#: 65 536), and where the coarse level leaves it matters too: 65 536 there (every pixel of a
#: 512² pair's half level) rather than 16 384 took the median over 6 draws of the samples from
#: 0.92 to 0.83 px and the worst case from 2.0-2.7 to 1.8-2.0 px, for ~0.03 s CPU.
FACTORS, SAMPLES = (2, 1), (65536, 65536)
#: Longest side of the finest level: bigger images are block-averaged first (a 4096² pair's
#: levels are 4 and 2), since the cost grows with the pixels read and a success is within 2 %
#: of the width, not one pixel.
FINEST_SIDE = 2048
#: L-BFGS iterations and evaluations of the mutual information at most per level.
MAX_ITERATIONS, MAX_EVALUATIONS = 40, 60
#: Relative change of the mutual information at which a level stops (sampling noise is larger;
#: 1e-6 took 1.6x the evaluations for no gain on the raw pairs).
TOLERANCE = 1e-5
#: A level has settled when the optimiser asks for a point this close (in every parameter; a
#: unit moves the image's rim about a pixel) to the best one evaluated: the answer is then that
#: best point. L-BFGS's line search otherwise probed the sampled estimate's noise there for up to
#: a dozen evaluations, a third of the refinement's time on the raw pairs, for 0.02 px of median
#: corner error (docs/benchmarks.md, "Session 21").
SETTLED_STEP = 0.01
#: Intensity percentiles mapped to the histogram's ends (outliers clipped).
PERCENTILES = (0.5, 99.5)


def normalised_grey(image: np.ndarray) -> np.ndarray:
    """The image grey (channel mean), float32, its :data:`PERCENTILES` mapped to 0 and 1, clipped
    (the percentiles from about a million evenly spread pixels)."""
    grey = image.mean(axis=-1, dtype=np.float32) if image.ndim == 3 else np.asarray(image, np.float32)
    step = max(1, int(np.sqrt(grey.size / 2**20)))
    low, high = np.percentile(grey[::step, ::step], PERCENTILES)
    grey = (grey - np.float32(low)) / np.float32(max(high - low, 1e-12))
    return np.clip(grey, 0.0, 1.0, out=grey)


def _value_and_gradient(image: np.ndarray) -> np.ndarray:
    """(3, rows, cols) float32: the image, its derivative along x and along y (central
    differences, one-sided at the edges, as :func:`numpy.gradient`)."""
    stack = np.empty((3, *image.shape), np.float32)
    stack[0] = image
    along_x, along_y = stack[1], stack[2]
    np.subtract(image[:, 2:], image[:, :-2], out=along_x[:, 1:-1])
    along_x[:, 1:-1] /= 2
    along_x[:, 0], along_x[:, -1] = image[:, 1] - image[:, 0], image[:, -1] - image[:, -2]
    np.subtract(image[2:], image[:-2], out=along_y[1:-1])
    along_y[1:-1] /= 2
    along_y[0], along_y[-1] = image[1] - image[0], image[-1] - image[-2]
    return stack


#: The cubic B-spline's weights on the 4 bins around a position, and their derivatives, as
#: polynomials in its fraction u past its bin: [1, u, u², u³] @ these.
_CUBIC_WEIGHTS = np.array([[1, 4, 1, 0], [-3, 0, 3, 0], [3, -6, 3, 0], [-1, 3, -3, 1]]) / 6
_CUBIC_SLOPES = np.array([[-0.5, 0, 0.5, 0], [1, -2, 1, 0], [-0.5, 1.5, -1.5, 0.5]])


class _FixedSamples:
    """The fixed image's side of the joint histogram, the same at every evaluation: each sample's
    bin (a zero-order kernel, as in Mattes et al.: the moving side's cubic kernel alone makes the
    estimate differentiable).

    Each sample spreads cubic weights in its fraction u over 4 neighbouring cells from a start
    cell, so the histogram needs only the sums of 1, u, u², u³ per start cell (4 bincounts), and
    each sample's derivative is a quadratic in u whose coefficients depend on its start cell alone
    (3 look-ups): ~10x faster than spreading and gathering 4 weights per sample.
    """

    def __init__(self, values: np.ndarray, bins: int):
        self.bins = bins
        self.rows = np.floor(values * (bins - 1e-6)).astype(np.int64) * bins

    def mutual_information(self, moving_values: np.ndarray,
                           counted: np.ndarray) -> tuple[float, np.ndarray]:
        """Parzen-window mutual information (nats) of the samples where ``counted`` is true, and
        its derivative with respect to each moving value (0 where not counted)."""
        bins, n = self.bins, float(np.count_nonzero(counted))
        cells = bins * bins
        # Two padding bins each side hold the cubic kernel's support for values at 0 and 1.
        position = np.clip(moving_values, 0, 1) * (bins - 5) + 2
        first = np.floor(position)
        u = position - first
        squared = u * u
        # Samples not counted start in a spare cell past the histogram, cut off below.
        start = np.where(counted, self.rows + first.astype(np.int64) - 1, cells)
        moments = np.stack([np.bincount(start, weights, cells + 1)
                            for weights in (None, u, squared, squared * u)])
        spread = _CUBIC_WEIGHTS.T @ moments  # (4, cells + 1): what start cell c gives to c + j
        joint = np.zeros(cells + 4)
        for offset, part in enumerate(spread):
            joint[offset:offset + cells + 1] += part
        joint = joint[:cells].reshape(bins, bins) / n
        fixed_marginal, moving_marginal = joint.sum(1), joint.sum(0)
        occupied = joint > 0
        safe = np.where(occupied, joint, 1.0)
        value = float(np.sum(np.where(occupied, joint * np.log(
            safe / np.maximum(fixed_marginal[:, None] * moving_marginal[None, :], 1e-30)), 0.0)))
        # dMI/dp(i, j) = log(p(i, j) / p_m(j)) + const; the constant drops out since sum dp = 0.
        ratio = np.where(occupied, np.log(safe / np.maximum(moving_marginal[None, :], 1e-30)), 0.0)
        windows = np.lib.stride_tricks.sliding_window_view(np.append(ratio.ravel(), np.zeros(4)), 4)
        constant, linear, quadratic = (np.take(row, start) for row in
                                       (_CUBIC_SLOPES @ windows.T).astype(u.dtype))
        return value, (constant + u * (linear + u * quadratic)) * u.dtype.type((bins - 5) / n)


def mutual_information(fixed_values: np.ndarray, moving_values: np.ndarray,
                       bins: int = BINS) -> tuple[float, np.ndarray]:
    """Parzen-window mutual information (nats) of paired samples in [0, 1] and its derivative
    with respect to each moving value."""
    moving = np.asarray(moving_values, np.float64)
    return _FixedSamples(np.asarray(fixed_values, np.float64), bins).mutual_information(
        moving, np.ones(len(moving), bool))


class _Warp:
    """The model's parameters <-> (A, s) of ``x_m = A (x_f - c) + s``, with derivatives."""

    def __init__(self, model: str, centre_xy: np.ndarray):
        self.model, self.centre = model, centre_xy
        self.radius = float(np.hypot(*centre_xy)) or 1.0

    def start(self, transform: AffineTransform) -> np.ndarray:
        inverse = transform.inverse()
        a, s = inverse.matrix_xy[:2, :2], inverse.apply_xy(self.centre)[0]
        if self.model == "rigid":
            linear = [np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])]
        elif self.model == "similarity":
            linear = [(a[0, 0] + a[1, 1]) / 2, (a[1, 0] - a[0, 1]) / 2]
        else:
            linear = list(a.ravel())
        return np.array([*(v * self.radius for v in linear), *s])

    def linear(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A (2, 2) and dA/dq for the linear parameters (k, 2, 2)."""
        p = q[:-2] / self.radius
        if self.model == "rigid":
            c, s = np.cos(p[0]), np.sin(p[0])
            return np.array([[c, -s], [s, c]]), np.array([[[-s, -c], [c, -s]]]) / self.radius
        if self.model == "similarity":
            basis = np.array([[[1, 0], [0, 1]], [[0, -1], [1, 0]]], float)
            return p[0] * basis[0] + p[1] * basis[1], basis / self.radius
        return p.reshape(2, 2), np.eye(4).reshape(4, 2, 2) / self.radius

    def transform(self, q: np.ndarray) -> AffineTransform:
        a, _ = self.linear(q)
        fixed_to_moving = np.eye(3)
        fixed_to_moving[:2, :2], fixed_to_moving[:2, 2] = a, q[-2:] - a @ self.centre
        return AffineTransform(np.linalg.inv(fixed_to_moving), self.model)


def _stratified_pixels(rows: int, cols: int, samples: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """About ``samples`` pixels (rows, cols), one drawn at random in each cell of a regular grid:
    spread evenly, so the estimate varies less from one draw to the next than with pixels drawn
    anywhere."""
    step = max(1.0, np.sqrt(rows * cols / samples))
    row_edges = np.linspace(0, rows, max(1, round(rows / step)) + 1).astype(int)
    col_edges = np.linspace(0, cols, max(1, round(cols / step)) + 1).astype(int)
    tops, lefts = np.meshgrid(row_edges[:-1], col_edges[:-1], indexing="ij")
    heights, widths = np.meshgrid(np.diff(row_edges), np.diff(col_edges), indexing="ij")
    ys = tops.ravel() + (rng.random(tops.size) * heights.ravel()).astype(int)
    xs = lefts.ravel() + (rng.random(lefts.size) * widths.ravel()).astype(int)
    return ys, xs


class _Settled(Exception):
    """The optimiser probes within :data:`SETTLED_STEP` of the best point it has evaluated."""


def _refine_level(fixed: np.ndarray, moving: np.ndarray, start: AffineTransform, model: str,
                  samples: int, rng: np.random.Generator) -> tuple[AffineTransform, float]:
    rows, cols = fixed.shape
    ys, xs = _stratified_pixels(rows, cols, samples, rng)
    index = ys * cols + xs
    # float32 halves the memory each evaluation reads; the sums stay far below the tolerance
    histogram = _FixedSamples(fixed.ravel()[index], BINS)
    warp = _Warp(model, np.array([(cols - 1) / 2, (rows - 1) / 2]))
    offsets = np.stack([xs - warp.centre[0], ys - warp.centre[1]])  # (2, n)
    # value, d/dx, d/dy of each pixel as three channels: one bilinear sampling reads all three
    stack = torch.from_numpy(_value_and_gradient(moving))[None]
    extent = np.array([[moving.shape[1] - 1], [moving.shape[0] - 1]], float)
    best = [-np.inf, warp.start(start)]  # the largest mutual information evaluated, and where

    def negative(q):
        if np.max(np.abs(q - best[1])) < SETTLED_STEP and np.isfinite(best[0]):
            raise _Settled
        a, d_a = warp.linear(q)
        xy = a @ offsets + q[-2:, None]
        inside = np.all((xy >= 0) & (xy <= extent), axis=0)
        if inside.sum() < 0.25 * len(inside):  # no overlap left to compare: stop here
            return 0.0, np.zeros_like(q)
        grid = torch.from_numpy((2 * xy / np.maximum(extent, 1) - 1).T.astype(np.float32))[None, None]
        sampled = functional.grid_sample(stack, grid, align_corners=True)[0, :, 0].numpy()  # (3, n)
        value, slope = histogram.mutual_information(sampled[0], inside)
        # dMI/dx_m per sample, then through x_m = A d + s to the parameters.
        d_xy = slope.astype(np.float64) * sampled[1:]  # (2, n)
        d_a_total = d_xy @ offsets.T  # dMI/dA (2, 2)
        gradient = np.array([*np.einsum("kij,ij->k", d_a, d_a_total), *d_xy.sum(axis=1)])
        if value > best[0]:
            best[:] = value, np.array(q)
        return -value, -gradient

    try:
        optimize.minimize(negative, best[1].copy(), jac=True, method="L-BFGS-B",
                          options={"maxiter": MAX_ITERATIONS, "maxfun": MAX_EVALUATIONS,
                                   "ftol": TOLERANCE})
    except _Settled:
        pass
    value, q = best
    return warp.transform(q), max(value, 0.0)


# OpenBLAS's idle threads busy-wait after each call: in the optimiser's loop of small calls they
# spun on the core torch needs, and the refinement took 2.4x the CPU time it takes on one thread.
@threadpool_limits.wrap(limits=1, user_api="blas")
def refine_mutual_information(fixed: np.ndarray, moving: np.ndarray, initial: AffineTransform,
                              model: str, *, seed: int = 0) -> tuple[AffineTransform, float]:
    """Maximise the mutual information of two images from ``initial`` (moving -> fixed, (x, y)
    pixels) under ``model``, coarse to fine (:data:`FACTORS`, times what brings the finest level
    within :data:`FINEST_SIDE`).

    Parameters
    ----------
    fixed, moving : np.ndarray
        (rows, cols) or (rows, cols, channels) images, compared grey (:func:`normalised_grey`).
    initial : AffineTransform
        Moving -> fixed start, within a few pixels of the answer.
    model : {"rigid", "similarity", "affine"}
    seed : int
        Of the sampled fixed pixels.

    Returns
    -------
    (AffineTransform, float)
        The transform (moving -> fixed) and its mutual information (nats) at full resolution.
    """
    rng = np.random.default_rng(seed)
    fixed, moving = normalised_grey(fixed), normalised_grey(moving)
    transform, value = AffineTransform(initial.matrix_xy, model), 0.0
    finest = -(-max(*fixed.shape, *moving.shape) // FINEST_SIDE)
    for k, samples in zip((finest * factor for factor in FACTORS), SAMPLES, strict=True):
        up = level_to_full_xy(k)
        start = AffineTransform(np.linalg.inv(up) @ transform.matrix_xy @ up, model)
        levels = (image if k == 1 else block_mean(image, k) for image in (fixed, moving))
        found, value = _refine_level(*levels, start, model, samples, rng)
        transform = AffineTransform(up @ found.matrix_xy @ np.linalg.inv(up), model)
    return transform, value
