"""Transforms from corresponding landmarks (point pairs placed by a person), and their residuals.

Least squares: Umeyama's closed form for rigid and similarity, linear least squares for affine
(``skimage.transform``). Points are ``(x, y)``, 0-based pixel centres; the transform maps moving
points onto fixed ones, as every transform in napari-comir does.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..transforms import AffineTransform

#: Fewest landmark pairs that determine each model (one more lets residuals show an error).
MIN_LANDMARKS = {"rigid": 2, "similarity": 2, "affine": 3}
#: Least fraction of the moving image the landmarks' convex hull should cover. On the H&E/IHC
#: pairs (80 manual landmarks each), affine maps fitted to 4-8 of them were, over all 80, on
#: median 5-7x as far off as the best affine map under 2 % cover, 2.4x at 2-5 %, 1.7x at 5-10 %,
#: 1.4x at 10-20 % and 1.2x above (docs/benchmarks.md, "Landmarks that cover little").
MIN_COVERAGE = 0.1


def _points(points, name: str) -> np.ndarray:
    try:
        array = np.asarray(points, dtype=float)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{name} landmarks must be (x, y) numbers, got {str(points)[:40]!r}") from exc
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(f"{name} landmarks must be an (N, 2) array of (x, y) points, got shape "
                         f"{array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} landmarks contain NaN or infinite coordinates")
    return array


def _fit(moving: np.ndarray, fixed: np.ndarray, transform: str) -> np.ndarray | None:
    """3 x 3 (x, y) matrix of the least-squares fit, ``None`` when it fails; memory linear in
    the number of pairs (scikit-image's affine estimate takes a (2N)² SVD: 10 000 pairs ran out
    of memory)."""
    if transform == "affine":
        centre_moving, centre_fixed = moving.mean(axis=0), fixed.mean(axis=0)
        linear, *_ = np.linalg.lstsq(moving - centre_moving, fixed - centre_fixed, rcond=None)
        params = np.eye(3)
        params[:2, :2] = linear.T
        params[:2, 2] = centre_fixed - linear.T @ centre_moving
        return params
    from skimage import transform as skt

    kind = skt.EuclideanTransform if transform == "rigid" else skt.SimilarityTransform
    fitted = kind.from_estimate(moving, fixed)  # Umeyama: 2 x 2 covariances; falsy when it fails
    return fitted.params if fitted else None


def landmark_coverage(points_xy, shape_rc) -> float:
    """Fraction of an image of ``shape_rc`` (rows, cols) that the convex hull of its landmarks
    ``points_xy`` (N, 2) covers: 0 for fewer than three points or all on one line."""
    from scipy.spatial import ConvexHull, QhullError

    points = _points(points_xy, "the")
    try:
        area = ConvexHull(points).volume if len(points) >= 3 else 0.0  # a 2-D hull's volume is its area
    except QhullError:  # all on one line (or spot)
        area = 0.0
    return float(area / (shape_rc[0] * shape_rc[1]))


def coverage_warning(points_xy, shape_rc) -> str | None:
    """Why a map fitted to landmarks ``points_xy`` of an image of ``shape_rc`` may be far off away
    from them (they cover under :data:`MIN_COVERAGE` of it), else ``None``."""
    coverage = landmark_coverage(points_xy, shape_rc)
    if coverage >= MIN_COVERAGE:
        return None
    share = f"{coverage:.0%}" if coverage >= 0.01 else "under 1%"
    return (f"the landmarks cover {share} of the moving image: away from them the map "
            "extrapolates and may be far off; spread 4 or more pairs over the tissue")


def fit_landmarks(fixed_points_xy, moving_points_xy,
                  transform: str = "affine") -> tuple[AffineTransform, np.ndarray]:
    """The ``transform`` model that best maps the moving landmarks onto the fixed ones.

    Parameters
    ----------
    fixed_points_xy, moving_points_xy : array_like
        (N, 2) corresponding points (x, y), pair i in row i of both.
    transform : {"rigid", "similarity", "affine"}

    Returns
    -------
    transform : AffineTransform
        Moving (x, y) -> fixed (x, y).
    residuals_px : np.ndarray
        (N,) distance in fixed pixels between each fixed landmark and its moving partner mapped.

    Raises
    ------
    InputError
        Different counts, too few pairs for the model, or points that do not determine it (all on
        one spot, or on one line for an affine).
    """
    fixed, moving = _points(fixed_points_xy, "fixed"), _points(moving_points_xy, "moving")
    if transform not in MIN_LANDMARKS:
        raise InputError(f"transform must be one of {', '.join(MIN_LANDMARKS)}, got {transform!r}")
    if len(fixed) != len(moving):
        raise InputError(f"{len(fixed)} fixed and {len(moving)} moving landmarks: place them in "
                         "pairs, the i-th of each layer on the same structure")
    needed = MIN_LANDMARKS[transform]
    if len(fixed) < needed:
        article = "an" if transform[0] in "aeiou" else "a"
        raise InputError(f"{article} {transform} transform needs at least {needed} landmark pairs, got "
                         f"{len(fixed)}")
    spread = np.linalg.svd(moving - moving.mean(axis=0), compute_uv=False)
    degenerate = spread[0] < 1e-6 or (transform == "affine" and spread[1] < 1e-6 * spread[0])
    params = None if degenerate else _fit(moving, fixed, transform)
    if params is None or not np.all(np.isfinite(params)):
        raise InputError(f"the landmarks do not determine a {transform} transform (all on one "
                         f"{'line' if transform == 'affine' else 'spot'}?); spread them out")
    found = AffineTransform(params, transform)
    residuals = np.linalg.norm(found.apply_xy(moving) - fixed, axis=1)
    return found, residuals
