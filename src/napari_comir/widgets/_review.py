"""The review of a registration: two layers of its own on top of the user's (never changed).

Views (:data:`VIEWS`): ``overlay`` — the fixed image in green added over the moving image in
magenta, each as its fine structure (``core.review``'s structure view: for an H&E the red share
of its staining, so eosin-dense cores do not turn magenta all over); where they agree the tissue
turns white, a misregistration shows green and magenta copies side by side. ``CoMIRs`` — the
same overlay of the two CoMIRs (made to agree; the view for a grey bright field).
``checkerboard`` — squares of each image in turn. ``flicker`` — the two review layers in turn
(the review panel's timer). ``agreement`` — the CoMIRs' local correlation. ``deformation`` —
how far a deformable result moved each point beyond its affine part. ``off`` — the user's
layers only (after Accept: the accepted layer). The moving review layer follows the
transform through its ``affine`` (a lossless preview).
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Layer

from ..core.errors import InputError
from ..core.field_transform import DisplacementFieldTransform, coverage, resample
from ..core.pyramid_deformable import field_to_levels
from ..core.registration.levels import to_level
from ..core.review import review_channels, suggested_view
from ..core.transforms import AffineTransform
from ._layers import coarse_view, percentile_limits, upsert_image, world_affine

VIEWS = ("overlay", "CoMIRs", "checkerboard", "flicker", "agreement", "deformation", "off")
DEFAULT_VIEW = "overlay"
#: Views made from the CoMIRs (none on whole slides).
COMIR_VIEWS = ("CoMIRs", "agreement")
#: Views that show the overlay's two layers; a field warps the moving one (a layer's affine
#: cannot undo a field: it is refilled for "before").
OVERLAY_VIEWS = ("overlay", "CoMIRs", "flicker")
#: Views that show the moving image warped through a deformable result onto the fixed grid.
WARPED_VIEWS = (*OVERLAY_VIEWS, "checkerboard")
CHECKERBOARD = "review: checkerboard"
AGREEMENT = "review: agreement (NCC)"
DEFORMATION = "review: deformation (px)"
#: The deformation map over the images: the tissue it moved stays in sight under it.
DEFORMATION_OPACITY = 0.6
#: Side (px) of the checkerboard's squares on the fixed image, and of the agreement's windows.
CHECKER_SQUARE, AGREEMENT_WINDOW = 32, 32
_REVIEW_KEY = "comir_review_of"


def review_names(fixed: Layer, moving: Layer) -> tuple[str, str]:
    """Names of the two review layers of a fixed / moving pair."""
    return f"review: {fixed.name} (green)", f"review: {moving.name} (magenta)"


def review_images(fixed: Layer, moving: Layer, transform=None) -> dict:
    """The overlay's grey images of a pair (the structure both modalities share,
    :func:`napari_comir.core.review.review_channels`), the grids they lie on (for a whole slide a
    coarse level, placed over it) and the view that reads best for the pair. A deformable
    ``transform`` warps the moving one onto the fixed grid here (a layer's affine cannot show a
    field). Pure computation on the layers' data: run it in the worker."""
    (fixed_data, fixed_grid, fixed_down), (moving_data, moving_grid, moving_down) = (
        coarse_view(fixed), coarse_view(moving))
    fixed_grey, moving_grey = review_channels(fixed_data, moving_data, "structure")
    best = "CoMIRs" if suggested_view(fixed_data, moving_data) == "comir" else "overlay"
    return _through_field({"fixed": display_bytes(fixed_grey), "moving": display_bytes(moving_grey),
                           "fixed_grid": fixed_grid, "moving_grid": moving_grid,
                           "best_view": best}, transform, fixed_down, moving_down)


def _through_field(images: dict, transform, fixed_down: int = 1, moving_down: int = 1) -> dict:
    """``images`` with the moving one warped onto the fixed grid when ``transform`` is
    deformable (a layer's affine cannot show a field; whole slides: between the coarse levels
    shown), the unwarped one kept as ``moving_before`` for "before"; unchanged otherwise."""
    if is_deformable(transform):
        level = field_to_levels(transform, fixed_down, moving_down)
        images.update(moving_before=images["moving"], moving_before_grid=images["moving_grid"],
                      moving=resample(images["moving"], level, images["fixed"].shape),
                      moving_grid=images["fixed_grid"], moving_on_fixed=True)
    return images


def is_deformable(transform) -> bool:
    return isinstance(transform, DisplacementFieldTransform)


def display_bytes(grey: np.ndarray) -> np.ndarray:
    """A [0, 1] grey image as uint8: a quarter of a float texture to upload, and napari has no
    contrast to compute."""
    return np.round(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8)


def show_review_layer(viewer, fixed: Layer, moving: Layer, images: dict, role: str,
                      transform: AffineTransform) -> Layer:
    """Add (or update) one overlay layer on top: ``role`` "moving" (magenta, placed by
    ``transform``; images a field warped: those, or unwarped when ``transform`` is not the
    field, i.e. "before") or "fixed" (green, added over the moving one)."""
    name = review_names(fixed, moving)[role == "moving"]
    if role == "moving":
        on_fixed = bool(images.get("moving_on_fixed")) and is_deformable(transform)
        data, grid = ((images["moving"], images["moving_grid"]) if on_fixed or
                      "moving_before" not in images else
                      (images["moving_before"], images["moving_before_grid"]))
        layer = upsert_image(viewer, name, data, **grid, colormap="magenta",
                             blending="translucent", contrast_limits=(0, 255),
                             metadata={_REVIEW_KEY: moving.name, "comir_on_fixed": on_fixed})
        layer.affine = np.eye(3) if on_fixed else world_affine(fixed, moving, transform)
    else:
        layer = upsert_image(viewer, name, images["fixed"], **images["fixed_grid"], colormap="green",
                             blending="additive", contrast_limits=(0, 255),
                             metadata={_REVIEW_KEY: fixed.name})
    fixed_name = review_names(fixed, moving)[0]
    if role == "moving" and fixed_name in viewer.layers:  # under the fixed one, always
        viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(fixed_name))
    else:
        move_above_images(viewer, layer)
    return layer


def style_overlay(fixed_layer: Layer, moving_layer: Layer, flicker: bool) -> None:
    """The overlay adds the fixed layer in green over the moving one in magenta; flicker shows
    them in turn, each grey and opaque, so that only what is misregistered jumps (the green one
    added over the user's images, then the magenta one alone, flashed the whole picture)."""
    fixed_layer.colormap, fixed_layer.blending = ("gray", "opaque") if flicker else ("green", "additive")
    moving_layer.colormap, moving_layer.blending = (("gray", "opaque") if flicker else
                                                    ("magenta", "translucent"))


def move_above_images(viewer, layer: Layer) -> None:
    """Move ``layer`` just above the topmost other image: over the images it reviews, under the
    points, shapes and labels a person drew, which stay in sight (opaque review layers hid them,
    and a second registration slid the review pair around a layer applied in between)."""
    images = [index for index, other in enumerate(viewer.layers)
              if other is not layer and isinstance(other, Image)]
    viewer.layers.move(viewer.layers.index(layer), images[-1] + 1 if images else 0)


def show_review(viewer, fixed: Layer, moving: Layer, images: dict,
                transform: AffineTransform) -> tuple[Layer, Layer]:
    """Both overlay layers (fixed, moving) on top, the moving one placed by ``transform``."""
    moving_layer = show_review_layer(viewer, fixed, moving, images, "moving", transform)
    return show_review_layer(viewer, fixed, moving, images, "fixed", transform), moving_layer


def extra_review_layers(viewer) -> list[Layer]:
    """The checkerboard and agreement layers, if shown."""
    return [viewer.layers[name] for name in (CHECKERBOARD, AGREEMENT, DEFORMATION)
            if name in viewer.layers]


def _placed_with_moving(viewer, fixed: Layer, moving: Layer) -> list[Layer]:
    """The moving image, its CoMIR, its landmarks and the layers carried onto it from the fixed
    image (:func:`._apply.apply_to_layer`): the layers a result places."""
    from ._apply import carried_onto
    from ._landmarks import landmark_name
    from .representations import comir_layer_name

    names = (moving.name, comir_layer_name(moving), landmark_name(moving, fixed))
    return [viewer.layers[name] for name in names if name in viewer.layers] + \
        carried_onto(viewer, moving)


def place_moving(viewer, fixed: Layer, moving: Layer, transform: AffineTransform,
                 review_layers) -> None:
    """Place the moving image, its CoMIR, its landmarks and its review layer by ``transform``."""
    for layer in _placed_with_moving(viewer, fixed, moving):
        layer.affine = world_affine(fixed, layer, transform)
    for layer in review_layers[1:2]:  # maybe a coarse level: placed through the moving's grid
        if layer in viewer.layers and not layer.metadata.get("comir_on_fixed"):
            layer.affine = world_affine(fixed, moving, transform)
    if CHECKERBOARD in viewer.layers and viewer.layers[CHECKERBOARD].visible:
        show_checkerboard(viewer, fixed, moving, transform)


def unplace_moving(viewer, fixed: Layer, moving: Layer) -> None:
    """The moving image (its CoMIR, its landmarks) back on its own grid: its result is gone."""
    for layer in _placed_with_moving(viewer, fixed, moving):
        layer.affine = np.eye(3)


def switch_view(viewer, fixed: Layer, moving: Layer, result, review_layers, view: str,
                after: bool, images: dict, comirs: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[Layer, ...]:
    """Show ``view`` of a result; returns the overlay layers (refilled for the CoMIRs view).
    ``images``: the overlay's (:func:`review_images`, made once per result); ``comirs``: (fixed,
    moving) CoMIRs, (rows, cols, channels), for :data:`COMIR_VIEWS`."""
    transform = result.transform if after else AffineTransform.rigid()
    for layer in extra_review_layers(viewer):
        layer.visible = False
    filled = None  # what the overlay layers were filled with now, if they were
    if view == "CoMIRs":
        fixed_grey, moving_grey = review_channels(*comirs, "comir")
        comir_images = _through_field(
            {"fixed": display_bytes(fixed_grey), "moving": display_bytes(moving_grey),
             "fixed_grid": _grid_of(fixed), "moving_grid": _grid_of(moving)}, result.transform)
        review_layers, filled = show_review(viewer, fixed, moving, comir_images, transform), "CoMIRs"
    elif view in ("overlay", "flicker") and review_layers and (
            review_layers[0].metadata.get("comir_review_view") == "CoMIRs" or
            review_layers[1].metadata.get("comir_on_fixed") != is_deformable(transform)):
        # or before/after a field
        review_layers, filled = show_review(viewer, fixed, moving, images, transform), "images"
    for layer in review_layers:
        if filled is not None:  # another view (a checkerboard) leaves them holding the CoMIRs
            layer.metadata["comir_review_view"] = filled
        layer.visible = view in OVERLAY_VIEWS
    if len(review_layers) == 2:
        style_overlay(*review_layers, flicker=view == "flicker")
    if view == "checkerboard":
        show_checkerboard(viewer, fixed, moving, transform)
    elif view == "agreement":
        show_agreement(viewer, fixed, *comirs, transform)
    elif view == "deformation":
        show_deformation(viewer, fixed, result.transform)
    return review_layers


def select_shown(viewer) -> None:
    """Select the topmost shown layer when only hidden layers were selected (the last view's
    map, a layer hidden with the moving image): the layer controls then act on what is shown."""
    selection = viewer.layers.selection
    if selection and all(not layer.visible for layer in selection):
        shown = [layer for layer in viewer.layers if layer.visible]
        selection.active = shown[-1] if shown else None


def _grid_of(layer: Layer) -> dict:
    return {"scale": tuple(layer.scale)[-2:], "translate": tuple(layer.translate)[-2:]}


def _display_grey(image: np.ndarray) -> np.ndarray:
    """Percentile-stretched float image in [0, 1] (grey or RGB), for the checkerboard."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = percentile_limits(image)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def checkerboard(fixed: np.ndarray, moving_on_fixed: np.ndarray, square: int,
                 moving_inside: np.ndarray | None = None) -> np.ndarray:
    """Alternate squares of the fixed and the (already resampled) moving image; the fixed
    image alone where ``moving_inside`` (bool, the fixed grid) says the moving one does not
    reach, so its squares mark the overlap (black squares there read as empty tissue)."""
    a, b = _display_grey(fixed), _display_grey(moving_on_fixed)
    if a.ndim != b.ndim:  # one RGB, one grey: show both as RGB
        a, b = (np.repeat(x[..., None], 3, -1) if x.ndim == 2 else x[..., :3] for x in (a, b))
    rows, cols = np.indices(a.shape[:2])
    mask = ((rows // square + cols // square) % 2).astype(bool)
    if moving_inside is not None:
        mask &= moving_inside
    if a.ndim == 3:
        mask = mask[..., None]
    return np.where(mask, b, a)


def show_checkerboard(viewer, fixed: Layer, moving: Layer, transform: AffineTransform,
                      square: int = CHECKER_SQUARE) -> Layer:
    """The checkerboard of the pair under ``transform`` (whole slides: on coarse levels)."""
    (fixed_data, fixed_grid, fixed_down), (moving_data, _, moving_down) = (
        coarse_view(fixed), coarse_view(moving))
    transform = (field_to_levels(transform, fixed_down, moving_down) if is_deformable(transform)
                 else to_level(transform, fixed_down, moving_down))
    warped = resample(moving_data, transform, fixed_data.shape[:2])
    inside = coverage(np.shape(moving_data), transform, fixed_data.shape[:2]) > 0.5
    board = checkerboard(fixed_data, warped, max(1, square // fixed_down), inside)
    layer = upsert_image(viewer, CHECKERBOARD, board, rgb=board.ndim == 3, **fixed_grid,
                         contrast_limits=(0.0, 1.0), blending="translucent", visible=True,
                         metadata={_REVIEW_KEY: fixed.name})
    if board.ndim == 2:
        layer.colormap = "gray"
    move_above_images(viewer, layer)
    return layer


def show_agreement(viewer, fixed: Layer, fixed_comir: np.ndarray, moving_comir: np.ndarray,
                   transform) -> Layer:
    """The CoMIRs' local NCC under ``transform`` on the fixed grid (green agree, pink disagree)."""
    from ..core.evaluation import agreement_map

    ncc, _ = agreement_map(fixed_comir, moving_comir, transform, AGREEMENT_WINDOW)
    # NaN where the images do not overlap: napari leaves it transparent (as 0 it read as white,
    # i.e. "neither agree nor disagree", over the user's images).
    layer = upsert_image(viewer, AGREEMENT, ncc.astype(np.float32), like=fixed, colormap="PiYG",
                         contrast_limits=(-1.0, 1.0), blending="translucent", visible=True,
                         metadata={_REVIEW_KEY: fixed.name})
    layer.colorbar.visible = True  # which colour is agreement: -1 to 1, beside the view
    move_above_images(viewer, layer)
    return layer


def show_deformation(viewer, fixed: Layer, transform) -> Layer:
    """How far the deformable stage moved each point (fixed px) beyond the affine result, on
    the fixed grid (the field's nodes, ``spacing_px`` apart)."""
    if not is_deformable(transform):
        raise InputError("no deformation: register with the 'deformable' transform")
    magnitude = transform.displacement_magnitude().astype(np.float32)
    scale = np.asarray(fixed.scale)[-2:] * transform.spacing_px
    layer = upsert_image(viewer, DEFORMATION, magnitude, scale=tuple(scale),
                         translate=tuple(np.asarray(fixed.translate)[-2:]), colormap="inferno",
                         contrast_limits=(0.0, max(float(magnitude.max()), 1e-3)),
                         blending="translucent", opacity=DEFORMATION_OPACITY, visible=True,
                         metadata={_REVIEW_KEY: fixed.name})
    layer.colorbar.visible = True  # the colours' px, beside the view
    move_above_images(viewer, layer)
    return layer
