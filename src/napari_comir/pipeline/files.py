"""Register image files, of any size, and write what the user asked for: the one pipeline the
``register`` command and each batch worker run.

Files are opened lazily when large or pyramidal (:func:`napari_comir.core.io.slides.open_image`),
pixel sizes come from the arguments or the files, the resampled moving image is written tile by
tile, and transforms are exported in the formats other tools read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.defaults import DEFAULT_MODEL_NAME, DEFAULT_TILE_COMPRESSION, DEFORMABLE
from ..core.errors import InputError
from ..core.field_transform import DisplacementFieldTransform
from ..core.io import check_output_path, check_outputs_apart, read_pixel_size
from ..core.io.elastix_files import field_sidecar_paths, write_elastix_transform
from ..core.io.field_formats import NGFF_ZARR_SUFFIX
from ..core.io.slides import Slide, close_images, open_image
from ..core.io.transform_formats import csv_readme_path, write_transform
from ..core.progress import Progress
from ..core.registration import RegistrationResult
from ..core.registration.levels import to_level
from ..core.tiled_resample import check_compression, check_resampled_path, resample_to_file
from ..core.transforms import AffineTransform
from ..core.zoo import ComirModel, model_files
from .arrays import as_model, registration_events
from .options import RegistrationOptions, recorded_pixel_sizes

#: Export format of each ``exports`` key (the CLI's ``--export-<key>`` options).
EXPORT_FORMATS = ("itk", "ngff", "csv", "qupath", "elastix")


@dataclass
class FileRegistration:
    """The last event's result: the registration, the pixel sizes used and the files written."""

    result: RegistrationResult
    fixed_pixel_size_um: float | None
    moving_pixel_size_um: float | None
    model_name: str
    model_version: str
    c4_average: bool
    written: dict[str, str] = field(default_factory=dict)
    #: For two pyramids and an affine result: the transform between their i-th levels (each
    #: level's pixel centres).
    level_transforms: list[dict] = field(default_factory=list)


def file_pixel_sizes(fixed_path, moving_path, fixed_pixel_size=None, moving_pixel_size=None,
                     scale_range=None) -> tuple[float | None, float | None]:
    """Pixel sizes (µm) to register with: both given, else both from the files, else neither
    (one known size says nothing about the ratio; a ``scale_range`` means "search instead")."""
    sizes = (fixed_pixel_size, moving_pixel_size)
    if None not in sizes:
        return sizes
    if sizes != (None, None):
        raise InputError("give both pixel sizes (fixed and moving), or neither")
    if scale_range is not None:  # no need to read the files
        return None, None
    return recorded_pixel_sizes(read_pixel_size(fixed_path), read_pixel_size(moving_path))


def file_registration_events(fixed_path: str | os.PathLike, moving_path: str | os.PathLike,
                             model: ComirModel | str = DEFAULT_MODEL_NAME,
                             options: RegistrationOptions | None = None, *,
                             resampled: str | os.PathLike | None = None,
                             compression: str = DEFAULT_TILE_COMPRESSION,
                             exports: dict[str, str | os.PathLike] | None = None,
                             reserved_outputs: dict | None = None, c4_average: bool | None = None,
                             labels: dict[str, str] | None = None,
                             **option_values) -> Iterator[Progress]:
    """Register two image files and write the outputs, as :class:`Progress` events.

    Every output is checked (writable, apart from the inputs and from each other, including
    ``reserved_outputs`` such as the caller's own report) when this is called, before any work.
    The last event's ``result`` is a :class:`FileRegistration`.

    Parameters
    ----------
    fixed_path, moving_path : path
        Images; TIFFs that are pyramidal or over 4096 px are read lazily and registered coarse to
        fine (an overview search, then windows at the model's pixel size).
    model : ComirModel or str
        Loaded on ``options.device`` (default "auto") when a name or path.
    options : RegistrationOptions, optional
        As in :func:`napari_comir.pipeline.registration_events`; pixel sizes default to what
        the files record (both, or neither is used).
    resampled : path, optional
        The moving image resampled onto the fixed grid: ``.ome.tif`` (tiled pyramid),
        ``.ome.zarr`` or ``.tif``; with the fixed image's pixel size.
    compression : str
        Of the resampled TIFF's tiles, one of
        :data:`~napari_comir.core.defaults.TILE_COMPRESSIONS`: by default JPEG for 8-bit RGB,
        lossless zlib otherwise.
    exports : dict, optional
        Format (one of :data:`EXPORT_FORMATS`) -> path of the transform in that format.
    c4_average : bool, optional
        Override the model card's choice of averaging the CoMIRs over quarter turns.
    labels : dict, optional
        What error messages call "fixed", "moving", "resampled" and each export format (the CLI
        passes its option names).
    **option_values
        Fields of :class:`RegistrationOptions` replacing those of ``options``.
    """
    options = RegistrationOptions.build(options, **option_values)
    exports = {name: Path(path) for name, path in (exports or {}).items() if path is not None}
    unknown = set(exports) - set(EXPORT_FORMATS)
    if unknown:
        raise InputError(f"unknown export format(s) {sorted(unknown)}; known: {', '.join(EXPORT_FORMATS)}")
    label = {"fixed": "fixed", "moving": "moving", "resampled": "resampled",
             **{name: f"{name} export" for name in EXPORT_FORMATS}, **(labels or {})}
    outputs = {**(reserved_outputs or {}), label["resampled"]: resampled,
               **{label[name]: path for name, path in exports.items()}}
    if "csv" in exports:
        outputs[f"{label['csv']} README"] = csv_readme_path(exports["csv"])
    if "elastix" in exports and options.transform == DEFORMABLE:
        for sidecar in field_sidecar_paths(exports["elastix"]):
            outputs[f"{label['elastix']} {sidecar.name}"] = sidecar
    check_outputs_apart(outputs, {label["fixed"]: fixed_path, label["moving"]: moving_path,
                                  **model_files(model)})
    for name, path in outputs.items():
        if path is not None and name != label["resampled"]:
            check_output_path(path)
    if resampled is not None:
        check_resampled_path(resampled)
    if options.transform == DEFORMABLE:
        _check_deformable_exports(exports, label)
    sizes = file_pixel_sizes(fixed_path, moving_path, *options.pixel_sizes, options.scale_range)
    options = RegistrationOptions.build(options, fixed_pixel_size=sizes[0], moving_pixel_size=sizes[1])
    model = as_model(model, options.device)
    if c4_average is not None:
        model.card.c4_average = c4_average
    fixed, moving = open_image(fixed_path), open_image(moving_path)
    try:
        if resampled is not None:
            check_compression(resampled, compression, moving.dtype, len(moving.shape) == 3)
        run = registration_events(fixed, moving, model, options)
    except BaseException:
        close_images(fixed, moving)
        raise
    return _events(run, model.card, fixed, moving, sizes, resampled, compression, exports)


def _check_deformable_exports(exports: dict, label: dict) -> None:
    """Refuse, before any work, exports that cannot hold a deformable result."""
    for name, path in exports.items():
        if name in ("csv", "qupath"):
            raise InputError(f"{label[name]}: {name} holds an affine matrix only; export a "
                             "deformable result as ITK (.tfm), elastix (.txt) or OME-NGFF (.ngff.zarr)")
        if name == "ngff" and not path.name.lower().endswith(NGFF_ZARR_SUFFIX):
            raise InputError(f"{label[name]}: a deformable result's OME-NGFF form is a zarr group "
                             f"holding the field: name it {NGFF_ZARR_SUFFIX}")


def _events(run, card, fixed, moving, sizes, resampled, compression, exports) -> Iterator[Progress]:
    try:
        for event in run:
            yield event
        outcome = FileRegistration(event.result.result, *sizes, card.name, card.version, card.c4_average)
        # a field is no matrix: a deformable result's levels are its own (fixed, moving) pixels
        if (isinstance(fixed, Slide) and isinstance(moving, Slide)
                and isinstance(outcome.result.transform, AffineTransform)):
            outcome.level_transforms = [
                {"fixed_downsample": k_fixed, "moving_downsample": k_moving,
                 "matrix_xy": to_level(outcome.result.transform, k_fixed, k_moving).matrix_xy.tolist()}
                # up to the shallower pyramid
                for k_fixed, k_moving in zip(fixed.downsamples, moving.downsamples, strict=False)]
        if resampled is not None:
            yield from resample_to_file(moving, outcome.result.transform, fixed.shape[:2], resampled,
                                        pixel_size_um=sizes[0], compression=compression)
            outcome.written["resampled"] = str(resampled)
        export_sizes = sizes if None not in sizes else (1.0, 1.0)  # unknown: pixel units
        for name, path in exports.items():
            found = outcome.result.transform
            if name == "elastix":
                write_elastix_transform(found, path, fixed_shape=fixed.shape[:2],
                                        fixed_pixel_size_um=export_sizes[0],
                                        moving_pixel_size_um=export_sizes[1])
                outcome.written[name] = str(path)
                continue
            if path.name.lower().endswith(NGFF_ZARR_SUFFIX) and isinstance(found, AffineTransform):
                found = DisplacementFieldTransform.from_affine(found, fixed.shape[:2])  # field refused
            write_transform(found, path, format=name,
                            fixed_pixel_size_um=export_sizes[0], moving_pixel_size_um=export_sizes[1],
                            center_xy=outcome.result.moving_centre_xy)
            outcome.written[name] = str(path)
        yield Progress("done", 1, 1, "registered", result=outcome)
    finally:
        close_images(fixed, moving)
