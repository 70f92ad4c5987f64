"""Registration of two images of the same modality (e.g. two CoMIRs): rigid, similarity or affine.

Engine of :func:`register` with ``method="search"``, one module a step (as in
``skimage.registration``):

1. :mod:`.search` -- **global search** at a coarse level (block means, the smaller image ~50 px):
   every rotation x scale on a grid, all translations at once by FFT (masked NCC), the most
   significant few peaks kept.
2. :mod:`.refine` -- **Gauss-Newton** on the NCC with the chosen transform model, coarse to fine
   over a pyramid (:mod:`.levels`) up to full resolution.
3. :mod:`.mutual_information` -- optionally (the pipeline does it for images in memory), a
   final refinement on the original images by Mattes mutual information.
4. :mod:`.confidence` -- the score (NCC on the overlap) and whether success is likely.

``method="sift"`` (:mod:`.sift`) matches SIFT features and fits the model with RANSAC instead of step 1.

Coordinates: transforms map moving ``(x, y)`` to fixed ``(x, y)`` (x = column, y = row, 0-based
pixel centres, see :mod:`napari_comir.core.transforms`). Internally arrays are ``(C, rows, cols)``.
"""

from __future__ import annotations

from ..defaults import DEFAULT_TRANSFORM
from ._register import (
    ANGLE_STEP_PX,
    MAX_ASPECT,
    METHODS,
    MIN_OVERLAP,
    MIN_SIZE,
    MODEL_SELECTION_GAIN,
    N_CANDIDATES,
    SCALE_STEP_PX,
    SEARCH_SIZE,
    STRICTER_MAX_ITERATIONS,
    WEAK_DETAIL_FACTOR,
    RegistrationResult,
    angle_bounds,
    as_chw,
    check_model,
    register,
    scale_bounds,
    transform_score,
)
from .confidence import DETAIL_THRESHOLD, SCORE_THRESHOLD
from .mutual_information import refine_mutual_information

__all__ = [
    "ANGLE_STEP_PX", "DEFAULT_TRANSFORM", "DETAIL_THRESHOLD", "MAX_ASPECT", "METHODS", "MIN_OVERLAP",
    "MIN_SIZE", "MODEL_SELECTION_GAIN", "N_CANDIDATES", "SCALE_STEP_PX", "SCORE_THRESHOLD",
    "SEARCH_SIZE", "STRICTER_MAX_ITERATIONS", "WEAK_DETAIL_FACTOR", "RegistrationResult",
    "angle_bounds", "as_chw", "check_model", "refine_mutual_information", "register", "scale_bounds",
    "transform_score",
]
