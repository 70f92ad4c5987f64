"""Coordinate frames other tools write transforms in: (0, 0) at the top-left pixel's centre or its
corner, pixels or µm; :func:`coordinate_transform` turns a moving -> fixed pixel-centre
:class:`~napari_comir.core.transforms.AffineTransform` into such a frame's map, and
:func:`from_coordinate_transform` reads one back (see :mod:`napari_comir.core.transforms` for the
conventions)."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .transforms import AffineTransform

#: Where a coordinate system puts (0, 0): at the centre of the top-left pixel (napari-comir,
#: napari, scikit-image) or at the top-left corner of that pixel (QuPath's GeoJSON, most vector
#: formats). ``x_centre = x_corner - 0.5`` (same for y).
ORIGINS = ("centre", "corner")


def _check_origin(origin: str) -> str:
    if origin == "center":
        return "centre"
    if origin not in ORIGINS:
        raise InputError(f"origin must be 'corner' (0, 0 at the top-left corner of the top-left "
                         f"pixel) or 'centre' (0, 0 at its centre), got {origin!r}")
    return origin


def _pixel_size_xy(value, name: str) -> np.ndarray | None:
    """``None`` or a positive (x, y) pixel size from one number or an (x, y) pair."""
    if value is None:
        return None
    try:
        size = np.array(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number of µm per pixel (or an (x, y) pair), "
                         f"got {value!r}") from exc
    if size.size == 1:
        size = np.repeat(size, 2)
    if size.shape != (2,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise InputError(f"{name} must be a positive number of µm per pixel (or an (x, y) pair), "
                         f"got {value!r}")
    return size


def _frame_to_centres_xy(origin: str, pixel_size_xy: np.ndarray | None) -> np.ndarray:
    """3x3 (x, y) matrix from a frame's coordinates (µm or px, corner or centre origin) to its
    0-based pixel centres."""
    m = np.eye(3)
    if pixel_size_xy is not None:
        m[0, 0], m[1, 1] = 1.0 / pixel_size_xy
    if origin == "corner":
        m[:2, 2] -= 0.5
    return m


def coordinate_transform(
    transform: AffineTransform,
    *,
    inverse: bool = False,
    origin: str = "centre",
    moving_pixel_size=None,
    fixed_pixel_size=None,
) -> AffineTransform:
    """The map of (x, y) coordinates as a file or another tool writes them, in one direction.

    ``transform`` maps moving pixel centres to fixed pixel centres. The result maps coordinates
    of the source image's frame (the moving image, or the fixed one when ``inverse``) to those of
    the target image's frame, with the same origin convention and units on both sides.

    Parameters
    ----------
    transform : AffineTransform
        Moving -> fixed transform (0-based pixel centres, as registration finds it).
    inverse : bool
        ``False``: moving -> fixed. ``True``: fixed -> moving (with ``transform.inverse()``).
    origin : {"centre", "corner"}
        Where the coordinates put (0, 0): the centre of the top-left pixel, or its top-left
        corner (QuPath's GeoJSON). ``x_centre = x_corner - 0.5``.
    moving_pixel_size, fixed_pixel_size : float or (float, float), optional
        When given, coordinates in that image's frame are in µm (or any one length unit), this
        many per pixel (one number, or (x, y)); otherwise they are in pixels.

    Returns
    -------
    AffineTransform
        Source-frame (x, y) -> target-frame (x, y).
    """
    if not isinstance(transform, AffineTransform):
        raise InputError(f"expected an AffineTransform, got {type(transform).__name__}")
    moving, fixed = frames_to_centres_xy(origin, moving_pixel_size, fixed_pixel_size)
    if inverse:
        m = np.linalg.inv(moving) @ np.linalg.inv(transform.matrix_xy) @ fixed
    else:
        m = np.linalg.inv(fixed) @ transform.matrix_xy @ moving
    return AffineTransform.from_matrix_xy(m)


def from_coordinate_transform(matrix_xy, *, inverse: bool = False, origin: str = "centre",
                              moving_pixel_size=None, fixed_pixel_size=None) -> AffineTransform:
    """The moving -> fixed pixel-centre transform a :func:`coordinate_transform` matrix stands
    for (its inverse): ``matrix_xy`` maps the source frame's (x, y) to the target frame's, with
    the same parameters as there."""
    moving, fixed = frames_to_centres_xy(origin, moving_pixel_size, fixed_pixel_size)
    m = np.asarray(matrix_xy, dtype=float)
    if inverse:
        return AffineTransform.from_matrix_xy(np.linalg.inv(moving @ m @ np.linalg.inv(fixed)))
    return AffineTransform.from_matrix_xy(fixed @ m @ np.linalg.inv(moving))


def frames_to_centres_xy(origin: str, moving_pixel_size, fixed_pixel_size):
    """The moving and the fixed frame's 3x3 (x, y) matrices to their pixel centres."""
    origin = _check_origin(origin)
    return (_frame_to_centres_xy(origin, _pixel_size_xy(moving_pixel_size, "moving_pixel_size")),
            _frame_to_centres_xy(origin, _pixel_size_xy(fixed_pixel_size, "fixed_pixel_size")))
