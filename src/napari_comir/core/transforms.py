"""Rigid 2-D transforms between a moving and a fixed image, and resampling onto the fixed grid.

Conventions used everywhere in napari-comir
-------------------------------------------
* Arrays are indexed ``(row, col[, channel])``.
* Points are either ``(x, y)`` with ``x = column`` and ``y = row`` (the "xy" frame, y pointing down,
  as in scikit-image and OpenCV) or ``(row, col)`` (the "rc" frame, as in napari and scipy.ndimage).
* Coordinates are 0-based pixel centres: pixel ``[0, 0]`` has centre ``(0, 0)``.
* A :class:`RigidTransform` maps **moving** pixel coordinates to **fixed** pixel coordinates:
  ``[x_f, y_f] = R(angle) @ [x_m, y_m] + t`` with ``R = [[cos, -sin], [sin, cos]]``.
  Because y points down, a positive angle turns the image **clockwise** on screen.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InputError

#: Tolerance on ``R^T R = I`` and ``det R = 1`` when a matrix is read as a rigid transform.
RIGID_TOLERANCE = 1e-4

#: Column order of :meth:`RigidTransform.to_csv` (the m.. columns are ``matrix_xy[:2]`` row by row).
CSV_COLUMNS = ("angle_deg", "tx", "ty", "m00", "m01", "m02", "m10", "m11", "m12")

# Swaps (x, y) <-> (row, col) in homogeneous coordinates; it is its own inverse.
_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _wrap_angle(angle_deg: float) -> float:
    """Return the angle in degrees wrapped into ``[-180, 180)``."""
    return float((angle_deg + 180.0) % 360.0 - 180.0)


def _as_points(points) -> np.ndarray:
    """Return ``points`` as a float ``(N, 2)`` array (a single point may be given as ``(2,)``)."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"points must have shape (N, 2), got {pts.shape}")
    return pts


@dataclass(frozen=True)
class RigidTransform:
    """Rotation + translation mapping moving pixel coordinates to fixed pixel coordinates.

    ``[x_f, y_f] = R(angle_deg) @ [x_m, y_m] + translation_xy`` with
    ``R = [[cos, -sin], [sin, cos]]``, ``x`` = column, ``y`` = row, 0-based pixel centres.
    With y pointing down, a positive angle is a **clockwise** rotation on screen.

    Parameters
    ----------
    angle_deg : float
        Rotation angle in degrees, in the (x, y) frame.
    translation_xy : tuple of float
        Translation ``(tx, ty)`` in fixed pixels, applied after the rotation.
    """

    angle_deg: float = 0.0
    translation_xy: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        tx, ty = (float(v) for v in self.translation_xy)
        angle = float(self.angle_deg)
        if not all(math.isfinite(v) for v in (angle, tx, ty)):
            raise InputError("transform angle and translation must be finite numbers")
        # Frozen dataclass: normalise the stored values through object.__setattr__.
        object.__setattr__(self, "angle_deg", angle)
        object.__setattr__(self, "translation_xy", (tx, ty))

    @property
    def matrix_xy(self) -> np.ndarray:
        """3x3 homogeneous matrix mapping moving ``(x, y, 1)`` to fixed ``(x, y, 1)``."""
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        tx, ty = self.translation_xy
        return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])

    @property
    def matrix_rc(self) -> np.ndarray:
        """3x3 homogeneous matrix mapping moving ``(row, col, 1)`` to fixed ``(row, col, 1)``.

        Set it as ``layer.affine`` of the moving napari layer to display it over the fixed layer
        (both layers with identity scale and translate).
        """
        return _SWAP @ self.matrix_xy @ _SWAP

    @classmethod
    def from_matrix_xy(cls, m) -> RigidTransform:
        """Build from a 3x3 or 2x3 matrix acting on ``(x, y)``; raise InputError unless rigid."""
        m = np.asarray(m, dtype=float)
        if m.shape not in ((3, 3), (2, 3)):
            raise InputError(
                f"a 2-D rigid transform matrix must be 3x3 or 2x3, got shape {m.shape}"
            )
        if not np.all(np.isfinite(m)):
            raise InputError("transform matrix contains NaN or infinite values")
        if m.shape == (3, 3) and not np.allclose(m[2], [0.0, 0.0, 1.0], atol=RIGID_TOLERANCE):
            raise InputError(f"last row of a homogeneous 2-D matrix must be [0, 0, 1], got {m[2]}")
        rot = m[:2, :2]
        if not np.allclose(rot.T @ rot, np.eye(2), atol=RIGID_TOLERANCE) or np.linalg.det(rot) < 0:
            raise InputError(
                "matrix is not a rigid transform (it scales, shears or mirrors); "
                f"its 2x2 part is {rot.round(6).tolist()}"
            )
        angle = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
        return cls(angle, (m[0, 2], m[1, 2]))

    @classmethod
    def from_matrix_rc(cls, m) -> RigidTransform:
        """Build from a 3x3 or 2x3 matrix on ``(row, col)``; raise InputError unless rigid."""
        m = np.asarray(m, dtype=float)
        if m.shape == (2, 3):
            m = np.vstack([m, [0.0, 0.0, 1.0]])
        if m.shape != (3, 3):
            raise InputError(
                f"a 2-D rigid transform matrix must be 3x3 or 2x3, got shape {m.shape}"
            )
        return cls.from_matrix_xy(_SWAP @ m @ _SWAP)

    @classmethod
    def about_center(cls, angle_deg: float, center_xy, translation_xy=(0.0, 0.0)) -> RigidTransform:
        """Rotate by ``angle_deg`` about ``center_xy`` (x, y), then translate by ``translation_xy``.

        ``p -> R (p - c) + c + t``.
        """
        c = np.asarray(center_xy, dtype=float).reshape(2)
        rot = cls(angle_deg).matrix_xy[:2, :2]
        t = c - rot @ c + np.asarray(translation_xy, dtype=float).reshape(2)
        return cls(angle_deg, (t[0], t[1]))

    def inverse(self) -> RigidTransform:
        """Return the transform mapping fixed coordinates back to moving coordinates."""
        rot = self.matrix_xy[:2, :2]
        t = -rot.T @ np.asarray(self.translation_xy)
        return RigidTransform(-self.angle_deg, (t[0], t[1]))

    def compose(self, other: RigidTransform) -> RigidTransform:
        """Return ``self ∘ other``: apply ``other`` first, then ``self``."""
        m = self.matrix_xy @ other.matrix_xy
        return RigidTransform(_wrap_angle(self.angle_deg + other.angle_deg), (m[0, 2], m[1, 2]))

    def apply_xy(self, points_xy) -> np.ndarray:
        """Map moving ``(x, y)`` points (N, 2) to fixed ``(x, y)`` points (N, 2)."""
        pts = _as_points(points_xy)
        m = self.matrix_xy
        return pts @ m[:2, :2].T + m[:2, 2]

    def apply_rc(self, points_rc) -> np.ndarray:
        """Map moving ``(row, col)`` points (N, 2) to fixed ``(row, col)`` points (N, 2)."""
        return self.apply_xy(_as_points(points_rc)[:, ::-1])[:, ::-1]

    def to_dict(self) -> dict:
        """Return plain-Python angle_deg, translation_xy, matrix_xy and matrix_rc (lists)."""
        return {
            "angle_deg": self.angle_deg,
            "translation_xy": list(self.translation_xy),
            "matrix_xy": self.matrix_xy.tolist(),
            "matrix_rc": self.matrix_rc.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RigidTransform:
        """Build from a dict with ``matrix_xy`` (preferred) or ``angle_deg``+``translation_xy``."""
        if not isinstance(d, dict):
            raise InputError(
                f"expected a dict describing a rigid transform, got {type(d).__name__}"
            )
        if "matrix_xy" in d:
            return cls.from_matrix_xy(d["matrix_xy"])
        if "angle_deg" in d and "translation_xy" in d:
            t = np.asarray(d["translation_xy"], dtype=float).reshape(-1)
            if t.shape != (2,):
                raise InputError(f"translation_xy must have 2 values, got {t.size}")
            return cls(float(d["angle_deg"]), (t[0], t[1]))
        raise InputError(
            "a transform dict needs 'matrix_xy' or both 'angle_deg' and 'translation_xy'"
        )

    def to_json(self, path=None) -> str:
        """Return the :meth:`to_dict` fields as JSON; also write them to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path_or_str) -> RigidTransform:
        """Read from a JSON string or from a path to a JSON file written by :meth:`to_json`."""
        text = str(path_or_str)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise InputError(f"transform file not found: {path}")
            text = path.read_text(encoding="utf-8")
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"transform JSON is malformed: {exc}") from exc

    def to_csv(self, path=None) -> str:
        """Return one header row and one value row (columns :data:`CSV_COLUMNS`).

        ``tx, ty`` is the translation; ``m00..m12`` are the first two rows of :attr:`matrix_xy`.
        The text is also written to ``path`` when given.
        """
        m = self.matrix_xy
        values = [self.angle_deg, *self.translation_xy, *m[0], *m[1]]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerow([repr(float(v)) for v in values])
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_csv(cls, path_or_str) -> RigidTransform:
        """Read from CSV text or a CSV file written by :meth:`to_csv` (the matrix columns win)."""
        text = str(path_or_str)
        if "\n" not in text.strip():
            path = Path(text)
            if not path.is_file():
                raise InputError(f"transform file not found: {path}")
            text = path.read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        if len(rows) != 1:
            raise InputError(
                f"transform CSV must have one header row and one value row, got {len(rows)} rows"
            )
        row = rows[0]
        use_matrix = all(k in row for k in CSV_COLUMNS[3:])
        try:
            if use_matrix:
                m = [[float(row[f"m{i}{j}"]) for j in range(3)] for i in range(2)]
            else:
                angle, tx, ty = (float(row[k]) for k in CSV_COLUMNS[:3])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"transform CSV needs columns {', '.join(CSV_COLUMNS)}: {exc}"
            ) from exc
        return cls.from_matrix_xy(m) if use_matrix else cls(angle, (tx, ty))


def resample(
    moving,
    transform: RigidTransform,
    output_shape,
    *,
    order: int = 1,
    cval: float = 0.0,
    preserve_dtype: bool = True,
) -> np.ndarray:
    """Warp the moving image onto the fixed pixel grid.

    ``out[r_f, c_f] = moving[T^-1 (r_f, c_f)]`` with ``T = transform`` (moving -> fixed), so the
    output overlays the fixed image exactly like the napari moving layer with
    ``affine = transform.matrix_rc``.

    Parameters
    ----------
    moving : np.ndarray
        Image of shape (H, W) or (H, W, C).
    transform : RigidTransform
        Moving -> fixed transform.
    output_shape : tuple of int
        Fixed grid shape ``(rows, cols)`` (a trailing channel size is ignored).
    order : int
        Spline order: 0 = nearest neighbour (use for label images), 1 = bilinear, 3 = cubic.
    cval : float
        Value of output pixels that fall outside the moving image.
    preserve_dtype : bool
        Cast the result back to the input dtype (rounding and clipping for integer images).

    Returns
    -------
    np.ndarray
        Shape ``(rows, cols)`` or ``(rows, cols, C)``.
    """
    moving = np.asarray(moving)
    if moving.ndim not in (2, 3):
        raise InputError(
            f"moving image must be 2-D (H, W) or 3-D (H, W, C), got shape {moving.shape}"
        )
    if order not in range(6):
        raise InputError(f"interpolation order must be an integer 0..5, got {order}")
    out_rc = tuple(int(v) for v in tuple(output_shape)[:2])
    if len(out_rc) != 2 or min(out_rc) < 1:
        raise InputError(
            f"output_shape must be (rows, cols) with positive sizes, got {output_shape}"
        )
    # scipy maps output coordinates to input coordinates, i.e. it needs fixed -> moving in (r, c).
    inv = transform.inverse().matrix_rc
    work = moving if order == 0 else moving.astype(np.float64, copy=False)
    channels = [work] if work.ndim == 2 else [work[..., c] for c in range(work.shape[2])]
    warped = [
        ndimage.affine_transform(
            ch,
            inv[:2, :2],
            offset=inv[:2, 2],
            output_shape=out_rc,
            order=order,
            mode="constant",
            cval=cval,
            prefilter=order > 1,
        )
        for ch in channels
    ]
    out = warped[0] if moving.ndim == 2 else np.stack(warped, axis=-1)
    if preserve_dtype and out.dtype != moving.dtype:
        if np.issubdtype(moving.dtype, np.integer):
            info = np.iinfo(moving.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        elif moving.dtype == np.bool_:
            out = out > 0.5
        out = out.astype(moving.dtype)
    return out


def corner_error(true: RigidTransform, found: RigidTransform, shape_rc) -> float:
    """Mean distance in pixels between where two transforms send the 4 corners of a moving image.

    The corners are the pixel centres ``(0, 0), (w-1, 0), (0, h-1), (w-1, h-1)`` in (x, y) of a
    moving image of shape ``(h, w)``. Registration counts as successful when this is at most 2 %
    of the image width.

    Parameters
    ----------
    true, found : RigidTransform
        Reference and estimated moving -> fixed transforms.
    shape_rc : tuple of int
        Moving image shape ``(rows, cols[, ...])``.

    Returns
    -------
    float
        Mean corner displacement in fixed pixels.
    """
    h, w = (int(v) for v in tuple(shape_rc)[:2])
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=float)
    return float(np.linalg.norm(true.apply_xy(corners) - found.apply_xy(corners), axis=1).mean())
