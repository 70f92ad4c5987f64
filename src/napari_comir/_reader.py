"""npe2 reader: 2-D grey or RGB TIFF/OME-TIFF/PNG/JPEG images, one napari image layer per file;
pyramidal or very large TIFFs as lazily read multiscale layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.io import IMAGE_SUFFIXES, read_pixel_size
from .core.io.slides import Slide, open_image


def _layer_name(path: Path) -> str:
    """File name without its extension; "x.ome.tif" gives "x", not "x.ome"."""
    for suffix in (".ome.tiff", ".ome.tif"):
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _supported(path) -> bool:
    return isinstance(path, str | Path) and str(path).lower().endswith(IMAGE_SUFFIXES)


def get_reader(path):
    """Return a reader for ``path`` (a file or a list of files), or None if any is not an image.

    Parameters
    ----------
    path : str or list of str
        Path(s) ending in one of :data:`napari_comir.core.io.IMAGE_SUFFIXES`.

    Returns
    -------
    callable or None
        ``reader(path) -> list of (data, kwargs, "image")``, one layer per file, named after the
        file without its extension, with its pixel size (µm) as ``scale`` when the file records
        one that means something (:func:`napari_comir.core.io.read_pixel_size`). Arrays are
        (rows, cols) grey or (rows, cols, 3) RGB; a pyramidal TIFF, or one with a side over
        4096 px, becomes a multiscale layer whose levels are read lazily (dask); the
        reader raises :class:`~napari_comir.core.errors.InputError` for multi-page stacks and
        3-D volumes so that napari shows the reason.
    """
    paths = path if isinstance(path, list) else [path]
    if not paths or not all(_supported(p) for p in paths):
        return None
    return _read_layers


def _read_layers(path) -> list[tuple]:
    layers = []
    for file in path if isinstance(path, list) else [path]:
        file = Path(file)
        image = open_image(file)
        kwargs = {"name": _layer_name(file)}
        if isinstance(image, Slide):  # napari reads only the tiles it shows, at the level it needs
            import dask.array as da

            kwargs["multiscale"] = True
            image = [da.from_array(level, chunks=(1024, 1024) + level.shape[2:], asarray=True)
                     for level in image.levels]
        pixel_size = read_pixel_size(file)
        if pixel_size is not None:  # µm per pixel: the Register widget reads it from the scale
            kwargs["scale"] = (pixel_size, pixel_size)
            kwargs["metadata"] = {"pixel_size_um": pixel_size}
        if np.ndim(image[0] if isinstance(image, list) else image) == 3:
            kwargs["rgb"] = True
        else:
            kwargs["colormap"] = "gray"
        layers.append((image, kwargs, "image"))
    return layers
