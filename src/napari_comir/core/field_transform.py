"""A deformable transform: an affine map followed by a smooth displacement field, both ways.

Conventions are those of :mod:`napari_comir.core.transforms` ((x, y) = (column, row), 0-based
pixel centres, moving -> fixed). A :class:`DisplacementFieldTransform` is the affine result
``A`` (moving -> fixed) corrected by a displacement field on the fixed image's grid:

* fixed -> moving (how images are resampled, ITK's direction): ``x_m = A^-1 (p + u(p))``, with
  ``u`` the **displacement** from a fixed point ``p`` to where its tissue lies in the moving
  image after ``A`` (the "affine frame").
* moving -> fixed (how points and annotations are carried): ``p = q + v(q)`` with ``q = A x_m``
  and ``v`` the **inverse displacement**, computed once from ``u`` (``q = p + u(p)`` solved for
  ``p`` on every grid node) and stored beside it, so both directions are one interpolation.

Both fields are sampled on a grid of nodes ``spacing_px`` fixed pixels apart, node ``[i, j]`` at
fixed ``(x, y) = (j * spacing_px, i * spacing_px)``, and interpolated bilinearly between nodes
(as ITK interpolates a displacement field); beyond the grid the border value holds.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from .coordinate_frames import coordinate_transform, frames_to_centres_xy
from .errors import InputError
from .resampling import cast_like
from .resampling import resample as resample_affine
from .transforms import AffineTransform, as_points

#: The ``transform`` name of a deformable result in JSON (beside rigid, similarity, affine).
DEFORMABLE = "deformable"
#: Fixed-point iterations (at most) that invert the displacement field, and the largest residual (px) of
#: the inverse accepted: ``p + u(p) = q`` converges when ``u`` is smooth (|grad u| < 1).
INVERSE_ITERATIONS, INVERSE_TOLERANCE_PX = 50, 0.05
#: Output rows resampled at a time (bounds the coordinate arrays' memory).
RESAMPLE_BAND_ROWS = 256
FIELD_CONVENTION = (
    "Written by napari-comir. A deformable transform: 'affine' (matrix_xy: MOVING pixel (x, y) "
    "-> FIXED pixel (x, y)) corrected by a displacement field on the fixed grid. Fixed -> moving: "
    "x_m = affine^-1(p + u(p)); moving -> fixed: p = q + v(q) with q = affine(x_m). u is "
    "'displacement_xy', v 'inverse_displacement_xy', arrays [row][col][(dx, dy)] in fixed pixels "
    "on nodes spacing_px apart (node [i][j] at x = j * spacing_px, y = i * spacing_px), "
    "interpolated bilinearly, border values beyond. x = column, y = row, 0-based pixel centres."
)


def grid_shape(fixed_shape, spacing_px: float) -> tuple[int, int]:
    """(rows, cols) of field nodes ``spacing_px`` apart that cover a fixed image of ``fixed_shape``."""
    rows, cols = (int(n) for n in tuple(fixed_shape)[:2])
    return (math.ceil((rows - 1) / spacing_px) + 1, math.ceil((cols - 1) / spacing_px) + 1)


def sample_field(field_xy: np.ndarray, spacing_px: float, points_xy: np.ndarray) -> np.ndarray:
    """Bilinear value of a (rows, cols, 2) field at (N, 2) fixed (x, y) points (border beyond)."""
    coordinates = np.stack([points_xy[:, 1], points_xy[:, 0]]) / spacing_px
    return np.stack([ndimage.map_coordinates(field_xy[..., axis], coordinates, order=1,
                                             mode="nearest") for axis in (0, 1)], axis=1)


def node_positions_xy(shape, spacing_px: float) -> np.ndarray:
    """(rows, cols, 2) fixed (x, y) of a field's nodes."""
    rows, cols = shape[:2]
    y, x = np.meshgrid(np.arange(rows) * spacing_px, np.arange(cols) * spacing_px, indexing="ij")
    return np.stack([x, y], axis=-1)


def invert_field(displacement_xy: np.ndarray, spacing_px: float) -> np.ndarray:
    """The inverse displacement ``v`` on the same nodes: ``q + v(q) = p`` where ``p + u(p) = q``.

    Raises
    ------
    InputError
        The field folds or tears (its inverse does not converge within
        :data:`INVERSE_TOLERANCE_PX`).
    """
    nodes = node_positions_xy(displacement_xy.shape, spacing_px).reshape(-1, 2)
    points = nodes.copy()
    for _ in range(INVERSE_ITERATIONS):
        previous, points = points, nodes - sample_field(displacement_xy, spacing_px, points)
        if np.abs(points - previous).max() < 1e-3:
            break
    residual = np.abs(points + sample_field(displacement_xy, spacing_px, points) - nodes).max()
    if not residual <= INVERSE_TOLERANCE_PX:
        raise InputError(f"the displacement field cannot be inverted (residual {residual:.2f} px): "
                         "it folds or changes too fast between its nodes")
    return (points - nodes).reshape(displacement_xy.shape).astype(np.float32)


def jacobian_determinant(displacement_xy: np.ndarray, spacing_px: float) -> np.ndarray:
    """det(I + grad u) on the field's nodes (central differences): > 0 everywhere means no fold."""
    if min(displacement_xy.shape[:2]) < 2:
        return np.ones(displacement_xy.shape[:2])
    du_dy, du_dx = np.gradient(displacement_xy.astype(np.float64), spacing_px, axis=(0, 1))
    return (1.0 + du_dx[..., 0]) * (1.0 + du_dy[..., 1]) - du_dy[..., 0] * du_dx[..., 1]


def _field_array(value, name: str) -> np.ndarray:
    try:
        field = np.array(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numbers [row][col][(dx, dy)]: {exc}") from exc
    if field.ndim != 3 or field.shape[2] != 2 or min(field.shape[:2]) < 1:
        raise InputError(f"{name} must have shape (rows, cols, 2), got {field.shape}")
    if not np.all(np.isfinite(field)):
        raise InputError(f"{name} contains NaN or infinite values")
    return field


@dataclass(frozen=True, eq=False)
class DisplacementFieldTransform:
    """An affine map corrected by a smooth displacement field (see the module's conventions).

    Build one with :meth:`from_displacement` (which computes the inverse field); the verbs are
    :class:`~napari_comir.core.transforms.AffineTransform`'s: :meth:`apply_xy`,
    :meth:`apply_rc`, :meth:`inverse`, :meth:`to_dict`/:meth:`from_dict`, JSON and NPZ.

    Parameters
    ----------
    affine : AffineTransform
        Moving -> fixed affine part.
    displacement_xy, inverse_displacement_xy : np.ndarray
        (rows, cols, 2) ``u`` and ``v`` in fixed pixels, on nodes ``spacing_px`` apart.
    spacing_px : float
        Fixed pixels between nodes.
    inverted : bool
        ``True`` for the fixed -> moving map (what :meth:`inverse` returns).
    """

    affine: AffineTransform
    displacement_xy: np.ndarray
    inverse_displacement_xy: np.ndarray
    spacing_px: float
    inverted: bool = False

    def __post_init__(self):
        if not isinstance(self.affine, AffineTransform):
            raise InputError(f"affine must be an AffineTransform, got {type(self.affine).__name__}")
        spacing = float(self.spacing_px)
        if not (math.isfinite(spacing) and spacing > 0):
            raise InputError(f"spacing_px must be a positive number of pixels, got {self.spacing_px!r}")
        forward = _field_array(self.displacement_xy, "displacement_xy")
        backward = _field_array(self.inverse_displacement_xy, "inverse_displacement_xy")
        if forward.shape != backward.shape:
            raise InputError(f"displacement_xy {forward.shape} and inverse_displacement_xy "
                             f"{backward.shape} must have one shape")
        for array in (forward, backward):
            array.setflags(write=False)
        object.__setattr__(self, "spacing_px", spacing)
        object.__setattr__(self, "displacement_xy", forward)
        object.__setattr__(self, "inverse_displacement_xy", backward)

    @classmethod
    def from_displacement(cls, affine: AffineTransform, displacement_xy,
                          spacing_px: float) -> DisplacementFieldTransform:
        """Build from the affine part and ``u`` (fixed -> affine frame); ``v`` is computed."""
        field = _field_array(displacement_xy, "displacement_xy")
        return cls(affine, field, invert_field(field, float(spacing_px)), spacing_px)

    @classmethod
    def from_affine(cls, affine: AffineTransform, fixed_shape) -> DisplacementFieldTransform:
        """The affine transform as a deformable one with a zero field over a fixed image of
        ``fixed_shape`` (for formats that hold deformable transforms only)."""
        spacing = float(max(1, max(tuple(fixed_shape)[:2]) - 1))
        zero = np.zeros((2, 2, 2), np.float32)
        return cls(affine, zero, zero, spacing)

    # ------------------------------------------------------------------ views

    @property
    def model(self) -> str:
        """``"deformable"``, beside the affine models' names."""
        return DEFORMABLE

    @property
    def max_displacement_px(self) -> float:
        """The largest displacement of the field (fixed px) beyond the affine part."""
        return float(np.linalg.norm(self.displacement_xy, axis=-1).max())

    @property
    def min_jacobian(self) -> float:
        """The least det(I + grad u) over the nodes: positive when the field does not fold."""
        return float(jacobian_determinant(self.displacement_xy, self.spacing_px).min())

    def displacement_magnitude(self) -> np.ndarray:
        """(rows, cols) |u| on the nodes (fixed px): the deformation a view shows, beside
        ``spacing_px`` as its scale on the fixed image."""
        return np.linalg.norm(self.displacement_xy, axis=-1)

    # ------------------------------------------------------------------ algebra

    def inverse(self) -> DisplacementFieldTransform:
        """The same transform in the other direction (fixed -> moving, or back)."""
        return replace(self, inverted=not self.inverted)

    def fixed_to_moving_xy(self, points_xy) -> np.ndarray:
        """Fixed (x, y) (N, 2) -> moving (x, y): ``A^-1 (p + u(p))``."""
        points = as_points(points_xy)
        return self.affine.inverse().apply_xy(
            points + sample_field(self.displacement_xy, self.spacing_px, points))

    def moving_to_fixed_xy(self, points_xy) -> np.ndarray:
        """Moving (x, y) (N, 2) -> fixed (x, y): ``q + v(q)`` with ``q = A x``."""
        q = self.affine.apply_xy(as_points(points_xy))
        return q + sample_field(self.inverse_displacement_xy, self.spacing_px, q)

    def apply_xy(self, points_xy) -> np.ndarray:
        """Map (N, 2) (x, y) points in this transform's direction (moving -> fixed unless inverted)."""
        return self.fixed_to_moving_xy(points_xy) if self.inverted else self.moving_to_fixed_xy(points_xy)

    def apply_rc(self, points_rc) -> np.ndarray:
        """Map (N, 2) (row, col) points in this transform's direction."""
        return self.apply_xy(as_points(points_rc)[:, ::-1])[:, ::-1]

    # ------------------------------------------------------------------ serialisation

    def to_dict(self, center_xy=None) -> dict:
        """Plain Python: ``transform`` ("deformable"), the ``affine`` part's dict (with its
        decomposition about ``center_xy`` when given), the spacing, both fields as nested lists
        (4 decimals, 1e-4 px), the largest displacement and the least Jacobian."""
        if self.inverted:
            raise InputError("write the moving -> fixed transform (call inverse() again): files "
                             "hold transforms in one direction")
        return {"transform": DEFORMABLE, "convention": FIELD_CONVENTION,
                "affine": self.affine.to_dict(center_xy), "spacing_px": self.spacing_px,
                "grid_shape": list(self.displacement_xy.shape[:2]),
                "max_displacement_px": self.max_displacement_px, "min_jacobian": self.min_jacobian,
                "displacement_xy": np.round(self.displacement_xy.astype(float), 4).tolist(),
                "inverse_displacement_xy":
                    np.round(self.inverse_displacement_xy.astype(float), 4).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> DisplacementFieldTransform:
        """Build from :meth:`to_dict`'s fields (``affine``, ``spacing_px`` and both fields)."""
        if not isinstance(d, dict) or d.get("transform") != DEFORMABLE:
            raise InputError("a deformable transform is a dict with \"transform\": \"deformable\"")
        missing = [key for key in ("affine", "spacing_px", "displacement_xy",
                                   "inverse_displacement_xy") if key not in d]
        if missing:
            raise InputError(f"a deformable transform needs {', '.join(missing)}")
        try:
            spacing = float(d["spacing_px"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"spacing_px must be a number, got {d['spacing_px']!r}") from exc
        return cls(AffineTransform.from_dict(d["affine"]), d["displacement_xy"],
                   d["inverse_displacement_xy"], spacing)

    def to_json(self, path=None, center_xy=None) -> str:
        """:meth:`to_dict` as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(center_xy))
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_npz_bytes(self) -> bytes:
        """The transform as an ``.npz`` (arrays ``displacement_xy``, ``inverse_displacement_xy``,
        ``affine_matrix_xy``, ``spacing_px``, and ``convention``): compact for large fields."""
        if self.inverted:
            raise InputError("write the moving -> fixed transform (call inverse() again)")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, displacement_xy=self.displacement_xy,
                            inverse_displacement_xy=self.inverse_displacement_xy,
                            affine_matrix_xy=self.affine.matrix_xy,
                            affine_model=np.array(self.affine.model),
                            spacing_px=np.array(self.spacing_px),
                            convention=np.array(FIELD_CONVENTION))
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, path_or_bytes) -> DisplacementFieldTransform:
        """Read what :meth:`to_npz_bytes` wrote (a path or the bytes); no pickles are loaded."""
        source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
        if not isinstance(source, io.BytesIO) and not Path(os.fspath(source)).is_file():
            raise InputError(f"transform file not found: {source}")
        try:
            with np.load(source, allow_pickle=False) as data:
                return cls(AffineTransform(data["affine_matrix_xy"], str(data["affine_model"])),
                           data["displacement_xy"], data["inverse_displacement_xy"],
                           float(data["spacing_px"]))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"not a deformable transform .npz: {exc}") from exc


def coordinate_map(transform, *, inverse: bool = False, origin: str = "centre",
                   moving_pixel_size=None, fixed_pixel_size=None):
    """The map (a function of (N, 2) (x, y)) of coordinates as a file writes them, in one
    direction: :func:`~napari_comir.core.coordinate_frames.coordinate_transform` for an affine or a
    deformable transform (the same parameters: origin, and µm where a pixel size is given)."""
    if isinstance(transform, AffineTransform):
        return coordinate_transform(transform, inverse=inverse, origin=origin,
                                    moving_pixel_size=moving_pixel_size,
                                    fixed_pixel_size=fixed_pixel_size).apply_xy
    if not isinstance(transform, DisplacementFieldTransform):
        raise InputError(f"expected a transform, got {type(transform).__name__}")
    moving, fixed = frames_to_centres_xy(origin, moving_pixel_size, fixed_pixel_size)
    source, target = (fixed, moving) if inverse else (moving, fixed)
    directed = transform.inverse() if inverse else transform
    to_centres, from_centres = AffineTransform(source), AffineTransform(target).inverse()

    def map_xy(points_xy: np.ndarray) -> np.ndarray:
        return from_centres.apply_xy(directed.apply_xy(to_centres.apply_xy(points_xy)))

    return map_xy


def source_xy(transform, rows: slice, cols: slice) -> np.ndarray:
    """(n_rows, n_cols, 2) source (x, y) of the target grid's pixels ``[rows, cols]`` under a
    resampling with ``transform`` (source -> target): where each output pixel reads."""
    y, x = np.mgrid[rows, cols]
    target = np.stack([x.ravel(), y.ravel()], axis=1).astype(float)
    return transform.inverse().apply_xy(target).reshape(*x.shape, 2)


def resample(moving, transform, output_shape, *, order: int = 1, cval: float = 0.0,
             preserve_dtype: bool = True) -> np.ndarray:
    """Warp an image onto the target grid with an affine or a deformable transform.

    :func:`napari_comir.core.resampling.resample` for an :class:`AffineTransform`; for a
    :class:`DisplacementFieldTransform` every output pixel reads the source where the transform's
    inverse sends it, in bands of :data:`RESAMPLE_BAND_ROWS` rows. Parameters as there.
    """
    if isinstance(transform, AffineTransform):
        return resample_affine(moving, transform, output_shape, order=order, cval=cval,
                               preserve_dtype=preserve_dtype)
    if not isinstance(transform, DisplacementFieldTransform):
        raise InputError(f"expected a transform, got {type(transform).__name__}")
    moving = np.asarray(moving)
    if moving.ndim not in (2, 3):
        raise InputError(f"moving image must be 2-D (H, W) or 3-D (H, W, C), got shape {moving.shape}")
    if order not in range(6):
        raise InputError(f"interpolation order must be an integer 0..5, got {order}")
    rows, cols = (int(v) for v in tuple(output_shape)[:2])
    if min(rows, cols) < 1:
        raise InputError(f"output_shape must be (rows, cols) with positive sizes, got {output_shape}")
    out = np.empty((rows, cols) + moving.shape[2:], dtype=moving.dtype if order == 0 else np.float64)
    for start in range(0, rows, RESAMPLE_BAND_ROWS):
        band = slice(start, min(rows, start + RESAMPLE_BAND_ROWS))
        out[band] = read_at(moving, source_xy(transform, band, slice(0, cols)), order, cval)
    return cast_like(out, moving.dtype) if preserve_dtype else out


def coverage(moving_shape, transform, output_shape) -> np.ndarray:
    """Where a moving image of ``moving_shape`` (rows, cols[, ...]) lands on the output grid
    under ``transform`` (affine or deformable): its all-ones image resampled, float32, 1 inside,
    fractions along its edge, 0 where it does not reach."""
    return resample(np.ones(tuple(moving_shape)[:2], np.float32), transform, output_shape)


def read_at(image: np.ndarray, positions_xy: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """(rows, cols[, channels]) of an (H, W[, C]) image read at (rows, cols, 2) (x, y) positions
    (spline ``order``, ``cval`` outside); float64 unless ``order`` is 0."""
    work = image if order == 0 else image.astype(np.float64, copy=False)
    coordinates = np.stack([positions_xy[..., 1], positions_xy[..., 0]])
    planes = [work] if work.ndim == 2 else [work[..., c] for c in range(work.shape[2])]
    values = [ndimage.map_coordinates(plane, coordinates, order=order, mode="constant", cval=cval,
                                      prefilter=order > 1) for plane in planes]
    return values[0] if image.ndim == 2 else np.stack(values, axis=-1)

__all__ = ["DEFORMABLE", "DisplacementFieldTransform", "coordinate_map", "grid_shape", "invert_field",
           "jacobian_determinant", "read_at", "resample", "sample_field", "source_xy"]
