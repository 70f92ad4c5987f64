"""Carry a layer between the moving and the fixed image's grids with a found transform.

Forward (the default), a layer of the moving image's frame goes onto the fixed grid; with
``inverse``, a layer of the fixed image's frame (e.g. annotations drawn on the SHG) goes onto
the moving grid (the H&E). Images are resampled (bilinear), labels with nearest neighbour
(label values kept, no new label), points and shapes have their coordinates transformed
(points keep their features and colours). A layer's data coordinates are taken in the world
frame of the source image layer's grid (its scale and translate; a mask or labels layer may have
its own scale), the affine preview ignored: a layer made before registering lies on the moving
image as it was. A points or shapes layer made empty and drawn over the moving image while it
was shown registered lies on it as it was shown then (``source_shown``, the preview), or, drawn
over a deformable result's review (the moving image warped onto the fixed grid), lies on the
fixed grid already (``drawn_on_target``): it is carried where it was drawn. The result
is a new layer "<name> (registered)" (forward) or "<name> (on <moving>)" (inverse) on the
target layer's grid (one carried onto the moving image is shown placed as that image is, by the
result's preview or not, and moves with it); the original is never changed. Applied again, it
takes the place of the layer it made before (a user's own layer of that name is kept). The
coordinate mapping itself is :func:`napari_comir.core.apply.transform_points_rc`; this module
only handles napari layers.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Layer, Points, Shapes

from ..core.apply import apply_transform_to_image, transform_points_rc
from ..core.defaults import TRANSFORM_KEY
from ..core.errors import InputError
from ..core.transforms import AffineTransform
from ._layers import grid_matrix, image_data, is_multiscale

#: Directions offered by the Register widget: label -> ``inverse``.
DIRECTIONS = {"moving → fixed": False, "fixed → moving": True}


def shown_matrix(layer: Layer) -> np.ndarray:
    """3x3 (row, col) matrix from the layer's data to world as napari shows it: its scale and
    translate, then its affine."""
    return np.asarray(layer.affine.affine_matrix)[-3:, -3:] @ grid_matrix(layer)


def _data_to_source_rc(layer: Layer, source: Layer, source_shown: np.ndarray | None = None) -> np.ndarray:
    """3x3 (row, col) matrix from ``layer``'s data to the pixels of the ``source`` image layer:
    through their grids, or as napari showed both when ``layer`` was drawn over ``source``
    shown by ``source_shown`` (its data -> world matrix then)."""
    if source_shown is None:
        return np.linalg.inv(grid_matrix(source)) @ grid_matrix(layer)
    return np.linalg.inv(source_shown) @ shown_matrix(layer)


def _through(transform, data_to_source_rc: np.ndarray):
    """``transform`` after a layer's data -> source pixel matrix. A deformable transform takes
    layers on the source image's own grid only (its field lives on pixel grids)."""
    if isinstance(transform, AffineTransform):
        return AffineTransform.from_matrix_rc(transform.matrix_rc @ data_to_source_rc)
    if not np.allclose(data_to_source_rc, np.eye(3)):
        raise InputError("a deformable result carries images and labels on the registered "
                         "image's own grid (scale and translate) only; resample this layer onto "
                         "it first, or register with an affine transform")
    return transform


def carried_pixels(layer: Layer, transform, fixed: Layer, moving: Layer, *,
                   inverse: bool = False, source_shown: np.ndarray | None = None) -> np.ndarray:
    """An image or labels layer resampled onto the other image's grid (see
    :func:`apply_to_layer`): computation only, so a worker can run it."""
    source, target = (fixed, moving) if inverse else (moving, fixed)
    if is_multiscale(target):
        raise InputError(f"{target.name!r} is a whole slide: a layer resampled onto its full "
                         "grid may not fit in memory; Accept writes the moving slide to a file")
    # Layer pixels -> source pixels -> target pixels (a mask at another scale is fine).
    directed = transform.inverse() if inverse else transform
    pixels_to_target = _through(directed, _data_to_source_rc(layer, source, source_shown))
    return apply_transform_to_image(pixels_to_target,
                                    image_data(layer, "applying the transform to it"),
                                    image_data(target).shape[:2],
                                    labels=isinstance(layer, Labels))


def apply_to_layer(viewer, layer: Layer, transform: AffineTransform, fixed: Layer,
                   moving: Layer, *, inverse: bool = False, source_shown: np.ndarray | None = None,
                   drawn_on_target: bool = False, data: np.ndarray | None = None) -> Layer:
    """``layer`` carried onto the other image's grid, as a new layer.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the new layer is added.
    layer : Layer
        Image, Labels, Points or Shapes layer in the moving image's frame (in the fixed
        image's frame with ``inverse``).
    transform : AffineTransform or DisplacementFieldTransform
        Moving -> fixed pixel transform.
    fixed, moving : Layer
        The registered image layers (their grids: scale, translate and size).
    inverse : bool
        ``False``: moving frame -> fixed grid. ``True``: fixed frame -> moving grid.
    source_shown : np.ndarray, optional
        3x3 (row, col) data -> world matrix of the source image as napari showed it when the
        layer was drawn over it (the registered preview); default: the layer lies on its grid
        (see the module).
    drawn_on_target : bool
        A points or shapes layer drawn over the moving image shown warped onto the target's grid
        (a deformable result's review): only put on that grid, where it was drawn.
    data : np.ndarray, optional
        An image or labels layer already carried (:func:`carried_pixels`, e.g. in a worker).

    Returns
    -------
    Layer
        The new layer, on the target image layer's grid, with the transform in its metadata.
    """
    name = f"{layer.name} (on {moving.name})" if inverse else f"{layer.name} (registered)"
    earlier = _earlier_result(viewer, name)
    index = None if earlier is None else viewer.layers.index(earlier)
    if earlier is not None:
        viewer.layers.remove(earlier)  # first: the new layer takes its name, not "[1]"
    new = _carried_layer(viewer, layer, name, transform, fixed, moving, inverse=inverse,
                         source_shown=source_shown, drawn_on_target=drawn_on_target, data=data)
    if inverse:  # on the moving image as it is shown (placed by the result, or not), as its CoMIR
        new.affine = np.asarray(moving.affine.affine_matrix)
    if earlier is not None:  # where it was, as the person had set it to show
        viewer.layers.move(viewer.layers.index(new), index)
        _show_as(new, earlier)
    return new


def _show_as(new: Layer, earlier: Layer) -> None:
    """``new`` shown as the person had set ``earlier`` to show (the same layer, carried again)."""
    new.opacity, new.blending, new.visible = earlier.opacity, earlier.blending, earlier.visible
    if isinstance(new, Image) and isinstance(earlier, Image) and not new.rgb:
        new.colormap, new.gamma = earlier.colormap, earlier.gamma
        new.contrast_limits = earlier.contrast_limits


def carried_onto(viewer, moving: Layer) -> list[Layer]:
    """The layers carried from the fixed image onto ``moving``'s grid: they lie on the moving
    image, and are placed and shown with it."""
    return [layer for layer in viewer.layers
            if layer.metadata.get("comir_direction") == "fixed → moving"
            and layer.metadata.get("comir_moving") == moving.name]


def _earlier_result(viewer, name: str) -> Layer | None:
    """The layer ``name`` when an earlier apply made it (a user's own layer is never replaced)."""
    if name not in viewer.layers or "comir_direction" not in viewer.layers[name].metadata:
        return None
    return viewer.layers[name]


def _carried_layer(viewer, layer: Layer, name: str, transform, fixed: Layer, moving: Layer, *,
                   inverse: bool, source_shown: np.ndarray | None, drawn_on_target: bool,
                   data: np.ndarray | None) -> Layer:
    """The new layer of :func:`apply_to_layer`, added to ``viewer``."""
    source, target = (fixed, moving) if inverse else (moving, fixed)
    target_grid = dict(scale=tuple(target.scale)[-2:], translate=tuple(target.translate)[-2:])
    meta = {TRANSFORM_KEY: transform.to_dict(), "comir_fixed": fixed.name,
            "comir_moving": moving.name,
            "comir_direction": "fixed → moving" if inverse else "moving → fixed"}
    if drawn_on_target:  # the field applied as shown (the review lies on the target's grid)
        transform, to_source = AffineTransform.rigid(), _data_to_source_rc(layer, target,
                                                                           grid_matrix(target))
    else:
        to_source = _data_to_source_rc(layer, source, source_shown)
    if isinstance(layer, (Image, Labels)):
        if data is None:
            data = carried_pixels(layer, transform, fixed, moving, inverse=inverse,
                                  source_shown=source_shown)
        if isinstance(layer, Labels):
            return viewer.add_labels(data, name=name, metadata=meta, **target_grid)
        return viewer.add_image(data, name=name, rgb=layer.rgb,
                                colormap=None if layer.rgb else layer.colormap,
                                contrast_limits=layer.contrast_limits, metadata=meta, **target_grid)
    if isinstance(layer, Points):
        data = transform_points_rc(layer.data, transform, inverse=inverse,
                                   data_to_source_rc=to_source)
        return viewer.add_points(data, name=name, features=layer.features, size=layer.size,
                                 face_color=layer.face_color, border_color=layer.border_color,
                                 symbol=layer.symbol, metadata=meta, **target_grid)
    if isinstance(layer, Shapes):
        shapes = [transform_points_rc(vertices, transform, inverse=inverse,
                                      data_to_source_rc=to_source) for vertices in layer.data]
        return viewer.add_shapes(shapes, shape_type=layer.shape_type, name=name, metadata=meta,
                                 features=layer.features, face_color=layer.face_color,
                                 edge_color=layer.edge_color, edge_width=layer.edge_width,
                                 **target_grid)
    raise InputError(f"cannot transform a {type(layer).__name__} layer")
