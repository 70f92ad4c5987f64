"""The Register widget's export: the transform in the formats other tools read (the format from
the file name; the pixel sizes from the layers' scale). Conventions:
``napari_comir.core.io.transform_formats``."""

from __future__ import annotations

import re
from pathlib import Path

from napari.layers import Layer

from .. import api
from ..batch.jobs import safe_name
from ..core.errors import InputError
from ..core.io.elastix_files import field_sidecar_paths
from ..core.io.transform_formats import MICROMETRE_FORMATS, format_from_path
from ..core.registration import RegistrationResult
from ..core.transforms import AffineTransform
from ._layers import beside_source, layer_scale_x, layer_shape

#: elastix / transformix parameter files (:func:`napari_comir.api.export_elastix`): their own
#: ending, since ``.txt`` alone is an ITK transform file.
ELASTIX_ENDING = ".elastix.txt"
ELASTIX_FILTER = (f"elastix / transformix parameter file, fixed → moving, µm (*{ELASTIX_ENDING})",
                  ELASTIX_ENDING)
#: (file-dialog filter, the ending it adds to a name typed without one), in the dialog's order.
FILTERS = (
    ("napari-comir JSON (*.json)", ".json"),
    ("ITK / elastix transform, fixed → moving, µm (*.tfm *.txt)", ".tfm"),
    ("OME-NGFF affine, moving → fixed, µm (*.ngff.json)", ".ngff.json"),
    ("QuPath alignment matrix, fixed → moving, px (*.qupath.txt)", ".qupath.txt"),
    ("CSV matrix, moving → fixed, px (*.csv)", ".csv"),
    ELASTIX_FILTER,
)
#: The same for a deformable result: the formats that hold a displacement field.
FIELD_FILTERS = (
    ("napari-comir JSON, the field on a grid (*.json)", ".json"),
    ("ITK composite transform (affine + displacement field), fixed → moving, µm (*.tfm)", ".tfm"),
    ("OME-NGFF (RFC-5) displacements, a zarr group (*.ngff.zarr)", ".ngff.zarr"),
    ("NumPy arrays of the field (*.npz)", ".npz"),
    ELASTIX_FILTER,
)


def layer_pixel_size_um(layer: Layer) -> float:
    """A layer's pixel size (µm) from its ``scale`` (x); napari's default 1 means pixel units."""
    return abs(layer_scale_x(layer))


def offered_endings(deformable: bool) -> list[str]:
    """The file-name endings the export dialog offers (for a field: those that hold one)."""
    filters = FIELD_FILTERS if deformable else FILTERS
    return [ending for name, _ in filters for ending in re.findall(r"\*(\.[\w.]+)", name)]


def export_result(result: RegistrationResult, fixed: Layer, moving: Layer, path) -> Path:
    """Write the result's transform to ``path`` in the format its name asks for; a name no
    format ends gets an :class:`InputError` naming the dialog's endings (:func:`offered_endings`)."""
    if not _is_elastix(path):
        try:
            format_from_path(path)
        except InputError:
            endings = offered_endings(not isinstance(result.transform, AffineTransform))
            raise InputError(f"cannot tell the format from {Path(path).name!r}: end the name in "
                             f"{', '.join(endings[:-1])} or {endings[-1]}, or choose a format in "
                             "the dialog and type the name without an ending") from None
    sizes = {"fixed_pixel_size_um": layer_pixel_size_um(fixed),
             "moving_pixel_size_um": layer_pixel_size_um(moving)}
    if _is_elastix(path):  # a field's files first, the parameter file last
        return api.export_elastix(result.transform, path, fixed_shape=layer_shape(fixed)[:2],
                                  **sizes)[-1]
    return api.export_transform(
        result.transform, path, center_xy=result.moving_centre_xy, **sizes)


def _is_elastix(path) -> bool:
    return str(path).lower().endswith(ELASTIX_ENDING)


def companion_files(path, transform) -> list[Path]:
    """The files an export to ``path`` wrote beside it and needs: an elastix parameter file of a
    field names the field's own parameter file and image (by full path: elastix reads relative
    names from its working folder, not the file's)."""
    if _is_elastix(path) and not isinstance(transform, AffineTransform):
        return list(field_sidecar_paths(path))
    return []


def in_micrometres(path: Path) -> bool:
    """Whether the format ``path``'s name asks for holds µm (ITK and OME-NGFF; QuPath's and
    the CSV's matrices are in pixels, the JSON holds both)."""
    return format_from_path(path) in MICROMETRE_FORMATS


def default_export_path(fixed: Layer, moving: Layer) -> Path:
    """``<moving>_to_<fixed>`` beside the moving image's file, if known; without an ending (and
    without dots that would read as one): the format chosen in the dialog adds its own (a
    ``.json`` here stayed whatever format was chosen)."""
    name = safe_name(f"{moving.name}_to_{fixed.name}").replace(".", "_")
    # "H&E (as scanned)" gave "H_E__as_scanned_": one "_" between words, none at the ends
    return beside_source(moving, re.sub("_{2,}", "_", name).strip("_"))


def ask_export_path(parent, fixed: Layer, moving: Layer, deformable: bool = False) -> str | None:
    """A save dialog listing the formats that hold the result (``deformable``: a field); a name
    typed without an ending gets the chosen one. A name with another ending is kept, to be
    refused by the export saying which endings it knows (not written as JSON under it)."""
    from qtpy.QtWidgets import QFileDialog

    filters = FIELD_FILTERS if deformable else FILTERS
    path, chosen = QFileDialog.getSaveFileName(parent, "Export transform",
                                               str(default_export_path(fixed, moving)),
                                               ";;".join(name for name, _ in filters))
    if not path:
        return None
    if not Path(path).suffix:
        path += dict(filters).get(chosen, ".json")
    return path
