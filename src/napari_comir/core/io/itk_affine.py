"""An affine transform as an ITK transform file (SimpleITK, elastix, 3D Slicer read it): FIXED
-> MOVING physical points, micrometres (see :mod:`.transform_formats`)."""

from __future__ import annotations

import math
import re

import numpy as np

from ..coordinate_frames import coordinate_transform, from_coordinate_transform
from ..errors import InputError
from ..transforms import AffineTransform
from ._transform_text import (
    check_pixel_sizes_um,
    comment_values,
    from_matrix_xy,
    model_or_none,
    pixel_sizes_um,
    read_text,
)

ITK_CONVENTION = (
    "Written by napari-comir. Convention (ITK's resampling direction): this transform maps a\n"
    "FIXED image's physical point (x, y) to the MOVING image's physical point (x, y), in\n"
    "micrometres. Physical point = 0-based pixel-centre index (column, row) x pixel size;\n"
    "origin (0, 0), identity direction. Resample with both images' spacing set to these\n"
    "pixel sizes (SimpleITK: image.SetSpacing((size, size)); elastix: the images' spacing)."
)


def itk_matrix_xy_um(transform: AffineTransform, fixed_pixel_size_um: float = 1.0,
                     moving_pixel_size_um: float = 1.0) -> np.ndarray:
    """3x3 matrix mapping FIXED physical ``(x, y)`` µm to MOVING physical ``(x, y)`` µm.

    ITK's resampling direction: ``S_moving @ inverse(matrix_xy) @ inverse(S_fixed)`` with
    ``S = diag(pixel size, pixel size, 1)``.

    Parameters
    ----------
    transform : AffineTransform
        Moving -> fixed transform in pixels.
    fixed_pixel_size_um, moving_pixel_size_um : float
        Isotropic pixel sizes (µm); 1.0 gives pixel units.

    Returns
    -------
    np.ndarray
        Homogeneous 3x3 matrix.
    """
    fixed, moving = check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um)
    return coordinate_transform(transform, inverse=True, moving_pixel_size=moving,
                                fixed_pixel_size=fixed).matrix_xy


def to_itk_text(transform: AffineTransform, *, fixed_pixel_size_um: float = 1.0,
                moving_pixel_size_um: float = 1.0) -> str:
    """An ITK transform file (``AffineTransform_double_2_2``), as ``SimpleITK.ReadTransform``
    and elastix's ``-tp``-free tools (``itk::TransformFileReader``) load it.

    The transform maps FIXED physical points to MOVING physical points (see
    :func:`itk_matrix_xy_um`); centre (FixedParameters) 0. The file states the convention and
    the pixel sizes in comment lines, which ITK skips.

    Parameters
    ----------
    transform : AffineTransform
        Moving -> fixed transform in pixels.
    fixed_pixel_size_um, moving_pixel_size_um : float
        Isotropic pixel sizes (µm); 1.0 gives pixel units.

    Returns
    -------
    str
        The file's text.
    """
    m = itk_matrix_xy_um(transform, fixed_pixel_size_um, moving_pixel_size_um)
    parameters = [m[0, 0], m[0, 1], m[1, 0], m[1, 1], m[0, 2], m[1, 2]]
    lines = ["#Insight Transform File V1.0"]
    lines += [f"# {line}" for line in ITK_CONVENTION.splitlines()]
    lines += [f"# fixed_pixel_size_um: {float(fixed_pixel_size_um)!r}",
              f"# moving_pixel_size_um: {float(moving_pixel_size_um)!r}",
              f"# transform_model: {transform.model}",
              "#Transform 0",
              "Transform: AffineTransform_double_2_2",
              "Parameters: " + " ".join(repr(float(v)) for v in parameters),
              "FixedParameters: 0.0 0.0"]
    return "\n".join(lines) + "\n"


def _itk_linear_part(kind: str, parameters: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The 2x2 matrix and the translation of one 2-D ITK transform type."""
    expected = {"AffineTransform": 6, "MatrixOffsetTransformBase": 6, "Euler2DTransform": 3,
                "Similarity2DTransform": 4, "TranslationTransform": 2}[kind]
    if len(parameters) != expected:
        raise InputError(f"an ITK {kind} in 2-D has {expected} parameters, got {len(parameters)}")
    p = parameters
    if kind in ("AffineTransform", "MatrixOffsetTransformBase"):
        return np.array([[p[0], p[1]], [p[2], p[3]]]), np.array(p[4:6])
    if kind == "TranslationTransform":
        return np.eye(2), np.array(p)
    scale, angle, shift = (1.0, p[0], p[1:3]) if kind == "Euler2DTransform" else (p[0], p[1], p[2:4])
    c, s = math.cos(angle), math.sin(angle)
    return scale * np.array([[c, -s], [s, c]]), np.array(shift)


def from_itk_text(text: str, *, fixed_pixel_size_um: float | None = None,
                  moving_pixel_size_um: float | None = None) -> AffineTransform:
    """Read an ITK transform file's text back into a moving -> fixed pixel transform.

    Reads one 2-D ``AffineTransform``, ``MatrixOffsetTransformBase``, ``Euler2DTransform``,
    ``Similarity2DTransform`` or ``TranslationTransform`` (double or float), with any centre.

    Parameters
    ----------
    text : str
        The file's text.
    fixed_pixel_size_um, moving_pixel_size_um : float, optional
        Pixel sizes (µm) the file's physical units stand for; by default those the file records
        (napari-comir writes them as comments), else 1.0.

    Returns
    -------
    AffineTransform
        Moving -> fixed, in pixels.
    """
    fields: dict[str, list[str]] = {}
    kinds = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        if key == "Transform":
            kinds.append(value.strip())
        fields.setdefault(key.strip(), []).append(value)
    if len(kinds) != 1:
        raise InputError(f"an ITK transform file for napari-comir holds one 2-D transform, found "
                         f"{len(kinds)}{' (a composite?)' if len(kinds) > 1 else ''}")
    match = re.fullmatch(r"(AffineTransform|MatrixOffsetTransformBase|Euler2DTransform|"
                         r"Similarity2DTransform|TranslationTransform)_(double|float)(_2_2|_2)?",
                         kinds[0])
    if match is None or (match.group(3) is None) != match.group(1).endswith("2DTransform"):
        raise InputError(f"unsupported ITK transform {kinds[0]!r}: expected a 2-D affine, "
                         "rigid (Euler2D), similarity or translation transform")
    try:
        parameters = [float(v) for v in fields.get("Parameters", [""])[0].split()]
        centre = [float(v) for v in fields.get("FixedParameters", [""])[0].split()]
    except ValueError as exc:
        raise InputError(f"ITK transform parameters must be numbers: {exc}") from exc
    linear, translation = _itk_linear_part(match.group(1), parameters)
    if match.group(1) == "TranslationTransform":
        centre = [0.0, 0.0]
    if len(centre) != 2:
        raise InputError(f"an ITK 2-D transform's FixedParameters are its centre (x, y), got {centre}")
    if not np.all(np.isfinite(linear)) or not np.all(np.isfinite(translation)):
        raise InputError("ITK transform parameters contain NaN or infinite values")
    c = np.asarray(centre)
    fixed_to_moving_um = np.eye(3)  # T(p) = A (p - c) + t + c
    fixed_to_moving_um[:2, :2] = linear
    fixed_to_moving_um[:2, 2] = translation + c - linear @ c
    recorded = comment_values(text)
    fixed, moving = pixel_sizes_um(recorded, fixed_pixel_size_um, moving_pixel_size_um)
    if abs(np.linalg.det(linear)) < 1e-12:
        raise InputError("the ITK transform is singular: it cannot be inverted")
    matrix_xy = from_coordinate_transform(fixed_to_moving_um, inverse=True, moving_pixel_size=moving,
                                          fixed_pixel_size=fixed).matrix_xy
    return from_matrix_xy(matrix_xy, model_or_none(recorded.get("transform_model")))


def read_itk_transform(path, *, fixed_pixel_size_um: float | None = None,
                       moving_pixel_size_um: float | None = None) -> AffineTransform:
    """Read an ITK transform file (``.tfm``/``.txt``): see :func:`from_itk_text`."""
    return from_itk_text(read_text(path, "ITK transform"), fixed_pixel_size_um=fixed_pixel_size_um,
                         moving_pixel_size_um=moving_pixel_size_um)
