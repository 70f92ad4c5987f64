"""SIFT features matched between two images and a transform fitted to them with RANSAC."""

from __future__ import annotations

import numpy as np

from ..errors import RegistrationError
from ..transforms import AffineTransform


def sift_transform(fixed: np.ndarray, moving: np.ndarray, model: str) -> AffineTransform:
    """Moving -> fixed transform from SIFT matches + RANSAC on the first channel of (C, H, W) images.

    Raises
    ------
    RegistrationError
        Fewer than 4 matches, or fewer than 4 of them agree on one transform.
    """
    from skimage import transform as skt
    from skimage.feature import SIFT, match_descriptors
    from skimage.measure import ransac

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
            f"SIFT found only {len(matches)} matching features (need at least 4); try method='search'")
    estimator = {"rigid": skt.EuclideanTransform, "similarity": skt.SimilarityTransform,
                 "affine": skt.AffineTransform}[model]
    fitted, inliers = ransac((km[matches[:, 0]], kf[matches[:, 1]]), estimator,
                             min_samples=3, residual_threshold=2.0, max_trials=2000,
                             rng=np.random.default_rng(0))
    if fitted is None or inliers is None or int(inliers.sum()) < 4:
        n_in = 0 if inliers is None else int(inliers.sum())
        raise RegistrationError(
            f"SIFT matches are inconsistent ({n_in} of {len(matches)} agree on one {model} "
            "transform; need at least 4); try method='search'")
    return AffineTransform(fitted.params, model)
