"""Carry what the user has (annotations, points, label images, other channels) between the
moving and the fixed image with a found transform, in either direction.

A transform maps moving pixel centres to fixed pixel centres. ``inverse=False`` carries data of
the moving image's frame onto the fixed image (e.g. H&E annotations onto the SHG); ``inverse=True``
carries data of the fixed image's frame onto the moving image (SHG annotations onto the H&E).
Images are resampled onto the target grid (bilinear; label images nearest neighbour, so their
values are kept and no new label appears), coordinates are mapped exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .background import background_value
from .defaults import DEFAULT_TILE_COMPRESSION
from .errors import InputError
from .field_transform import DisplacementFieldTransform, resample
from .io.field_formats import is_deformable_json, read_field_json
from .io.files import check_output_path, check_outputs_apart, read_utf8_text
from .io.geojson import read_geojson, transform_geojson, write_geojson
from .io.slides import close_images, open_image
from .io.transform_formats import format_from_path, read_transform
from .progress import Progress
from .tiled_resample import check_resampled_path, resample_to_file
from .transforms import AffineTransform

#: What carries data between the images: an affine or a deformable transform.
TRANSFORM_TYPES = (AffineTransform, DisplacementFieldTransform)


def as_transform(transform):
    """The moving -> fixed transform from an object or a file.

    Parameters
    ----------
    transform : AffineTransform, DisplacementFieldTransform, RegistrationResult, str or os.PathLike
        A transform; anything with such a ``transform`` attribute (a registration result); or
        a file: the JSON ``napari-comir register --out`` writes (the whole result is read for
        its ``matrix_xy``, or its field when ``transform`` is "deformable"), napari-comir's
        transform JSON or CSV, or any format
        :func:`napari_comir.core.io.transform_formats.read_transform` reads (ITK ``.tfm``,
        ``.ngff.json``/``.ngff.zarr``, ``.qupath.txt``, ``.npz``; their pixel sizes as the file
        records them).

    Returns
    -------
    AffineTransform or DisplacementFieldTransform
        Moving pixel (x, y) -> fixed pixel (x, y), 0-based pixel centres.
    """
    if isinstance(transform, TRANSFORM_TYPES):
        return transform
    if isinstance(getattr(transform, "transform", None), TRANSFORM_TYPES):
        return transform.transform
    if not isinstance(transform, (str, os.PathLike)):
        raise InputError("expected a transform (AffineTransform, registration result, or a "
                         f"transform file), got {type(transform).__name__}")
    path = Path(transform)
    if not (path.is_file() or path.name.lower().endswith(".ngff.zarr") and path.is_dir()):
        raise InputError(f"transform file not found: {path}")
    try:
        format_name = format_from_path(path)
    except InputError:
        format_name = "json"  # no known ending: read it as napari-comir's JSON, or say why not
    if format_name not in ("json", "csv"):
        return read_transform(path, format=format_name)
    text = read_utf8_text(path, "the JSON `napari-comir register --out` writes, or a transform CSV")
    try:
        if format_name == "csv":
            if "\n" not in text.strip():
                raise InputError("a transform CSV needs a header row and a value row")
            return AffineTransform.from_csv(text)
        if not text.lstrip().startswith("{"):
            raise InputError("not a JSON object; expected the JSON `napari-comir register --out` "
                             "writes (with 'matrix_xy'), or a transform CSV")
        if is_deformable_json(text):
            return read_field_json(text)
        return AffineTransform.from_json(text)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from exc


def _directed(transform, inverse: bool):
    transform = as_transform(transform)
    return transform.inverse() if inverse else transform


def transform_points_rc(points_rc, transform, *, inverse: bool = False,
                        data_to_source_rc=None) -> np.ndarray:
    """Map points (row, col) of one image's frame into the other image's pixels.

    Parameters
    ----------
    points_rc : array_like
        (N, D) with D >= 2: the last two columns are (row, col); leading columns (e.g. a plane
        or time index) are kept.
    transform : AffineTransform, DisplacementFieldTransform or path
        Moving -> fixed transform (see :func:`as_transform`).
    inverse : bool
        ``False``: the points are in the moving image's frame and go to fixed pixels; ``True``:
        from the fixed image's frame to moving pixels.
    data_to_source_rc : array_like, optional
        3x3 (row, col) matrix from the points' coordinates to the source image's pixels (e.g. a
        napari layer's scale and translate undone by the source image's); default: the points
        are already source pixels.

    Returns
    -------
    np.ndarray
        (N, D) float: (row, col) in target-image pixels (0-based pixel centres).
    """
    directed = _directed(transform, inverse)
    try:
        points = np.array(points_rc, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"points must be numbers (N, 2) of (row, col): {exc}") from exc
    if points.ndim == 1 and points.shape[0] >= 2:
        points = points[None, :]
    if points.ndim != 2 or points.shape[1] < 2:
        raise InputError(f"points must have shape (N, 2) of (row, col), got {points.shape}")
    if len(points) == 0:
        return points
    if not np.all(np.isfinite(points[:, -2:])):
        raise InputError("points contain NaN or infinite coordinates")
    rc = points[:, -2:]
    if data_to_source_rc is not None:
        m = np.asarray(data_to_source_rc, dtype=float)
        if m.shape != (3, 3):
            raise InputError(f"data_to_source_rc must be a 3x3 matrix, got shape {m.shape}")
        rc = rc @ m[:2, :2].T + m[:2, 2]
    points[:, -2:] = directed.apply_rc(rc)
    return points


def apply_transform_to_points(transform, points_rc=None, *, points_xy=None,
                              inverse: bool = False) -> np.ndarray:
    """Carry points between the moving and the fixed image's pixels.

    Give either ``points_rc`` ((row, col), as napari Points layers hold them) or ``points_xy``
    ((x, y), as most tables and scikit-image hold them); the result has the same order.

    Parameters
    ----------
    transform : AffineTransform, DisplacementFieldTransform, RegistrationResult or path
        Moving -> fixed transform (see :func:`as_transform`).
    points_rc, points_xy : array_like
        (N, 2) pixel coordinates, 0-based pixel centres, in the moving image (or, with
        ``inverse``, in the fixed image).
    inverse : bool
        ``False``: moving -> fixed. ``True``: fixed -> moving.

    Returns
    -------
    np.ndarray
        (N, 2) float, in the target image's pixels, in the order given.
    """
    if (points_rc is None) == (points_xy is None):
        raise InputError("give points_rc (row, col) or points_xy (x, y), one of the two")
    if points_rc is not None:
        return transform_points_rc(points_rc, transform, inverse=inverse)
    points_xy = np.asarray(points_xy, dtype=float)
    if points_xy.ndim != 2 or points_xy.shape[1] != 2:
        raise InputError(f"points_xy must have shape (N, 2) of (x, y), got {points_xy.shape}")
    return transform_points_rc(points_xy[:, ::-1], transform, inverse=inverse)[:, ::-1]


def apply_transform_to_image(transform, image, output_shape, *, inverse: bool = False,
                             labels: bool = False) -> np.ndarray:
    """Resample an image of one image's frame onto the other image's grid.

    Parameters
    ----------
    transform : AffineTransform, DisplacementFieldTransform, RegistrationResult or path
        Moving -> fixed transform (see :func:`as_transform`).
    image : np.ndarray
        (rows, cols) or (rows, cols, channels) on the moving image's grid (on the fixed image's
        grid with ``inverse``): another channel, a mask, a label image.
    output_shape : tuple of int
        (rows, cols) of the target grid: the fixed image's shape (the moving image's with
        ``inverse``).
    inverse : bool
        ``False``: moving -> fixed grid. ``True``: fixed -> moving grid.
    labels : bool
        A label image: nearest neighbour, so every output value is one of the input's (no
        blended labels); pixels that fall outside are 0 (background).

    Returns
    -------
    np.ndarray
        (rows, cols[, channels]) of ``image``'s dtype; outside ``image``, its background
        (:func:`~napari_comir.core.background.background_value`: a bright field's white, else 0).
    """
    directed = _directed(transform, inverse)
    image = np.asarray(image)
    if labels and image.ndim != 2:
        raise InputError(f"a label image must be 2-D (rows, cols), got shape {image.shape}")
    if labels and not (np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_):
        raise InputError(f"a label image must hold whole numbers, got dtype {image.dtype}")
    return resample(image, directed, output_shape, order=0 if labels else 1,
                    cval=0.0 if labels else background_value(image))


def apply_transform_to_geojson(transform, in_path, out_path, *, inverse: bool = False,
                               origin: str = "corner", moving_pixel_size=None,
                               fixed_pixel_size=None, indent: int | None = None):
    """Carry a GeoJSON file of annotations (e.g. from QuPath) onto the other image.

    Parameters
    ----------
    transform : AffineTransform, DisplacementFieldTransform, RegistrationResult or path
        Moving -> fixed transform (see :func:`as_transform`).
    in_path, out_path : str or os.PathLike
        The annotations and where to write them (atomically; checked before any work, and
        never one of the inputs).
    inverse : bool
        ``False``: drawn on the moving image, carried onto the fixed one. ``True``: drawn on the
        fixed image, carried onto the moving one.
    origin : {"corner", "centre"}
        Where the coordinates' (0, 0) lies: the top-left corner of the top-left pixel (QuPath,
        the default) or its centre.
    moving_pixel_size, fixed_pixel_size : float or (float, float), optional
        When given, coordinates in that image's frame are in µm, this many per pixel;
        otherwise in full-resolution pixels.
    indent : int, optional
        Indent the output by this many spaces (default: compact).

    Returns
    -------
    dict or list
        The carried annotations, as written.

    See Also
    --------
    napari_comir.core.io.geojson.transform_geojson : the same on parsed GeoJSON.
    """
    inputs = {"--geojson": in_path}
    if isinstance(transform, (str, os.PathLike)):
        inputs["--transform"] = transform
    check_outputs_apart({"--out": out_path}, inputs)
    check_output_path(out_path)
    transform = as_transform(transform)
    data = read_geojson(in_path)
    carried = transform_geojson(data, transform, inverse=inverse, origin=origin,
                                moving_pixel_size=moving_pixel_size,
                                fixed_pixel_size=fixed_pixel_size)
    write_geojson(out_path, carried, indent=indent)
    return carried


def apply_transform_to_image_file(transform, in_path, like_path, out_path, *,
                                  inverse: bool = False, labels: bool = False,
                                  compression: str = DEFAULT_TILE_COMPRESSION) -> tuple[int, int]:
    """Carry an image file (another channel, a mask, labels) onto the grid of another image file.

    Whole slides are read lazily and written tile by tile (as the registered image is): memory
    stays a few tiles whatever their size. :func:`image_file_events` run to its end.

    Parameters
    ----------
    transform : AffineTransform, DisplacementFieldTransform, RegistrationResult or path
        Moving -> fixed transform (see :func:`as_transform`).
    in_path : str or os.PathLike
        The image, on the moving image's grid (on the fixed image's with ``inverse``).
    like_path : str or os.PathLike
        The image whose grid the output takes: the fixed image (the moving image with
        ``inverse``); only its size and pixel size are used.
    out_path : str or os.PathLike
        ``.tif``, ``.ome.tif`` (a tiled pyramid) or ``.ome.zarr``; written whole or not at all,
        checked before any work.
    inverse, labels : bool
        As in :func:`apply_transform_to_image`.
    compression : str
        Of a TIFF output's tiles, one of :data:`~napari_comir.core.defaults.TILE_COMPRESSIONS`:
        by default JPEG for 8-bit RGB, lossless zlib otherwise (labels are never JPEG).

    Returns
    -------
    tuple of int
        (rows, cols) of the written image.
    """
    *_, last = image_file_events(transform, in_path, like_path, out_path, inverse=inverse,
                                 labels=labels, compression=compression)
    return last.result


def image_file_events(transform, in_path, like_path, out_path, *, inverse: bool = False,
                      labels: bool = False,
                      compression: str = DEFAULT_TILE_COMPRESSION) -> Iterator[Progress]:
    """:func:`apply_transform_to_image_file` as a stream of :class:`Progress` events (tiles
    resampled, levels written; the last event's ``result`` the written (rows, cols)). The paths
    and the transform are checked when this is called, before any work."""
    inputs = {"--image": in_path, "--like": like_path}
    if isinstance(transform, (str, os.PathLike)):
        inputs["--transform"] = transform
    check_outputs_apart({"--out": out_path}, inputs)
    check_resampled_path(out_path)
    transform = as_transform(transform)
    like = open_image(like_path)
    image = None
    try:
        image = open_image(in_path)
        if labels and (len(image.shape) != 2 or not (np.issubdtype(image.dtype, np.integer)
                                                      or image.dtype == np.bool_)):
            raise InputError(f"{Path(in_path).name}: a label image must be one plane of whole "
                             f"numbers, got shape {tuple(image.shape)} of {image.dtype}")
        shape = tuple(like.shape[:2])
        writing = resample_to_file(image, _directed(transform, inverse), shape, out_path,
                                   pixel_size_um=getattr(like, "pixel_size_um", None),
                                   order=0 if labels else 1, compression=compression)
    except BaseException:
        close_images(like, image)
        raise
    return _image_file_events(writing, shape, like, image)


def _image_file_events(writing: Iterator[Progress], shape: tuple[int, int], *opened) -> Iterator[Progress]:
    try:
        yield from writing
        yield Progress("done", 1, 1, f"wrote {shape[0]}x{shape[1]} px", result=shape)
    finally:
        close_images(*opened)


__all__ = ["apply_transform_to_geojson", "apply_transform_to_image",
           "apply_transform_to_image_file", "apply_transform_to_points", "as_transform",
           "image_file_events",
           "transform_points_rc"]
