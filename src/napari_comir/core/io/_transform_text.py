"""What the transform file formats share: pixel sizes checked, numbers written as other tools
read them, a file's text and napari-comir's comment lines read back, the transform model a file
records (see :mod:`.transform_formats`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..transforms import MODELS, AffineTransform


def check_pixel_size_um(value, name: str) -> float:
    """A pixel size as a positive finite float, else :class:`InputError`."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of micrometres, got {value!r}") from None
    if not math.isfinite(size) or size <= 0:
        raise InputError(f"{name} must be a positive number of micrometres, got {value!r}")
    return size


def unit_scaling(um_per_unit: float) -> np.ndarray:
    """Homogeneous 3x3 matrix taking coordinates in a length unit to micrometres."""
    return np.diag([um_per_unit, um_per_unit, 1.0])


def number_text(value: float) -> str:
    """A float without exponent notation and always with a decimal point (Java's NumberFormat,
    which QuPath uses, reads neither ``1e-05`` nor, next to commas, ``1``)."""
    return np.format_float_positional(float(value), unique=True, trim="0")


def read_text(path_or_text, what: str) -> str:
    """The text of a file, or ``path_or_text`` itself when it already holds several lines."""
    text = str(path_or_text)
    if "\n" in text.strip():
        return text
    path = Path(text)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} file {path}: {exc}") from exc


def comment_values(text: str) -> dict[str, str]:
    """``key: value`` pairs of napari-comir's comment lines (``# key: value``)."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(?:#|//)\s*([a-z_]+):\s*(\S+)\s*$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def model_or_none(value) -> str | None:
    """The transform model a file records, when it is one napari-comir knows."""
    return value if value in MODELS else None


def from_matrix_xy(matrix_xy: np.ndarray, model: str | None) -> AffineTransform:
    """Build the transform; a recorded model the matrix does not satisfy falls back to the most
    constrained one it does (rounding in another tool must not make a file unreadable)."""
    if model is not None:
        try:
            return AffineTransform(matrix_xy, model)
        except InputError:
            pass
    return AffineTransform.from_matrix_xy(matrix_xy)


def check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um) -> tuple[float, float]:
    """Both pixel sizes checked (:func:`check_pixel_size_um`)."""
    return (check_pixel_size_um(fixed_pixel_size_um, "fixed_pixel_size_um"),
            check_pixel_size_um(moving_pixel_size_um, "moving_pixel_size_um"))


def pixel_sizes_um(recorded: dict, fixed_pixel_size_um, moving_pixel_size_um) -> tuple[float, float]:
    """Pixel sizes given by the caller, else those the file records, else 1.0 (pixel units)."""
    return check_pixel_sizes_um(*(given if given is not None else recorded.get(name, 1.0)
                                  for name, given in (("fixed_pixel_size_um", fixed_pixel_size_um),
                                                      ("moving_pixel_size_um", moving_pixel_size_um))))
