"""A transform as elastix/transformix parameter files: what ``transformix`` (or itk-elastix's
``itk.transformix_filter`` / ``itk.transformix_pointset``) applies as it applies elastix's own.

For ``NAME.txt`` this writes:

* ``NAME.txt``: an elastix ``AffineTransform`` (fixed -> moving physical points, centre of
  rotation 0), the file to give transformix. For a deformable transform its
  ``InitialTransformParametersFileName`` names the next file, and elastix composes them as
  ``T(P) = affine(field(P))``: the field is applied first, as in napari-comir.
* ``NAME.field.txt`` (deformable only): an elastix ``DeformationFieldTransform`` whose
  ``DeformationFieldFileName`` is ``NAME.field.mha``, interpolated linearly
  (``DeformationFieldInterpolationOrder 1``; elastix's default 0 would round to the nearest node).
* ``NAME.field.mha`` (deformable only): the displacement ``d(P) = f u(P / f)`` (µm) on the field's
  nodes, a 2-component float image of ``spacing_px * f`` µm pixels at origin 0.

Physical points are those of the ITK export (:mod:`.transform_formats`): the 0-based
pixel-centre index times the pixel size (``f`` fixed, ``m`` moving), origin 0, identity
direction; x = column, y = row. The output grid (``Size``, ``Spacing``) is the fixed image's.
elastix reads the file names in a parameter file relative to its working directory, so both
are written as absolute paths: edit those two lines after moving the files elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coordinate_frames import coordinate_transform
from ..errors import InputError
from ..field_transform import DisplacementFieldTransform
from ..transforms import AffineTransform
from ._transform_text import check_pixel_sizes_um
from .files import atomic_path, write_text_atomic

ELASTIX_CONVENTION = (
    "Written by napari-comir: the registration's transform for transformix, FIXED physical point "
    "-> MOVING physical point (micrometres: 0-based pixel-centre index x pixel size, origin 0). "
    "A deformable result: the displacement field (NAME.field.txt, the initial transform) first, "
    "then this affine."
)


def field_sidecar_paths(path) -> tuple[Path, Path]:
    """The field's parameter file and image written beside the parameter file ``path``."""
    path = Path(path)
    stem = path.name[:-len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.field.txt"), path.with_name(f"{stem}.field.mha")


def _line(key: str, *values) -> str:
    text = " ".join(f'"{v}"' if isinstance(v, str) else repr(float(v)) if isinstance(v, float)
                    else str(v) for v in values)
    return f"({key} {text})"


def _grid_lines(fixed_shape, fixed_pixel_size_um: float) -> list[str]:
    rows, cols = (int(n) for n in tuple(fixed_shape)[:2])
    if min(rows, cols) < 1:
        raise InputError(f"fixed_shape must be (rows, cols) with positive sizes, got {fixed_shape}")
    size = float(fixed_pixel_size_um)
    return [_line("FixedImageDimension", 2), _line("MovingImageDimension", 2),
            _line("FixedInternalImagePixelType", "float"), _line("MovingInternalImagePixelType", "float"),
            _line("Size", cols, rows), _line("Index", 0, 0), _line("Spacing", size, size),
            _line("Origin", 0.0, 0.0), _line("Direction", 1.0, 0.0, 0.0, 1.0),
            _line("UseDirectionCosines", "true"), _line("HowToCombineTransforms", "Compose"),
            _line("ResampleInterpolator", "FinalBSplineInterpolator"),
            _line("FinalBSplineInterpolationOrder", 1), _line("Resampler", "DefaultResampler"),
            _line("DefaultPixelValue", 0), _line("ResultImagePixelType", "float")]


def _write_field_image(transform: DisplacementFieldTransform, path: Path, fixed_pixel_size_um: float) -> None:
    """The field (µm) as a MetaImage (``.mha``: a text header, then the float32 (dx, dy) of each
    node, x fastest), written atomically; ITK and elastix read it without SimpleITK here."""
    rows, cols = transform.displacement_xy.shape[:2]
    spacing = transform.spacing_px * fixed_pixel_size_um
    header = "\n".join([
        "ObjectType = Image", "NDims = 2", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        "CompressedData = False", "TransformMatrix = 1 0 0 1", "Offset = 0 0",
        "CenterOfRotation = 0 0", f"ElementSpacing = {spacing!r} {spacing!r}",
        f"DimSize = {cols} {rows}", "ElementNumberOfChannels = 2", "ElementType = MET_FLOAT",
        "ElementDataFile = LOCAL"]) + "\n"
    field = (transform.displacement_xy.astype(np.float64) * fixed_pixel_size_um).astype("<f4")
    with atomic_path(path) as staging, open(staging, "wb") as out:
        out.write(header.encode("ascii"))
        out.write(np.ascontiguousarray(field).tobytes())  # [row][col][(dx, dy)]


def write_elastix_transform(transform, path, *, fixed_shape, fixed_pixel_size_um: float = 1.0,
                            moving_pixel_size_um: float = 1.0) -> list[Path]:
    """Write a moving -> fixed transform as elastix/transformix parameter files (see the module).

    Parameters
    ----------
    transform : AffineTransform or DisplacementFieldTransform
        Moving -> fixed, pixel (x, y).
    path : str or os.PathLike
        The parameter file transformix is given (e.g. ``TransformParameters.0.txt``).
    fixed_shape : (int, int)
        (rows, cols) of the fixed image: the grid transformix resamples onto.
    fixed_pixel_size_um, moving_pixel_size_um : float
        Pixel sizes (µm); 1.0 gives pixel units.

    Returns
    -------
    list of Path
        Every file written, the parameter file last (written last: it marks a complete export).
    """
    fixed, moving = check_pixel_sizes_um(fixed_pixel_size_um, moving_pixel_size_um)
    if isinstance(transform, DisplacementFieldTransform):
        if transform.inverted:
            raise InputError("write the moving -> fixed transform (call inverse() again)")
        affine = transform.affine
    elif isinstance(transform, AffineTransform):
        affine = transform
    else:
        raise InputError(f"expected a transform, got {type(transform).__name__}")
    path = Path(path).absolute()
    grid = _grid_lines(fixed_shape, fixed)
    written = []
    initial = "NoInitialTransform"
    if isinstance(transform, DisplacementFieldTransform):
        field_parameters, field_image = field_sidecar_paths(path)
        _write_field_image(transform, field_image, fixed)
        write_text_atomic(field_parameters, "\n".join(
            [f"// {ELASTIX_CONVENTION}", _line("Transform", "DeformationFieldTransform"),
             _line("DeformationFieldFileName", str(field_image)),
             _line("DeformationFieldInterpolationOrder", 1), _line("NumberOfParameters", 0),
             _line("InitialTransformParametersFileName", "NoInitialTransform"), *grid]) + "\n")
        written += [field_image, field_parameters]
        initial = str(field_parameters)
    m = coordinate_transform(affine, inverse=True, moving_pixel_size=moving,
                             fixed_pixel_size=fixed).matrix_xy  # fixed µm -> moving µm
    write_text_atomic(path, "\n".join(
        [f"// {ELASTIX_CONVENTION}", f"// fixed_pixel_size_um: {fixed!r}",
         f"// moving_pixel_size_um: {moving!r}", _line("Transform", "AffineTransform"),
         _line("NumberOfParameters", 6),
         _line("TransformParameters", *(float(v) for v in (*m[0, :2], *m[1, :2], m[0, 2], m[1, 2]))),
         _line("CenterOfRotationPoint", 0.0, 0.0), _line("InitialTransformParametersFileName", initial),
         *grid]) + "\n")
    return [*written, path]


__all__ = ["ELASTIX_CONVENTION", "field_sidecar_paths", "write_elastix_transform"]
