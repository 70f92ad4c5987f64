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
import os
import re
from pathlib import Path

from ..errors import InputError
from ..field_transform import DisplacementFieldTransform
from ..transforms import AffineTransform
from ._transform_text import check_pixel_sizes_um, read_text
from .field_formats import (
    from_itk_field_text,
    is_deformable_json,
    is_itk_field_text,
    read_field_json,
    read_ngff_field,
    write_field_transform,
)
from .files import write_text_atomic
from .itk_affine import from_itk_text, to_itk_text
from .ngff_affine import read_ngff_transform, to_ngff_dict
from .qupath_affine import read_qupath_transform, to_qupath_text

#: Format names, and the file-name endings that choose them (longest first: ``.qupath.txt`` is
#: QuPath, any other ``.txt`` ITK).
FORMATS = ("itk", "ngff", "qupath", "csv", "json", "npz")
#: The formats in µm (see the table above): their numbers depend on the pixel sizes given.
MICROMETRE_FORMATS = ("itk", "ngff")
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
#: A line of an elastix parameter file: ``(Transform "AffineTransform")``.
ELASTIX_PARAMETER = re.compile(r'^\s*\(Transform\s+"', re.MULTILINE)
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
    sizes = dict(zip(("fixed_pixel_size_um", "moving_pixel_size_um"),
                     check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um), strict=True))
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
        text = read_text(path, "ITK transform")
        if ELASTIX_PARAMETER.search(text):
            raise InputError(f"{Path(path).name} is an elastix parameter file, for transformix "
                             "(or itk-elastix) to apply; napari-comir reads back the transform "
                             "it exported as .json, .tfm, .ngff.json, .qupath.txt or .csv")
        if is_itk_field_text(text):
            return from_itk_field_text(text, **sizes)
        return from_itk_text(text, **sizes)
    if format_name == "ngff":
        return read_ngff_transform(path, **sizes)
    if format_name == "qupath":
        return read_qupath_transform(path)
    if format_name == "csv":
        return read_csv_transform(path)
    text = read_text(path, "transform JSON")
    if is_deformable_json(text):
        return read_field_json(text)
    return read_json_transform(text)
