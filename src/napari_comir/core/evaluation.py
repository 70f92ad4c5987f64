"""Measurements of a model's quality: rotation equivariance (registration success is in the benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .inference import compute_comir
from .zoo import ComirModel


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two arrays of one shape, over ``mask`` (rows, cols) when given."""
    if mask is not None:
        a, b = a[mask], b[mask]
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _rotate(image: np.ndarray, angle_deg: float, order: int = 1) -> np.ndarray:
    """Rotate (rows, cols[, channels]) about the image centre, keeping the shape."""
    return ndimage.rotate(image, angle_deg, axes=(1, 0), reshape=False, order=order, mode="reflect")


def equivariance_score(model: ComirModel, image: np.ndarray, modality: str,
                       angles: Sequence[float] = tuple(range(0, 360, 15))) -> dict[float, float]:
    """How well the CoMIR follows rotations of the input.

    For each angle: rotate the input, compute the CoMIR, rotate it back, and correlate it
    with the CoMIR of the unrotated input inside the central disc (where no image content
    left the frame). 1.0 is perfect equivariance.

    Parameters
    ----------
    image : numpy.ndarray
        (rows, cols) or (rows, cols, channels) raw image of ``modality``, ideally square.

    Returns
    -------
    dict
        angle in degrees -> Pearson correlation.
    """
    reference = compute_comir(model, image, modality)
    rows, cols = reference.shape[:2]
    yy, xx = np.mgrid[:rows, :cols]
    radius = 0.5 * min(rows, cols) - 8  # margin: interpolation and padding effects at the rim
    disc = (yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2 <= radius**2
    scores = {}
    for angle in angles:
        rotated = _rotate(np.asarray(image, np.float32), angle)
        back = _rotate(compute_comir(model, rotated, modality), -angle)
        scores[float(angle)] = pearson(back, reference, disc)
    return scores
