"""A transform written in the formats other tools read, and read back.

napari-comir's :class:`~napari_comir.core.transforms.AffineTransform` maps MOVING pixel
``(x, y)`` to FIXED pixel ``(x, y)``, 0-based pixel centres. Each tool wants something else:

========  ==================  =====================  ==========================  ==============
format    direction           units                  origin                      axis order
========  ==================  =====================  ==========================  ==============
itk       fixed -> moving     µm (index x spacing)   pixel centre of [0, 0]      (x, y)
ngff      moving -> fixed     µm (index x spacing)   pixel centre of [0, 0]      (y, x)
qupath    fixed -> moving     full-resolution px     top-left corner of [0, 0]   (x, y)
csv       moving -> fixed     px                     pixel centre of [0, 0]      (x, y)
json      moving -> fixed     px                     pixel centre of [0, 0]      (x, y) and (r, c)
========  ==================  =====================  ==========================  ==============

Physical point = 0-based pixel-centre index x pixel size (µm), origin 0, identity direction: what
SimpleITK assumes for an image with ``SetSpacing`` only, and what an OME-NGFF ``scale`` gives.
Pixel sizes are isotropic per image; 1.0 (the default) makes "µm" pixel units.

Every file states its convention inside it (comment lines, or a ``convention`` key), except the
CSV, which cannot hold comments: a ``<name>.README.txt`` beside it does. Pure numpy: no SimpleITK
is needed to write or read these files.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..field_transform import DisplacementFieldTransform
from ..transforms import MODELS, AffineTransform, coordinate_transform, from_coordinate_transform
from .field_formats import (
    from_itk_field_text,
    is_deformable_json,
    is_itk_field_text,
    read_field_json,
    read_ngff_field,
    write_field_transform,
)
from .files import write_text_atomic

#: Format names, and the file-name endings that choose them (longest first: ``.qupath.txt`` is
#: QuPath, any other ``.txt`` ITK).
FORMATS = ("itk", "ngff", "qupath", "csv", "json", "npz")
SUFFIX_FORMATS = (
    (".qupath.txt", "qupath"),
    (".ngff.json", "ngff"),
    (".ngff.zarr", "ngff"),
    (".npz", "npz"),
    (".tfm", "itk"),
    (".txt", "itk"),
    (".csv", "csv"),
    (".json", "json"),
)
#: Micrometres per unit of the NGFF space units a reader accepts.
NGFF_UNITS_UM = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4,
                 "meter": 1e6}

ITK_CONVENTION = (
    "Written by napari-comir. Convention (ITK's resampling direction): this transform maps a\n"
    "FIXED image's physical point (x, y) to the MOVING image's physical point (x, y), in\n"
    "micrometres. Physical point = 0-based pixel-centre index (column, row) x pixel size;\n"
    "origin (0, 0), identity direction. Resample with both images' spacing set to these\n"
    "pixel sizes (SimpleITK: image.SetSpacing((size, size)); elastix: the images' spacing)."
)
NGFF_CONVENTION = (
    "Written by napari-comir. The affine maps the MOVING image's physical coordinates to the "
    "FIXED image's, in micrometres, axes ordered (y, x) as OME-NGFF orders them; a physical "
    "coordinate is the 0-based pixel-centre index times the pixel size (origin 0). 'affine' is "
    "the 2x3 matrix [[a_yy, a_yx, t_y], [a_xy, a_xx, t_x]] (RFC-5 / OME-NGFF 0.6 style)."
)
NGFF_NOTE_04_05 = (
    "OME-NGFF 0.4 and 0.5 know only 'scale' and 'translation' in coordinateTransformations: they "
    "cannot hold this affine. Tools limited to them need the matrix applied by hand, or "
    "matrix_xy from napari-comir's JSON."
)
QUPATH_CONVENTION = (
    "Written by napari-comir for QuPath's Interactive image alignment. Convention: this matrix\n"
    "maps a point of the BASE image (napari-comir's fixed image) to the OVERLAY image (the\n"
    "moving image), in full-resolution pixels, origin at the top-left CORNER of the top-left\n"
    "pixel (QuPath's image coordinates: a pixel centre is at +0.5). QuPath paints the overlay\n"
    "through the inverse of this matrix. Paste the two number lines below (m00, m01, m02 /\n"
    "m10, m11, m12; '.' is the decimal point) into the transform box and press Update."
)
CSV_CONVENTION = (
    "Written by napari-comir. {name}: one header row and one value row.\n"
    "Convention: m00..m12 are the first two rows of matrix_xy, which maps a MOVING image's pixel\n"
    "(x, y) to the FIXED image's pixel (x, y): [x_f, y_f] = [[m00, m01], [m10, m11]] [x_m, y_m]\n"
    "+ [m02, m12]. Units: pixels of each image; x = column, y = row; origin: the centre of\n"
    "pixel [0, 0] is (0, 0). angle_deg, scale_x, scale_y, shear are its decomposition\n"
    "A = R(angle) diag(scale_x, scale_y) [[1, shear], [0, 1]] (positive angle = clockwise on\n"
    "screen, y pointing down); tx, ty = m02, m12. 'transform' is the model it satisfies.\n"
)
JSON_CONVENTION = (
    "Written by napari-comir. matrix_xy maps a MOVING image's pixel (x, y) to the FIXED image's "
    "pixel (x, y) (x = column, y = row); matrix_rc the same in (row, col), ready for a napari "
    "layer's affine. Units: pixels of each image; origin: the centre of pixel [0, 0] is (0, 0)."
)

# Swaps (x, y) <-> (y, x) in homogeneous coordinates; it is its own inverse.
_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
# Moves a point from the pixel-centre origin to the pixel-corner origin (both in pixels).


# ---------------------------------------------------------------------------- helpers


def _check_pixel_size_um(value, name: str) -> float:
    """A pixel size as a positive finite float, else :class:`InputError`."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of micrometres, got {value!r}") from None
    if not math.isfinite(size) or size <= 0:
        raise InputError(f"{name} must be a positive number of micrometres, got {value!r}")
    return size


def _unit_scaling(um_per_unit: float) -> np.ndarray:
    """Homogeneous 3x3 matrix taking coordinates in a length unit to micrometres."""
    return np.diag([um_per_unit, um_per_unit, 1.0])


def _number_text(value: float) -> str:
    """A float without exponent notation and always with a decimal point (Java's NumberFormat,
    which QuPath uses, reads neither ``1e-05`` nor, next to commas, ``1``)."""
    return np.format_float_positional(float(value), unique=True, trim="0")


def _read_text(path_or_text, what: str) -> str:
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


def _comment_values(text: str) -> dict[str, str]:
    """``key: value`` pairs of napari-comir's comment lines (``# key: value``)."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(?:#|//)\s*([a-z_]+):\s*(\S+)\s*$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def _model_or_none(value) -> str | None:
    """The transform model a file records, when it is one napari-comir knows."""
    return value if value in MODELS else None


def _from_matrix_xy(matrix_xy: np.ndarray, model: str | None) -> AffineTransform:
    """Build the transform; a recorded model the matrix does not satisfy falls back to the most
    constrained one it does (rounding in another tool must not make a file unreadable)."""
    if model is not None:
        try:
            return AffineTransform(matrix_xy, model)
        except InputError:
            pass
    return AffineTransform.from_matrix_xy(matrix_xy)


def _pixel_sizes_um(recorded: dict, fixed_pixel_size_um, moving_pixel_size_um) -> tuple[float, float]:
    """Pixel sizes given by the caller, else those the file records, else 1.0 (pixel units)."""
    sizes = []
    for name, given in (("fixed_pixel_size_um", fixed_pixel_size_um),
                        ("moving_pixel_size_um", moving_pixel_size_um)):
        value = given if given is not None else recorded.get(name, 1.0)
        sizes.append(_check_pixel_size_um(value, name))
    return sizes[0], sizes[1]


# ---------------------------------------------------------------------------- ITK / elastix


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
    fixed = _check_pixel_size_um(fixed_pixel_size_um, "fixed_pixel_size_um")
    moving = _check_pixel_size_um(moving_pixel_size_um, "moving_pixel_size_um")
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
    recorded = _comment_values(text)
    fixed, moving = _pixel_sizes_um(recorded, fixed_pixel_size_um, moving_pixel_size_um)
    if abs(np.linalg.det(linear)) < 1e-12:
        raise InputError("the ITK transform is singular: it cannot be inverted")
    matrix_xy = from_coordinate_transform(fixed_to_moving_um, inverse=True, moving_pixel_size=moving,
                                          fixed_pixel_size=fixed).matrix_xy
    return _from_matrix_xy(matrix_xy, _model_or_none(recorded.get("transform_model")))


def read_itk_transform(path, *, fixed_pixel_size_um: float | None = None,
                       moving_pixel_size_um: float | None = None) -> AffineTransform:
    """Read an ITK transform file (``.tfm``/``.txt``): see :func:`from_itk_text`."""
    return from_itk_text(_read_text(path, "ITK transform"), fixed_pixel_size_um=fixed_pixel_size_um,
                         moving_pixel_size_um=moving_pixel_size_um)


# ---------------------------------------------------------------------------- OME-NGFF


def ngff_matrix_yx_um(transform: AffineTransform, fixed_pixel_size_um: float = 1.0,
                      moving_pixel_size_um: float = 1.0) -> np.ndarray:
    """3x3 matrix mapping MOVING physical ``(y, x)`` µm to FIXED physical ``(y, x)`` µm.

    ``S_fixed @ matrix_rc @ inverse(S_moving)`` with ``S = diag(pixel size, pixel size, 1)``.
    """
    fixed = _check_pixel_size_um(fixed_pixel_size_um, "fixed_pixel_size_um")
    moving = _check_pixel_size_um(moving_pixel_size_um, "moving_pixel_size_um")
    return coordinate_transform(transform, moving_pixel_size=moving,
                                fixed_pixel_size=fixed).matrix_rc


def _ngff_coordinate_system(name: str) -> dict:
    return {"name": name, "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                                   {"name": "x", "type": "space", "unit": "micrometer"}]}


def to_ngff_dict(transform: AffineTransform, *, fixed_pixel_size_um: float = 1.0,
                 moving_pixel_size_um: float = 1.0) -> dict:
    """An OME-NGFF (RFC-5 / 0.6) ``coordinateTransformations`` document for the transform.

    ``coordinateSystems`` "moving" and "fixed" (axes y, x in micrometres) and one ``affine`` from
    "moving" to "fixed" (see :func:`ngff_matrix_yx_um`), with napari-comir's convention, the pixel
    sizes and a note for tools that know only OME-NGFF 0.4/0.5.

    Parameters
    ----------
    transform : AffineTransform
        Moving -> fixed transform in pixels.
    fixed_pixel_size_um, moving_pixel_size_um : float
        Isotropic pixel sizes (µm); 1.0 gives pixel units.

    Returns
    -------
    dict
        Plain JSON-ready values.
    """
    m = ngff_matrix_yx_um(transform, fixed_pixel_size_um, moving_pixel_size_um)
    return {
        "convention": NGFF_CONVENTION,
        "coordinateSystems": [_ngff_coordinate_system("moving"), _ngff_coordinate_system("fixed")],
        "coordinateTransformations": [
            {"type": "affine", "name": "napari-comir registration", "input": "moving",
             "output": "fixed", "affine": m[:2].tolist()},
        ],
        "napari_comir": {
            "fixed_pixel_size_um": float(fixed_pixel_size_um),
            "moving_pixel_size_um": float(moving_pixel_size_um),
            "transform_model": transform.model,
            "matrix_xy": transform.matrix_xy.tolist(),
            "note_ngff_0.4_0.5": NGFF_NOTE_04_05,
        },
    }


def _ngff_name(value) -> str | None:
    """A coordinate system's name from an ``input``/``output`` (a string, or ``{"name": ...}``)."""
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) else None


def _ngff_units_um(document: dict) -> dict[str, float]:
    """Micrometres per unit of each coordinate system, after checking its axes are (y, x)."""
    # ome_zarr_models (1.7) has no model of RFC-5 coordinate systems or of an "affine"
    # transformation: its 0.4, 0.5 and 0.6-dev models know only scale, translation and identity.
    # The structure is therefore checked here, by hand.
    systems = document.get("coordinateSystems", [])
    if not isinstance(systems, list):
        raise InputError("NGFF 'coordinateSystems' must be a list")
    units = {}
    for system in systems:
        if not isinstance(system, dict) or not isinstance(system.get("name"), str):
            raise InputError("each NGFF coordinate system needs a 'name'")
        axes = system.get("axes")
        if not isinstance(axes, list) or [a.get("name") if isinstance(a, dict) else None
                                          for a in axes] != ["y", "x"]:
            raise InputError(f"NGFF coordinate system {system['name']!r} must have the axes "
                             "(y, x) for a 2-D transform")
        unit_names = {a.get("unit", "micrometer") for a in axes}
        if len(unit_names) != 1 or not unit_names <= set(NGFF_UNITS_UM):
            raise InputError(f"NGFF coordinate system {system['name']!r} has units {sorted(unit_names)}; "
                             f"expected one of {', '.join(NGFF_UNITS_UM)} for both axes")
        units[system["name"]] = NGFF_UNITS_UM[unit_names.pop()]
    return units


def from_ngff_dict(document: dict, *, fixed_pixel_size_um: float | None = None,
                   moving_pixel_size_um: float | None = None) -> AffineTransform:
    """Read an NGFF ``coordinateTransformations`` document back into a moving -> fixed pixel
    transform.

    Takes the one ``affine`` between the coordinate systems "moving" and "fixed" (either
    direction), or the only ``affine`` when there is one; 2x3 or 3x3; axes (y, x); units
    nanometre to metre.

    Parameters
    ----------
    document : dict
        The parsed JSON.
    fixed_pixel_size_um, moving_pixel_size_um : float, optional
        Pixel sizes (µm); by default those the document records (``napari_comir``), else 1.0.

    Returns
    -------
    AffineTransform
        Moving -> fixed, in pixels.
    """
    if not isinstance(document, dict):
        raise InputError("an NGFF transform file must hold a JSON object")
    transformations = document.get("coordinateTransformations")
    if not isinstance(transformations, list) or not all(isinstance(t, dict) for t in transformations):
        raise InputError("an NGFF transform file needs a 'coordinateTransformations' list of objects")
    affines = [t for t in transformations if t.get("type") == "affine"]
    pair = [t for t in affines
            if {_ngff_name(t.get("input")), _ngff_name(t.get("output"))} == {"moving", "fixed"}]
    chosen = pair or (affines if len(affines) == 1 else [])
    if len(chosen) != 1:
        raise InputError(f"expected one 'affine' from 'moving' to 'fixed' in coordinateTransformations, "
                         f"found {len(pair) or len(affines)}")
    entry = chosen[0]
    try:
        matrix = np.array(entry.get("affine"), dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"NGFF 'affine' must be a matrix of numbers: {exc}") from exc
    if matrix.shape == (2, 3):
        matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    if matrix.shape != (3, 3) or not np.allclose(matrix[2], [0.0, 0.0, 1.0]):
        raise InputError(f"NGFF 'affine' for 2-D must be 2x3 (or 3x3 ending in [0, 0, 1]), "
                         f"got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise InputError("NGFF 'affine' must be finite and invertible")
    source, target = _ngff_name(entry.get("input")), _ngff_name(entry.get("output"))
    units = _ngff_units_um(document)
    to_um_source, to_um_target = units.get(source, 1.0), units.get(target, 1.0)
    matrix = _unit_scaling(to_um_target) @ matrix @ np.linalg.inv(_unit_scaling(to_um_source))
    if (source, target) == ("fixed", "moving"):
        matrix = np.linalg.inv(matrix)
    recorded = document.get("napari_comir", {})
    recorded = recorded if isinstance(recorded, dict) else {}
    fixed, moving = _pixel_sizes_um(recorded, fixed_pixel_size_um, moving_pixel_size_um)
    matrix_xy = from_coordinate_transform(_SWAP @ matrix @ _SWAP, moving_pixel_size=moving,
                                          fixed_pixel_size=fixed).matrix_xy
    return _from_matrix_xy(matrix_xy, _model_or_none(recorded.get("transform_model")))


def read_ngff_transform(path, *, fixed_pixel_size_um: float | None = None,
                        moving_pixel_size_um: float | None = None) -> AffineTransform:
    """Read an NGFF transform JSON (``.ngff.json``): see :func:`from_ngff_dict`."""
    text = _read_text(path, "NGFF transform")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"NGFF transform JSON is malformed: {exc}") from exc
    return from_ngff_dict(document, fixed_pixel_size_um=fixed_pixel_size_um,
                          moving_pixel_size_um=moving_pixel_size_um)


# ---------------------------------------------------------------------------- QuPath


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
    lines += [",\t".join(_number_text(v) for v in m[row]) for row in range(2)]
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
    return _from_matrix_xy(matrix_xy, _model_or_none(_comment_values(text).get("transform_model")))


def read_qupath_transform(path) -> AffineTransform:
    """Read a QuPath matrix file (``.qupath.txt``): see :func:`from_qupath_text`."""
    return from_qupath_text(_read_text(path, "QuPath transform"))


# ---------------------------------------------------------------------------- CSV and JSON


def csv_readme_path(path) -> Path:
    """The ``<name>.README.txt`` beside a CSV, which states the CSV's convention."""
    path = Path(path)
    return path.with_name(path.name + ".README.txt")


def read_csv_transform(path) -> AffineTransform:
    """Read a CSV written by :meth:`AffineTransform.to_csv` (moving -> fixed pixels)."""
    return AffineTransform.from_csv(path)


def read_json_transform(path) -> AffineTransform:
    """Read napari-comir's JSON (``matrix_xy``, moving -> fixed pixels)."""
    return AffineTransform.from_json(path)


# ---------------------------------------------------------------------------- by format


def format_from_path(path) -> str:
    """The format a file name asks for (see :data:`SUFFIX_FORMATS`), else :class:`InputError`."""
    name = Path(path).name.lower()
    for suffix, format_name in SUFFIX_FORMATS:
        if name.endswith(suffix):
            return format_name
    endings = ", ".join(suffix for suffix, _ in SUFFIX_FORMATS)
    raise InputError(f"cannot tell the transform format from {Path(path).name!r}: end the name in "
                     f"one of {endings}, or give the format ({', '.join(FORMATS)})")


def _check_format(format_name, path) -> str:
    if format_name is None:
        return format_from_path(path)
    if format_name not in FORMATS:
        raise InputError(f"transform format must be one of {', '.join(FORMATS)}, got {format_name!r}")
    return format_name


def transform_output_paths(path, format_name: str | None = None) -> list[Path]:
    """Every file :func:`write_transform` writes for ``path`` (the CSV gets a README beside it)."""
    format_name = _check_format(format_name, path)
    return [Path(path), csv_readme_path(path)] if format_name == "csv" else [Path(path)]


def write_transform(transform, path: str | os.PathLike, *, format: str | None = None,
                    fixed_pixel_size_um: float = 1.0, moving_pixel_size_um: float = 1.0,
                    center_xy=None) -> Path:
    """Write a transform for another tool, atomically.

    Parameters
    ----------
    transform : AffineTransform or DisplacementFieldTransform
        Moving -> fixed transform in pixels. A deformable one is written as ITK, NGFF (a
        ``.ngff.zarr`` group), JSON or NPZ (see :mod:`.field_formats`).
    path : str or os.PathLike
        Output file.
    format : {"itk", "ngff", "qupath", "csv", "json", "npz"}, optional
        Default: from the file name (``.tfm``/``.txt`` ITK, ``.ngff.json`` NGFF (``.ngff.zarr``
        for a deformable transform), ``.qupath.txt`` QuPath, ``.csv`` CSV, ``.json``
        napari-comir's JSON, ``.npz`` a deformable transform's arrays).
    fixed_pixel_size_um, moving_pixel_size_um : float
        Isotropic pixel sizes (µm) of the physical formats (ITK, NGFF); 1.0 gives pixel units.
        The pixel formats (QuPath, CSV, JSON) do not need them.
    center_xy : tuple of float, optional
        For the JSON: also write the decomposition about this moving point.

    Returns
    -------
    Path
        The file written (a CSV also gets ``<name>.README.txt`` beside it).
    """
    format_name = _check_format(format, path)
    sizes = {"fixed_pixel_size_um": _check_pixel_size_um(fixed_pixel_size_um, "fixed_pixel_size_um"),
             "moving_pixel_size_um": _check_pixel_size_um(moving_pixel_size_um, "moving_pixel_size_um")}
    if isinstance(transform, DisplacementFieldTransform):
        return write_field_transform(transform, path, format_name, center_xy=center_xy, **sizes)
    if not isinstance(transform, AffineTransform):
        raise InputError(f"expected an AffineTransform, got {type(transform).__name__}")
    if format_name == "npz" or Path(path).name.lower().endswith(".ngff.zarr"):
        raise InputError(f"{Path(path).name}: .npz and .ngff.zarr hold a deformable transform; "
                         "write an affine one as .tfm, .ngff.json, .qupath.txt, .csv or .json")
    path = Path(path)
    if format_name == "itk":
        text = to_itk_text(transform, **sizes)
    elif format_name == "ngff":
        text = json.dumps(to_ngff_dict(transform, **sizes), indent=2) + "\n"
    elif format_name == "qupath":
        text = to_qupath_text(transform)
    elif format_name == "json":
        text = json.dumps({"convention": JSON_CONVENTION, **transform.to_dict(center_xy)}, indent=2) + "\n"
    else:
        text = transform.to_csv()
        write_text_atomic(csv_readme_path(path), CSV_CONVENTION.format(name=path.name))
    write_text_atomic(path, text)
    return path


def read_transform(path: str | os.PathLike, *, format: str | None = None,
                   fixed_pixel_size_um: float | None = None,
                   moving_pixel_size_um: float | None = None):
    """Read any format :func:`write_transform` writes back into a moving -> fixed pixel transform:
    an :class:`AffineTransform`, or a :class:`DisplacementFieldTransform` where the file holds a
    displacement field (ITK, a ``.ngff.zarr`` group, deformable JSON, NPZ).

    Pixel sizes matter only for ITK and NGFF; by default those the file records, else 1.0.
    """
    format_name = _check_format(format, path)
    sizes = {"fixed_pixel_size_um": fixed_pixel_size_um, "moving_pixel_size_um": moving_pixel_size_um}
    if format_name == "npz":
        return DisplacementFieldTransform.from_npz(path)
    if format_name == "ngff" and Path(path).is_dir():
        return read_ngff_field(path, **sizes)
    if format_name == "itk":
        text = _read_text(path, "ITK transform")
        if is_itk_field_text(text):
            return from_itk_field_text(text, **sizes)
        return from_itk_text(text, **sizes)
    if format_name == "ngff":
        return read_ngff_transform(path, **sizes)
    if format_name == "qupath":
        return read_qupath_transform(path)
    if format_name == "csv":
        return read_csv_transform(path)
    text = _read_text(path, "transform JSON")
    if is_deformable_json(text):
        return read_field_json(text)
    return read_json_transform(text)
