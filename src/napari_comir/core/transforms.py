"""2-D affine transforms between a moving and a fixed image (resampled onto the fixed grid by
:mod:`napari_comir.core.resampling`).

Conventions used everywhere in napari-comir
-------------------------------------------
* Arrays are indexed ``(row, col[, channel])``.
* Points are either ``(x, y)`` with ``x = column`` and ``y = row`` (the "xy" frame, y pointing down,
  as in scikit-image and OpenCV) or ``(row, col)`` (the "rc" frame, as in napari and scipy.ndimage).
* Coordinates are 0-based pixel centres: pixel ``[0, 0]`` has centre ``(0, 0)``.
* An :class:`AffineTransform` maps **moving** pixel coordinates to **fixed** pixel coordinates:
  ``[x_f, y_f, 1] = matrix_xy @ [x_m, y_m, 1]``. Rigid (rotation + translation) and similarity
  (rotation + isotropic scale + translation) transforms are affine transforms whose ``model``
  says which constraint they satisfy. ``R(angle) = [[cos, -sin], [sin, cos]]``: because y points
  down, a positive angle turns the image **clockwise** on screen.
* A microscopist reads a transform as :meth:`AffineTransform.decompose` gives it: rotation,
  scale (x, y) and shear of the linear part ``A = R(angle) @ [[sx, 0], [0, sy]] @ [[1, shear], [0, 1]]``,
  and the shift of the moving image's centre.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .defaults import TRANSFORM_MODELS
from .errors import InputError

MODELS = TRANSFORM_MODELS  # from the most to the least constrained
#: Tolerance on a matrix's constraints when it is read as a rigid or similarity transform.
CONSTRAINT_TOLERANCE = 1e-4

#: Column order of :meth:`AffineTransform.to_csv` (the m.. columns are ``matrix_xy[:2]`` row by row;
#: angle, scales and shear are the decomposition, for reading; the matrix is what is read back).
CSV_COLUMNS = ("transform", "angle_deg", "scale_x", "scale_y", "shear", "tx", "ty",
               "m00", "m01", "m02", "m10", "m11", "m12")

# Swaps (x, y) <-> (row, col) in homogeneous coordinates; it is its own inverse.
_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """2x2 rotation ``[[cos, -sin], [sin, cos]]`` acting on (x, y) (clockwise on screen)."""
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _wrap_angle(angle_deg: float) -> float:
    """Return the angle in degrees wrapped into ``[-180, 180)``."""
    return float((angle_deg + 180.0) % 360.0 - 180.0)


def as_points(points) -> np.ndarray:
    """Return ``points`` as a float ``(N, 2)`` array (a single point may be given as ``(2,)``)."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"points must have shape (N, 2), got {pts.shape}")
    return pts


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise InputError(f"transform model must be one of {', '.join(MODELS)}, got {model!r}")
    return model


def _homogeneous_xy(m) -> np.ndarray:
    """A validated 3x3 float matrix from a 3x3 or 2x3 one."""
    try:
        m = np.array(m, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"a 2-D transform matrix must be numeric: {exc}") from exc
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3):
        raise InputError(f"a 2-D transform matrix must be 3x3 or 2x3, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError("transform matrix contains NaN or infinite values")
    if not np.allclose(m[2], [0.0, 0.0, 1.0], atol=CONSTRAINT_TOLERANCE):
        raise InputError(f"last row of a homogeneous 2-D matrix must be [0, 0, 1], got {m[2]}")
    m[2] = [0.0, 0.0, 1.0]
    if abs(np.linalg.det(m[:2, :2])) < 1e-9:
        raise InputError(f"transform matrix is singular: its 2x2 part is {m[:2, :2].round(6).tolist()}")
    return m


@dataclass(frozen=True)
class Decomposition:
    """An affine transform as a microscopist reads it (see :meth:`AffineTransform.decompose`).

    Attributes
    ----------
    angle_deg : float
        Rotation in the (x, y) frame, degrees (positive = clockwise on screen).
    scale_xy : tuple of float
        Scale along the moving image's x and y axes (fixed px per moving px); a negative
        ``scale_xy[1]`` is a mirror.
    shear : float
        Shear of x by y, before the scale and rotation (0 for rigid and similarity transforms).
    shift_xy : tuple of float
        Where the moving image's ``centre_xy`` lands in the fixed image, minus ``centre_xy``:
        the shift a person sees when the images are overlaid (fixed px).
    centre_xy : tuple of float
        The centre the rotation, scale and shear are taken about.
    """

    angle_deg: float
    scale_xy: tuple[float, float]
    shear: float
    shift_xy: tuple[float, float]
    centre_xy: tuple[float, float]

    def to_dict(self) -> dict:
        return {"angle_deg": self.angle_deg, "scale_xy": list(self.scale_xy), "shear": self.shear,
                "shift_xy": list(self.shift_xy), "centre_xy": list(self.centre_xy)}


@dataclass(frozen=True, eq=False)
class AffineTransform:
    """Affine map of moving pixel coordinates to fixed pixel coordinates.

    ``[x_f, y_f, 1] = matrix_xy @ [x_m, y_m, 1]``, ``x`` = column, ``y`` = row, 0-based pixel
    centres. Build one with :meth:`rigid`, :meth:`similarity`, :meth:`about_center` or
    :meth:`from_matrix_xy`.

    Parameters
    ----------
    matrix_xy : array_like
        3x3 (or 2x3) homogeneous matrix acting on ``(x, y)``.
    model : {"rigid", "similarity", "affine"}
        The constraint the transform satisfies (checked): what it was estimated as.
    """

    matrix_xy: np.ndarray
    model: str = "affine"

    def __post_init__(self):
        m = _homogeneous_xy(self.matrix_xy)
        _check_model(self.model)
        a = m[:2, :2]
        if self.model != "affine":
            similar = (np.isclose(a[0, 0], a[1, 1], atol=CONSTRAINT_TOLERANCE * (1 + abs(a[0, 0])))
                       and np.isclose(a[0, 1], -a[1, 0], atol=CONSTRAINT_TOLERANCE * (1 + abs(a[0, 1]))))
            if not similar or np.linalg.det(a) <= 0:
                raise InputError(f"matrix is not a {self.model} transform (it shears or mirrors); "
                                 f"its 2x2 part is {a.round(6).tolist()}")
            if self.model == "rigid" and not np.isclose(np.linalg.det(a), 1.0, atol=CONSTRAINT_TOLERANCE):
                raise InputError("matrix is not a rigid transform (it scales); "
                                 f"its 2x2 part is {a.round(6).tolist()}")
        m.setflags(write=False)
        object.__setattr__(self, "matrix_xy", m)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def rigid(cls, angle_deg: float = 0.0, translation_xy=(0.0, 0.0)) -> AffineTransform:
        """``x_f = R(angle_deg) x_m + translation_xy``."""
        return cls.similarity(angle_deg, 1.0, translation_xy)

    @classmethod
    def similarity(cls, angle_deg: float = 0.0, scale: float = 1.0,
                   translation_xy=(0.0, 0.0)) -> AffineTransform:
        """``x_f = scale R(angle_deg) x_m + translation_xy`` (rigid when ``scale`` is 1)."""
        values = [float(angle_deg), float(scale), *(float(v) for v in translation_xy)]
        if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[1] <= 0:
            raise InputError("transform angle, scale and translation must be finite numbers, "
                             f"the scale positive; got {angle_deg!r}, {scale!r}, {translation_xy!r}")
        m = np.eye(3)
        m[:2, :2] = values[1] * rotation_matrix(values[0])
        m[:2, 2] = values[2:]
        return cls(m, "rigid" if values[1] == 1.0 else "similarity")

    @classmethod
    def about_center(cls, angle_deg: float, center_xy, translation_xy=(0.0, 0.0),
                     scale: float = 1.0) -> AffineTransform:
        """Rotate by ``angle_deg`` and scale by ``scale`` about ``center_xy`` (x, y), then translate.

        ``p -> scale R (p - c) + c + translation_xy``.
        """
        c = np.asarray(center_xy, dtype=float).reshape(2)
        about_origin = cls.similarity(angle_deg, scale)
        t = c - about_origin.matrix_xy[:2, :2] @ c + np.asarray(translation_xy, dtype=float).reshape(2)
        return cls.similarity(angle_deg, scale, t)

    @classmethod
    def from_matrix_xy(cls, m, model: str | None = None) -> AffineTransform:
        """Build from a 3x3 or 2x3 matrix on ``(x, y)``; ``model`` defaults to the most
        constrained one the matrix satisfies."""
        if model is not None:
            return cls(m, model)
        for candidate in MODELS:
            try:
                return cls(m, candidate)
            except InputError:
                if candidate == "affine":
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def from_matrix_rc(cls, m, model: str | None = None) -> AffineTransform:
        """Build from a 3x3 or 2x3 matrix acting on ``(row, col)`` (a napari layer's ``affine``)."""
        return cls.from_matrix_xy(_SWAP @ _homogeneous_xy(m) @ _SWAP, model)

    # ------------------------------------------------------------------ views

    @property
    def matrix_rc(self) -> np.ndarray:
        """3x3 homogeneous matrix mapping moving ``(row, col, 1)`` to fixed ``(row, col, 1)``.

        Set it as ``layer.affine`` of the moving napari layer to display it over the fixed layer
        (both layers with identity scale and translate).
        """
        return _SWAP @ self.matrix_xy @ _SWAP

    @property
    def translation_xy(self) -> tuple[float, float]:
        """Where the moving pixel (0, 0) lands: the matrix's last column."""
        return float(self.matrix_xy[0, 2]), float(self.matrix_xy[1, 2])

    @property
    def angle_deg(self) -> float:
        """Rotation angle in degrees (that of :meth:`decompose`; any centre)."""
        return _wrap_angle(math.degrees(math.atan2(self.matrix_xy[1, 0], self.matrix_xy[0, 0])))

    def decompose(self, center_xy=(0.0, 0.0)) -> Decomposition:
        """Rotation, scale (x, y), shear, and the shift of ``center_xy`` (see :class:`Decomposition`).

        ``A = R(angle) @ diag(scale_xy) @ [[1, shear], [0, 1]]`` with ``A`` the linear part.
        """
        a = self.matrix_xy[:2, :2]
        angle = math.atan2(a[1, 0], a[0, 0])
        upper = rotation_matrix(-math.degrees(angle)) @ a  # [[sx, sx * shear], [0, sy]]
        sx, sy = float(upper[0, 0]), float(upper[1, 1])
        c = np.asarray(center_xy, dtype=float).reshape(2)
        shift = self.apply_xy(c)[0] - c
        return Decomposition(_wrap_angle(math.degrees(angle)), (sx, sy), float(upper[0, 1] / sx),
                             (float(shift[0]), float(shift[1])), (float(c[0]), float(c[1])))

    # ------------------------------------------------------------------ algebra

    def inverse(self) -> AffineTransform:
        """Return the transform mapping fixed coordinates back to moving coordinates."""
        return AffineTransform(np.linalg.inv(self.matrix_xy), self.model)

    def compose(self, other: AffineTransform) -> AffineTransform:
        """Return ``self ∘ other``: apply ``other`` first, then ``self`` (the looser model)."""
        model = MODELS[max(MODELS.index(self.model), MODELS.index(other.model))]
        return AffineTransform(self.matrix_xy @ other.matrix_xy, model)

    def apply_xy(self, points_xy) -> np.ndarray:
        """Map moving ``(x, y)`` points (N, 2) to fixed ``(x, y)`` points (N, 2)."""
        pts = as_points(points_xy)
        return pts @ self.matrix_xy[:2, :2].T + self.matrix_xy[:2, 2]

    def apply_rc(self, points_rc) -> np.ndarray:
        """Map moving ``(row, col)`` points (N, 2) to fixed ``(row, col)`` points (N, 2)."""
        return self.apply_xy(as_points(points_rc)[:, ::-1])[:, ::-1]

    # ------------------------------------------------------------------ serialisation

    def to_dict(self, center_xy=None) -> dict:
        """Plain-Python ``transform`` (the model), ``matrix_xy``, ``matrix_rc``, ``angle_deg``,
        ``translation_xy`` and, when ``center_xy`` is given, the :meth:`decompose` about it."""
        out = {"transform": self.model, "matrix_xy": self.matrix_xy.tolist(),
               "matrix_rc": self.matrix_rc.tolist(), "angle_deg": self.angle_deg,
               "translation_xy": list(self.translation_xy)}
        if center_xy is not None:
            out["decomposition"] = self.decompose(center_xy).to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> AffineTransform:
        """Build from a dict with ``matrix_xy`` (preferred) or ``angle_deg``+``translation_xy``."""
        if not isinstance(d, dict):
            raise InputError(f"expected a dict describing a transform, got {type(d).__name__}")
        model = d.get("transform")
        if model is not None:
            _check_model(model)
        try:  # values as text, lists, 10⁴⁰⁰ or nested thousands deep: one line, not a traceback
            if "matrix_xy" in d:
                return cls.from_matrix_xy(d["matrix_xy"], model)
            if "angle_deg" in d and "translation_xy" in d:
                t = np.asarray(d["translation_xy"], dtype=float).reshape(-1)
                if t.shape != (2,):
                    raise InputError(f"translation_xy must have 2 values, got {t.size}")
                angle = d["angle_deg"]
                if isinstance(angle, bool) or not isinstance(angle, (int, float)):
                    raise InputError(f"angle_deg must be a number, got {str(angle)[:40]!r}")
                return cls.rigid(float(angle), (t[0], t[1]))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"a transform's values must be finite numbers ({type(exc).__name__}: "
                             f"{str(exc)[:80]})") from exc
        raise InputError("a transform dict needs 'matrix_xy' or both 'angle_deg' and 'translation_xy'")

    def to_json(self, path=None, center_xy=None) -> str:
        """Return the :meth:`to_dict` fields as JSON; also write them to ``path`` when given."""
        text = json.dumps(self.to_dict(center_xy), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path_or_str) -> AffineTransform:
        """Read from a JSON string or from a path to a JSON file written by :meth:`to_json`."""
        text = str(path_or_str)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise InputError(f"transform file not found: {path}")
            text = path.read_text(encoding="utf-8")
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"transform JSON is malformed: {str(exc)[:80]}") from exc

    def to_csv(self, path=None) -> str:
        """Return one header row and one value row (columns :data:`CSV_COLUMNS`).

        ``angle_deg, scale_x, scale_y, shear`` are :meth:`decompose`'s; ``tx, ty`` the translation;
        ``m00..m12`` the first two rows of :attr:`matrix_xy`. Also written to ``path`` when given.
        """
        d = self.decompose()
        m = self.matrix_xy
        values = [d.angle_deg, *d.scale_xy, d.shear, *self.translation_xy, *m[0], *m[1]]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerow([self.model, *(repr(float(v)) for v in values)])
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_csv(cls, path_or_str) -> AffineTransform:
        """Read CSV text or a CSV file written by :meth:`to_csv` (the matrix columns are read)."""
        text = str(path_or_str)
        if "\n" not in text.strip():
            path = Path(text)
            if not path.is_file():
                raise InputError(f"transform file not found: {path}")
            text = path.read_text(encoding="utf-8")
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:  # e.g. a field over 128 KiB
            raise InputError(f"transform CSV is malformed: {exc}") from exc
        if len(rows) != 1:
            raise InputError(
                f"transform CSV must have one header row and one value row, got {len(rows)} rows")
        row = rows[0]
        try:
            m = [[float(row[f"m{i}{j}"]) for j in range(3)] for i in range(2)]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"transform CSV needs columns m00, m01, m02, m10, m11, m12: {exc}") from exc
        return cls.from_matrix_xy(m, row.get("transform") or None)


def corner_error(true: AffineTransform, found: AffineTransform, shape_rc) -> float:
    """Mean distance in pixels between where two transforms send the 4 corners of a moving image.

    The corners are the pixel centres ``(0, 0), (w-1, 0), (0, h-1), (w-1, h-1)`` in (x, y) of a
    moving image of shape ``(h, w)``. Registration counts as successful when this is at most 2 %
    of the image width.

    Parameters
    ----------
    true, found : AffineTransform
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
