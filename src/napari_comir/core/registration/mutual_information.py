"""A final refinement on the original images: Mattes mutual information (as elastix maximises
it), from a transform that is already nearly right.

CoMIRs give a capture range no intensity metric has (any rotation, scale 0.5-2) but blur the
finest details a little; the images themselves keep them. This refinement starts from the
CoMIR result and maximises the mutual information of the two original images (grey) under a
transform model, over a fixed random set of fixed-image pixels, coarse to fine, by L-BFGS with
the analytic gradient of the Parzen-window estimate (a linear kernel for the fixed image, a
cubic B-spline for the moving one, as in Mattes et al. 2003).

The warp is parametrised fixed -> moving about the fixed image's centre ``c`` as in
:mod:`.refine`: ``x_m = A (x_f - c) + s``; rigid uses an angle, similarity ``[[a, -b], [b, a]]``;
linear parameters are scaled by the image's half-diagonal, so one unit moves its rim ~1 px.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from ..transforms import AffineTransform
from .levels import level_to_full_xy

#: Histogram bins of each image (elastix's default is 32).
BINS = 32
#: Block-averaging factors of the levels, coarse to fine, and the fixed pixels sampled at each:
#: one random set per level, so that the optimiser sees one smooth function.
FACTORS, SAMPLES = (2, 1), (16384, 16384)
#: L-BFGS iterations and evaluations of the mutual information at most per level.
MAX_ITERATIONS, MAX_EVALUATIONS = 40, 60
#: Relative change of the mutual information at which a level stops (sampling noise is larger).
TOLERANCE = 1e-6
#: Intensity percentiles mapped to the histogram's ends (outliers clipped).
PERCENTILES = (0.5, 99.5)


def normalised_grey(image: np.ndarray) -> np.ndarray:
    """The image grey (channel mean), float64, its :data:`PERCENTILES` mapped to 0 and 1, clipped."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    grey = np.asarray(grey, np.float64)
    low, high = np.percentile(grey, PERCENTILES)
    return np.clip((grey - low) / max(high - low, 1e-12), 0.0, 1.0)


def _cubic_bspline_weights(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights (n, 4) of the cubic B-spline on the 4 bins around a position whose fraction past
    its bin is ``u``, and their derivatives with respect to the position."""
    u2, u3 = u * u, u * u * u
    weights = np.stack([(1 - u) ** 3, 3 * u3 - 6 * u2 + 4, -3 * u3 + 3 * u2 + 3 * u + 1, u3], 1) / 6
    slopes = np.stack([-(1 - u) ** 2 / 2, 1.5 * u2 - 2 * u, -1.5 * u2 + u + 0.5, u2 / 2], 1)
    return weights, slopes


def mutual_information(fixed_values: np.ndarray, moving_values: np.ndarray,
                       bins: int = BINS) -> tuple[float, np.ndarray]:
    """Parzen-window mutual information (nats) of paired samples in [0, 1] and its derivative
    with respect to each moving value."""
    n = len(fixed_values)
    fixed_position = fixed_values * (bins - 1.000001)
    fixed_bin = np.floor(fixed_position).astype(int)
    fixed_fraction = fixed_position - fixed_bin
    # Two padding bins each side hold the cubic kernel's support for values at 0 and 1.
    moving_position = moving_values * (bins - 5) + 2
    moving_bin = np.floor(moving_position)
    moving_bins = moving_bin.astype(int)[:, None] + np.arange(-1, 3)  # (n, 4)
    beta, beta_slope = _cubic_bspline_weights(moving_position - moving_bin)
    fixed_bins = np.stack([fixed_bin, fixed_bin + 1], 1)  # (n, 2)
    fixed_weights = np.stack([1 - fixed_fraction, fixed_fraction], 1)
    cells = fixed_bins[:, :, None] * bins + moving_bins[:, None, :]  # (n, 2, 4)
    joint = np.bincount(cells.ravel(), (fixed_weights[:, :, None] * beta[:, None, :]).ravel(),
                        minlength=bins * bins).reshape(bins, bins) / n
    fixed_marginal, moving_marginal = joint.sum(1), joint.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(joint > 0, np.log(joint / moving_marginal[None, :]), 0.0)
        value = float(np.sum(np.where(joint > 0, joint * np.log(
            joint / (fixed_marginal[:, None] * moving_marginal[None, :])), 0.0)))
    # dMI/dp(i, j) = log(p(i, j) / p_m(j)) + const, and the constant drops out since sum dp = 0.
    slope = np.einsum("nf,nm,nfm->n", fixed_weights, beta_slope, ratio.ravel()[cells]) * (bins - 5) / n
    return value, slope


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


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    rows, cols = image.shape[0] // k * k, image.shape[1] // k * k
    return image[:rows, :cols].reshape(rows // k, k, cols // k, k).mean(axis=(1, 3))


def _refine_level(fixed: np.ndarray, moving: np.ndarray, start: AffineTransform, model: str,
                  samples: int, rng: np.random.Generator) -> tuple[AffineTransform, float]:
    rows, cols = fixed.shape
    # in raster order: the moving pixels each sample reads then lie near each other in memory
    index = np.sort(rng.choice(rows * cols, min(samples, rows * cols), replace=False))
    ys, xs = np.divmod(index, cols)
    fixed_values = fixed.ravel()[index]
    warp = _Warp(model, np.array([(cols - 1) / 2, (rows - 1) / 2]))
    offsets = np.stack([xs - warp.centre[0], ys - warp.centre[1]])  # (2, n)
    # value, d/dx, d/dy of each pixel side by side: one gather reads all three
    stack = np.stack([moving, *np.gradient(moving)[::-1]], -1).reshape(-1, 3)
    moving_cols = moving.shape[1]
    limits = np.array([[moving_cols - 1], [moving.shape[0] - 1]])

    def bilinear(xy):
        """The stack at (x, y) points (2, n) inside the moving image: (3, n)."""
        corner = np.minimum(np.floor(xy), limits - 1).astype(int)
        fx, fy = xy - corner
        top = corner[1] * moving_cols + corner[0]
        bottom = top + moving_cols
        fx, fy = fx[:, None], fy[:, None]
        return ((stack[top] * (1 - fx) + stack[top + 1] * fx) * (1 - fy)
                 + (stack[bottom] * (1 - fx) + stack[bottom + 1] * fx) * fy).T

    def negative(q):
        a, d_a = warp.linear(q)
        xy = a @ offsets + q[-2:, None]
        inside = np.all((xy >= 0) & (xy <= limits), axis=0)
        if inside.sum() < 0.25 * len(inside):  # no overlap left to compare: stop here
            return 0.0, np.zeros_like(q)
        sampled = bilinear(xy[:, inside])
        value, slope = mutual_information(fixed_values[inside], np.clip(sampled[0], 0, 1))
        # dMI/dx_m per sample, then through x_m = A d + s to the parameters.
        d_xy = slope * sampled[1:]  # (2, n)
        d_a_total = d_xy @ offsets[:, inside].T  # dMI/dA (2, 2)
        gradient = np.array([*np.einsum("kij,ij->k", d_a, d_a_total), *d_xy.sum(axis=1)])
        return -value, -gradient

    q = optimize.minimize(negative, warp.start(start), jac=True, method="L-BFGS-B",
                          options={"maxiter": MAX_ITERATIONS, "maxfun": MAX_EVALUATIONS,
                                   "ftol": TOLERANCE}).x
    return warp.transform(q), -negative(q)[0]


def refine_mutual_information(fixed: np.ndarray, moving: np.ndarray, initial: AffineTransform,
                              model: str, *, seed: int = 0) -> tuple[AffineTransform, float]:
    """Maximise the mutual information of two images from ``initial`` (moving -> fixed, (x, y)
    pixels) under ``model``, coarse to fine (:data:`FACTORS`).

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
    for k, samples in zip(FACTORS, SAMPLES, strict=True):
        up = level_to_full_xy(k)
        start = AffineTransform(np.linalg.inv(up) @ transform.matrix_xy @ up, model)
        found, value = _refine_level(_block_mean(fixed, k), _block_mean(moving, k), start, model,
                                     samples, rng)
        transform = AffineTransform(up @ found.matrix_xy @ np.linalg.inv(up), model)
    return transform, value
