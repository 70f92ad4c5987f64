"""An affine transform as OME-NGFF (RFC-5) coordinateTransformations: MOVING -> FIXED physical
coordinates, micrometres, axes (y, x) (see :mod:`.transform_formats`)."""

from __future__ import annotations

import json

import numpy as np

from ..coordinate_frames import coordinate_transform, from_coordinate_transform
from ..errors import InputError
from ..transforms import AffineTransform
from ._transform_text import (
    check_pixel_sizes_um,
    from_matrix_xy,
    model_or_none,
    pixel_sizes_um,
    read_text,
    unit_scaling,
)

#: Micrometres per unit of the NGFF space units a reader accepts.
NGFF_UNITS_UM = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4,
                 "meter": 1e6}
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
# Swaps (x, y) <-> (y, x) in homogeneous coordinates; it is its own inverse.
_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def ngff_matrix_yx_um(transform: AffineTransform, fixed_pixel_size_um: float = 1.0,
                      moving_pixel_size_um: float = 1.0) -> np.ndarray:
    """3x3 matrix mapping MOVING physical ``(y, x)`` µm to FIXED physical ``(y, x)`` µm.

    ``S_fixed @ matrix_rc @ inverse(S_moving)`` with ``S = diag(pixel size, pixel size, 1)``.
    """
    fixed, moving = check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um)
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
    matrix = unit_scaling(to_um_target) @ matrix @ np.linalg.inv(unit_scaling(to_um_source))
    if (source, target) == ("fixed", "moving"):
        matrix = np.linalg.inv(matrix)
    recorded = document.get("napari_comir", {})
    recorded = recorded if isinstance(recorded, dict) else {}
    fixed, moving = pixel_sizes_um(recorded, fixed_pixel_size_um, moving_pixel_size_um)
    matrix_xy = from_coordinate_transform(_SWAP @ matrix @ _SWAP, moving_pixel_size=moving,
                                          fixed_pixel_size=fixed).matrix_xy
    return from_matrix_xy(matrix_xy, model_or_none(recorded.get("transform_model")))


def read_ngff_transform(path, *, fixed_pixel_size_um: float | None = None,
                        moving_pixel_size_um: float | None = None) -> AffineTransform:
    """Read an NGFF transform JSON (``.ngff.json``): see :func:`from_ngff_dict`."""
    text = read_text(path, "NGFF transform")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"NGFF transform JSON is malformed: {exc}") from exc
    return from_ngff_dict(document, fixed_pixel_size_um=fixed_pixel_size_um,
                          moving_pixel_size_um=moving_pixel_size_um)
