"""Where the Register widget's Accept writes a registered whole slide, and how it comes back.

A slide is never resampled into memory: Accept writes it tile by tile to a file
(:func:`napari_comir.core.tiled_resample.resample_to_file`), then opens that file through the
plugin's reader as a new multiscale layer on the fixed grid.
"""

from __future__ import annotations

from pathlib import Path

from napari.layers import Layer

from ..core.defaults import TRANSFORM_KEY
from ..core.transforms import AffineTransform
from ._layers import beside_source


def default_output(moving: Layer) -> Path:
    """``<moving name>_registered.ome.tif`` beside the moving image's file, if known; numbered
    when that file exists (an earlier Accept's, which may be open)."""
    path, number = beside_source(moving, f"{moving.name}_registered.ome.tif"), 2
    while path.exists():
        path, number = path.with_name(f"{moving.name}_registered_{number}.ome.tif"), number + 1
    return path


def ask_output_path(parent, moving: Layer) -> str | None:
    """A save dialog for the registered slide; ``None`` when cancelled."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(
        parent, "Save the registered slide", str(default_output(moving)),
        "Pyramidal OME-TIFF (*.ome.tif);;OME-Zarr (*.ome.zarr);;TIFF (*.tif)")
    return path or None


def open_written(viewer, path: Path, fixed: Layer, moving: Layer,
                 transform: AffineTransform) -> Layer:
    """Open a written pyramid through the plugin's reader as a new layer on the fixed grid."""
    from .._reader import get_reader

    data, kwargs, _ = get_reader(str(path))(str(path))[0]
    name, taken = f"{moving.name} (registered)", {layer.name for layer in viewer.layers}
    number = 2
    while name in taken:  # never replace a layer (an earlier accept's, or the user's)
        name, number = f"{moving.name} (registered {number})", number + 1
    kwargs.update(name=name, scale=tuple(fixed.scale)[-2:], translate=tuple(fixed.translate)[-2:],
                  metadata={**kwargs.get("metadata", {}), TRANSFORM_KEY: transform.to_dict(),
                            "comir_fixed": fixed.name, "comir_direction": "moving → fixed",
                            "comir_file": str(path)})
    if not kwargs.get("rgb"):
        kwargs["contrast_limits"] = tuple(moving.contrast_limits)
    return viewer.add_image(data, **kwargs)
