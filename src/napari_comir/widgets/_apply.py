"""Carry a layer of the moving image's frame onto the fixed grid with a found transform.

Images are resampled (bilinear), labels with nearest neighbour (label values kept), points and
shapes have their coordinates transformed. A layer's data coordinates are taken in the world
frame of the moving layer's grid (its scale and translate); the affine preview is ignored.
The result is a new layer "<name> (registered)"; the original is never changed.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Layer, Points, Shapes

from ..core.defaults import TRANSFORM_KEY
from ..core.errors import InputError
from ..core.transforms import AffineTransform, resample
from ._layers import grid_matrix, image_data, upsert_image


def _map_coords(coords: np.ndarray, layer: Layer, to_moving: np.ndarray,
                transform: AffineTransform) -> np.ndarray:
    """Layer data (…, row, col) -> moving pixels -> fixed pixels (leading axes kept)."""
    coords = np.array(coords, dtype=float)
    if len(coords) == 0:
        return coords
    rc = coords[:, -2:] * np.asarray(layer.scale)[-2:] + np.asarray(layer.translate)[-2:]
    rc = rc @ to_moving[:2, :2].T + to_moving[:2, 2]
    coords[:, -2:] = transform.apply_rc(rc)
    return coords


def apply_to_layer(viewer, layer: Layer, transform: AffineTransform, fixed: Layer,
                   moving: Layer) -> Layer:
    """``layer`` (in the moving image's frame) on the fixed grid, as a new layer."""
    to_moving = np.linalg.inv(grid_matrix(moving))
    to_fixed_grid = dict(scale=tuple(fixed.scale)[-2:], translate=tuple(fixed.translate)[-2:])
    meta = {TRANSFORM_KEY: transform.to_dict(), "comir_fixed": fixed.name}
    name = f"{layer.name} (registered)"
    if isinstance(layer, (Image, Labels)):
        order = 0 if isinstance(layer, Labels) else 1
        data = resample(image_data(layer), transform, image_data(fixed).shape[:2], order=order)
        if isinstance(layer, Labels):
            return viewer.add_labels(data, name=name, metadata=meta, **to_fixed_grid)
        new = upsert_image(viewer, name, data, rgb=layer.rgb,
                           colormap=None if layer.rgb else layer.colormap,
                           contrast_limits=layer.contrast_limits, metadata=meta, **to_fixed_grid)
        new.metadata = meta
        return new
    if isinstance(layer, Points):
        return viewer.add_points(_map_coords(layer.data, layer, to_moving, transform), name=name,
                                 features=layer.features, size=layer.size, metadata=meta,
                                 **to_fixed_grid)
    if isinstance(layer, Shapes):
        shapes = [_map_coords(vertices, layer, to_moving, transform) for vertices in layer.data]
        return viewer.add_shapes(shapes, shape_type=layer.shape_type, name=name, metadata=meta,
                                 **to_fixed_grid)
    raise InputError(f"cannot transform a {type(layer).__name__} layer")
