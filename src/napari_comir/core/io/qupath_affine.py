"""An affine transform as the matrix QuPath's Interactive image alignment takes: BASE (fixed) ->
OVERLAY (moving) full-resolution pixels, pixel-corner origin (see :mod:`.transform_formats`)."""

from __future__ import annotations

import re

import numpy as np

from ..coordinate_frames import coordinate_transform, from_coordinate_transform
from ..errors import InputError
from ..transforms import AffineTransform
from ._transform_text import comment_values, from_matrix_xy, model_or_none, number_text, read_text

QUPATH_CONVENTION = (
    "Written by napari-comir for QuPath's Interactive image alignment. Convention: this matrix\n"
    "maps a point of the BASE image (napari-comir's fixed image) to the OVERLAY image (the\n"
    "moving image), in full-resolution pixels, origin at the top-left CORNER of the top-left\n"
    "pixel (QuPath's image coordinates: a pixel centre is at +0.5). QuPath paints the overlay\n"
    "through the inverse of this matrix. Paste the two number lines below (m00, m01, m02 /\n"
    "m10, m11, m12; '.' is the decimal point) into the transform box and press Update."
)


def qupath_matrix_xy_corner(transform: AffineTransform) -> np.ndarray:
    """3x3 matrix mapping FIXED (base) pixel ``(x, y)`` to MOVING (overlay) pixel ``(x, y)``,
    both with the origin at the top-left corner of pixel [0, 0] (QuPath's image coordinates)."""
    return coordinate_transform(transform, inverse=True, origin="corner").matrix_xy


def to_qupath_text(transform: AffineTransform) -> str:
    """Text for QuPath's Interactive image alignment: comment lines stating the convention (see
    :func:`qupath_matrix_xy_corner`), then the 2x3 matrix as QuPath's Copy button writes it."""
    m = qupath_matrix_xy_corner(transform)
    lines = [f"# {line}" for line in QUPATH_CONVENTION.splitlines()]
    lines.append(f"# transform_model: {transform.model}")
    lines += [",\t".join(number_text(v) for v in m[row]) for row in range(2)]
    return "\n".join(lines) + "\n"


def from_qupath_text(text: str) -> AffineTransform:
    """Read QuPath's 2x3 matrix (6 numbers; ``#`` lines are comments) back into a moving ->
    fixed pixel transform (pixel-centre origin)."""
    numbers = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        numbers += [token for token in re.split(r"[,\s]+", line) if token]
    if len(numbers) != 6:
        raise InputError(f"a QuPath affine matrix has 6 numbers (m00 m01 m02 / m10 m11 m12), "
                         f"got {len(numbers)}")
    try:
        corner = np.array([float(v) for v in numbers] + [0.0, 0.0, 1.0]).reshape(3, 3)
    except ValueError as exc:
        raise InputError(f"QuPath affine matrix values must be numbers: {exc}") from exc
    if not np.all(np.isfinite(corner)) or abs(np.linalg.det(corner[:2, :2])) < 1e-12:
        raise InputError("QuPath affine matrix must be finite and invertible")
    matrix_xy = from_coordinate_transform(corner, inverse=True, origin="corner").matrix_xy
    return from_matrix_xy(matrix_xy, model_or_none(comment_values(text).get("transform_model")))


def read_qupath_transform(path) -> AffineTransform:
    """Read a QuPath matrix file (``.qupath.txt``): see :func:`from_qupath_text`."""
    return from_qupath_text(read_text(path, "QuPath transform"))
