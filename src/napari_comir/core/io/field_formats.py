"""A deformable transform (:class:`~napari_comir.core.field_transform.DisplacementFieldTransform`)
in the formats other tools read, and read back.

========  ==========================================  ===============  =========================
format    what                                        direction        units, origin
========  ==========================================  ===============  =========================
itk       ITK text transform: a CompositeTransform    fixed -> moving  µm, pixel centre [0, 0]
          (affine, then DisplacementFieldTransform);                   (as the affine ITK file)
          SimpleITK.ReadTransform reads it
ngff      OME-NGFF RFC-5 zarr group (``.ngff.zarr``):  both            µm, pixel centre [0, 0],
          "sequence" transformations of a                              axes (y, x)
          "displacements" field and an "affine"
json      napari-comir's dict (both fields on nodes)  moving -> fixed  px, pixel centre [0, 0]
npz       the same arrays, compressed                 moving -> fixed  px, pixel centre [0, 0]
========  ==========================================  ===============  =========================

ITK applies a composite's transforms last-listed first: a fixed physical point ``P`` goes to
``P + d(P)`` (the field, ``d = f u(P / f)`` with ``f`` the fixed pixel size), then through the
affine (fixed -> moving µm). The field is an image of ``spacing_px * f`` µm pixels at origin 0,
identity direction, interpolated linearly: exactly napari-comir's field. ITK files do not hold
the inverse field; reading one computes it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from ..coordinate_frames import coordinate_transform, from_coordinate_transform
from ..errors import InputError
from ..field_transform import FIELD_CONVENTION, DisplacementFieldTransform
from ._transform_text import check_pixel_sizes_um, comment_values, pixel_sizes_um
from .files import staging_directory, write_text_atomic
from .itk_affine import from_itk_text

#: Formats a deformable transform is written in, and the name endings that choose them.
FIELD_FORMATS = ("itk", "ngff", "json", "npz")
NGFF_ZARR_SUFFIX = ".ngff.zarr"
FIELD_ITK_CONVENTION = (
    "Written by napari-comir: a deformable transform in ITK's resampling direction. It maps a\n"
    "FIXED image's physical point (x, y) to the MOVING image's, in micrometres (0-based\n"
    "pixel-centre index x pixel size, origin 0, identity direction). ITK applies the last\n"
    "transform first: the displacement field (on the fixed image), then the affine."
)
FIELD_NGFF_CONVENTION = (
    "Written by napari-comir: a deformable transform as OME-NGFF RFC-5 coordinate transformations. "
    "'fixed' -> 'moving': the displacements of 'fixed_to_moving' (on the fixed image), then the "
    "affine; 'moving' -> 'fixed': the affine, then the displacements of 'moving_to_fixed'. Axes "
    "(y, x), micrometres, a physical coordinate is the 0-based pixel-centre index times the pixel "
    "size. Each field array is (y, x, 2), the last axis the displacement (dy, dx), interpolated "
    "linearly; its 'coordinateTransformations' scale maps array indices to the fixed image's µm."
)
_FIELDS = {"fixed_to_moving": "displacement_xy", "moving_to_fixed": "inverse_displacement_xy"}


# ---------------------------------------------------------------------------- ITK


def to_itk_field_text(transform: DisplacementFieldTransform, *, fixed_pixel_size_um: float = 1.0,
                      moving_pixel_size_um: float = 1.0) -> str:
    """An ITK text transform file (a CompositeTransform of an affine and a displacement field)
    that ``SimpleITK.ReadTransform`` loads: fixed physical (x, y) µm -> moving physical µm."""
    fixed, moving = check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um)
    m = coordinate_transform(transform.affine, inverse=True, moving_pixel_size=moving,
                             fixed_pixel_size=fixed).matrix_xy
    field = transform.displacement_xy.astype(np.float64) * fixed
    rows, cols = field.shape[:2]
    spacing = transform.spacing_px * fixed
    number = lambda v: repr(float(v))  # noqa: E731
    lines = ["#Insight Transform File V1.0"]
    lines += [f"# {line}" for line in FIELD_ITK_CONVENTION.splitlines()]
    lines += [f"# fixed_pixel_size_um: {fixed!r}", f"# moving_pixel_size_um: {moving!r}",
              f"# transform_model: {transform.affine.model}",
              "#Transform 0", "Transform: CompositeTransform_double_2_2",
              "#Transform 1", "Transform: AffineTransform_double_2_2",
              "Parameters: " + " ".join(number(v) for v in (*m[0, :2], *m[1, :2], m[0, 2], m[1, 2])),
              "FixedParameters: 0.0 0.0",
              "#Transform 2", "Transform: DisplacementFieldTransform_double_2_2",
              "Parameters: " + " ".join(f"{v:.6g}" for v in field.ravel()),
              "FixedParameters: " + " ".join(number(v) for v in (cols, rows, 0, 0, spacing, spacing,
                                                                   1, 0, 0, 1))]
    return "\n".join(lines) + "\n"


def is_itk_field_text(text: str) -> bool:
    """Whether ITK transform text holds a displacement field (read it with
    :func:`from_itk_field_text`)."""
    return "Transform: DisplacementFieldTransform_" in text


def _itk_transforms(text: str) -> list[tuple[str, list[float], list[float]]]:
    """(type, Parameters, FixedParameters) of each transform in ITK text, composites skipped."""
    found = []
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        try:
            if key == "Transform" and not value.strip().startswith("CompositeTransform"):
                found.append([value.strip(), [], []])
            elif key in ("Parameters", "FixedParameters") and found:
                found[-1][1 if key == "Parameters" else 2] = [float(v) for v in value.split()]
        except ValueError as exc:
            raise InputError(f"ITK transform parameters must be numbers: {exc}") from exc
    return [tuple(item) for item in found]


def from_itk_field_text(text: str, *, fixed_pixel_size_um: float | None = None,
                        moving_pixel_size_um: float | None = None) -> DisplacementFieldTransform:
    """Read what :func:`to_itk_field_text` writes (or an ITK displacement field, alone or after
    an affine, with origin 0 and identity direction) back into a moving -> fixed transform."""
    recorded = comment_values(text)
    fixed, moving = pixel_sizes_um(recorded, fixed_pixel_size_um, moving_pixel_size_um)
    transforms = _itk_transforms(text)
    fields = [t for t in transforms if t[0].startswith("DisplacementFieldTransform")]
    others = [t for t in transforms if not t[0].startswith("DisplacementFieldTransform")]
    if len(fields) != 1 or len(others) > 1 or (others and transforms[-1] is not fields[0]):
        raise InputError("a deformable ITK file for napari-comir holds one displacement field, "
                         "alone or listed after one affine (applied first)")
    _, parameters, fixed_parameters = fields[0]
    if len(fixed_parameters) != 10:
        raise InputError("a 2-D ITK displacement field has 10 FixedParameters (size, origin, "
                         f"spacing, direction), got {len(fixed_parameters)}")
    cols, rows = int(fixed_parameters[0]), int(fixed_parameters[1])
    origin, spacing, direction = fixed_parameters[2:4], fixed_parameters[4:6], fixed_parameters[6:]
    if (origin != [0.0, 0.0] or direction != [1.0, 0.0, 0.0, 1.0] or spacing[0] != spacing[1]
            or spacing[0] <= 0):
        raise InputError("napari-comir reads ITK displacement fields with origin 0, identity "
                         "direction and one positive spacing along x and y")
    if len(parameters) != rows * cols * 2:
        raise InputError(f"the ITK displacement field has {len(parameters)} values, expected "
                         f"{rows} x {cols} x 2")
    field = np.array(parameters, dtype=np.float64).reshape(rows, cols, 2) / fixed
    if others:
        kind, affine_parameters, centre = others[0]
        affine_text = (f"Transform: {kind}\nParameters: {' '.join(map(repr, affine_parameters))}\n"
                       f"FixedParameters: {' '.join(map(repr, centre))}\n")
        affine = from_itk_text(affine_text, fixed_pixel_size_um=fixed, moving_pixel_size_um=moving)
    else:  # the field alone: fixed and moving µm coincide
        affine = from_coordinate_transform(np.eye(3), inverse=True, moving_pixel_size=moving,
                                           fixed_pixel_size=fixed)
    return DisplacementFieldTransform.from_displacement(affine, field, spacing[0] / fixed)


# ---------------------------------------------------------------------------- OME-NGFF RFC-5


def _system(name: str, displacement: bool = False) -> dict:
    axes = [{"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    if displacement:
        axes.append({"name": "d", "type": "displacement", "discrete": True})
    return {"name": name, "axes": axes}


def to_ngff_field_attributes(transform: DisplacementFieldTransform, fixed_pixel_size_um: float,
                             moving_pixel_size_um: float) -> dict:
    """The RFC-5 ``coordinateSystems`` and ``coordinateTransformations`` of the group."""
    fixed, moving = check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um)
    to_fixed = coordinate_transform(transform.affine, moving_pixel_size=moving,
                                    fixed_pixel_size=fixed).matrix_rc[:2].tolist()
    to_moving = coordinate_transform(transform.affine, inverse=True, moving_pixel_size=moving,
                                     fixed_pixel_size=fixed).matrix_rc[:2].tolist()

    def field(name: str, system: str) -> dict:
        return {"type": "displacements", "path": name, "input": system, "output": system,
                "interpolation": "linear"}

    return {
        "convention": FIELD_NGFF_CONVENTION,
        "coordinateSystems": [_system("moving"), _system("fixed")],
        "coordinateTransformations": [
            {"type": "sequence", "name": "napari-comir registration, fixed to moving",
             "input": "fixed", "output": "moving",
             "transformations": [field("fixed_to_moving", "fixed"),
                                 {"type": "affine", "affine": to_moving}]},
            {"type": "sequence", "name": "napari-comir registration, moving to fixed",
             "input": "moving", "output": "fixed",
             "transformations": [{"type": "affine", "affine": to_fixed},
                                 field("moving_to_fixed", "fixed")]},
        ],
        "napari_comir": {"fixed_pixel_size_um": fixed, "moving_pixel_size_um": moving,
                         "transform_model": "deformable", "affine_model": transform.affine.model,
                         "affine_matrix_xy": transform.affine.matrix_xy.tolist(),
                         "spacing_px": transform.spacing_px},
    }


def write_ngff_field(transform: DisplacementFieldTransform, path, *, fixed_pixel_size_um: float = 1.0,
                     moving_pixel_size_um: float = 1.0) -> Path:
    """Write the transform as an RFC-5 zarr group (zarr format 2), whole or not at all."""
    import zarr

    path = Path(path)
    fixed, _ = check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um)
    staging = staging_directory(path)
    try:
        group = zarr.open_group(staging, mode="w", zarr_format=2)
        group.attrs.update(to_ngff_field_attributes(transform, fixed_pixel_size_um,
                                                    moving_pixel_size_um))
        spacing_um = transform.spacing_px * fixed
        for name, attribute in _FIELDS.items():
            # (dx, dy) px -> (dy, dx) µm: NGFF orders axes (y, x)
            values = getattr(transform, attribute)[..., ::-1] * fixed
            array = group.create_array(name, shape=values.shape, dtype=np.float32,
                                       chunks=values.shape)
            array[...] = values.astype(np.float32)
            array.attrs.update({
                "coordinateSystems": [_system(f"{name} array", displacement=True)],
                "coordinateTransformations": [
                    {"type": "scale", "scale": [spacing_um, spacing_um, 1.0],
                     "input": f"{name} array", "output": "fixed"}]})
        if path.exists():
            if not (path / ".zattrs").is_file():
                raise InputError(f"{path} exists and is not a zarr group: it will not be replaced")
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_ngff_field(path, *, fixed_pixel_size_um: float | None = None,
                    moving_pixel_size_um: float | None = None) -> DisplacementFieldTransform:
    """Read what :func:`write_ngff_field` writes back into a moving -> fixed transform."""
    import zarr

    path = Path(path)
    if not (path / ".zattrs").is_file():
        raise InputError(f"not an NGFF transform zarr group (no .zattrs): {path}")
    try:
        group = zarr.open_group(path, mode="r")
        attributes = dict(group.attrs)
        recorded = attributes.get("napari_comir", {})
        fixed, moving = pixel_sizes_um(recorded, fixed_pixel_size_um, moving_pixel_size_um)
        sequence = next(t for t in attributes["coordinateTransformations"]
                        if t.get("input") == "moving" and t.get("output") == "fixed")
        affine_rc = np.vstack([np.array(sequence["transformations"][0]["affine"], float),
                               [0.0, 0.0, 1.0]])
        fields = {}
        for name, attribute in _FIELDS.items():
            scale = group[name].attrs["coordinateTransformations"][0]["scale"]
            fields[attribute] = np.asarray(group[name][...], np.float64)[..., ::-1] / fixed
        spacing_px = float(scale[0]) / fixed
    except (KeyError, StopIteration, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{path.name}: not the NGFF deformable transform napari-comir writes "
                         f"({exc})") from exc
    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = from_coordinate_transform(swap @ affine_rc @ swap, moving_pixel_size=moving,
                                       fixed_pixel_size=fixed)
    return DisplacementFieldTransform(affine, fields["displacement_xy"],
                                      fields["inverse_displacement_xy"], spacing_px)


# ---------------------------------------------------------------------------- by format


def write_field_transform(transform: DisplacementFieldTransform, path, format_name: str, *,
                          fixed_pixel_size_um: float = 1.0, moving_pixel_size_um: float = 1.0,
                          center_xy=None) -> Path:
    """Write a deformable transform as ``format_name`` (see :data:`FIELD_FORMATS`), atomically."""
    path = Path(path)
    sizes = {"fixed_pixel_size_um": fixed_pixel_size_um, "moving_pixel_size_um": moving_pixel_size_um}
    if format_name == "itk":
        write_text_atomic(path, to_itk_field_text(transform, **sizes))
    elif format_name == "ngff":
        if not path.name.lower().endswith(NGFF_ZARR_SUFFIX):
            raise InputError(f"{path.name}: a deformable transform's NGFF form is a zarr group "
                             f"holding the field: name it {NGFF_ZARR_SUFFIX}")
        write_ngff_field(transform, path, **sizes)
    elif format_name == "json":
        write_text_atomic(path, transform.to_json(center_xy=center_xy) + "\n")
    elif format_name == "npz":
        from .files import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_bytes(transform.to_npz_bytes())
    else:
        raise InputError(f"a deformable transform is written as {', '.join(FIELD_FORMATS)} "
                         f"(.tfm, {NGFF_ZARR_SUFFIX}, .json, .npz); {format_name} holds an affine "
                         "matrix only")
    return path


def is_deformable_json(text: str) -> bool:
    """Whether JSON text holds a deformable transform (``"transform": "deformable"``)."""
    return re.search(r'"transform"\s*:\s*"deformable"', text) is not None


def read_field_json(text: str) -> DisplacementFieldTransform:
    """A deformable transform from JSON text (:meth:`DisplacementFieldTransform.to_dict`, or a
    registration result's JSON whose ``transform`` is "deformable")."""
    try:
        return DisplacementFieldTransform.from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise InputError(f"transform JSON is malformed: {exc}") from exc


__all__ = ["FIELD_CONVENTION", "FIELD_FORMATS", "NGFF_ZARR_SUFFIX", "from_itk_field_text",
           "is_deformable_json", "is_itk_field_text", "read_field_json", "read_ngff_field",
           "to_itk_field_text", "to_ngff_field_attributes", "write_field_transform", "write_ngff_field"]
