"""The review overlay: the fixed image in green over the moving image in magenta, both readable.

A bright-field H&E is opaque RGB: overlaid as it is, it hides the SHG, and CoMIRs blended over it
wash the canvas out. The review shows two layers of its own on top of the user's (which are
never changed): the moving image as grey in magenta, inverted when its background is bright (H&E:
tissue becomes bright; an H&E in colour shows its eosin stain, what collagen takes up), and the
fixed image in green, added on top. Where the two agree the
tissue turns white-ish; a misregistration shows as green and magenta side by side. The moving
review layer follows the found transform through its ``affine`` (a lossless preview).
"""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from ._layers import percentile_limits, upsert_image, world_affine

_LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)


def review_names(fixed: Layer, moving: Layer) -> tuple[str, str]:
    """Names of the two review layers of a fixed / moving pair."""
    return f"review: {fixed.name} (green)", f"review: {moving.name} (magenta)"


def _grey(data: np.ndarray) -> np.ndarray:
    grey = np.asarray(data, np.float32)
    return grey[..., :3] @ _LUMINANCE if grey.ndim == 3 else grey


def _bright_background(grey: np.ndarray) -> bool:
    """Whether the median lies in the upper half of the 1-99 % range (a bright field)."""
    low, high = percentile_limits(grey)
    return bool(np.median(grey) > (low + high) / 2)


def review_image(data: np.ndarray) -> np.ndarray:
    """An image as float32 grey, inverted when its background is bright (tissue turns bright)."""
    grey = _grey(data)
    if not _bright_background(grey):
        return grey
    low, high = percentile_limits(grey)
    return high + low - grey


def moving_review_image(data: np.ndarray) -> np.ndarray:
    """The moving image for the review: for a colour bright field (RGB, bright background) its
    eosin stain, what collagen takes up and SHG shows (colour deconvolution,
    ``skimage.color.rgb2hed``); otherwise :func:`review_image`."""
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[-1] >= 3 and _bright_background(_grey(data)):
        from skimage.color import rgb2hed

        scale = 255.0 if data.dtype == np.uint8 else max(float(np.max(data)), 1e-6)
        return rgb2hed(np.clip(data[..., :3] / scale, 0.0, 1.0))[..., 1].astype(np.float32)
    return review_image(data)


def show_review(viewer, fixed: Layer, moving: Layer, fixed_data: np.ndarray,
                moving_data: np.ndarray, transform, fixed_grid: dict | None = None,
                moving_grid: dict | None = None) -> tuple[Layer, Layer]:
    """Add (or update) the review layers on top, the moving one placed by ``transform``.

    ``fixed_grid`` / ``moving_grid``: ``scale`` and ``translate`` of data that is a coarse level
    of a whole slide (see :func:`~napari_comir.widgets._layers.coarse_view`); default the layers'.
    """
    fixed_name, moving_name = review_names(fixed, moving)
    grey, fixed_grey = moving_review_image(moving_data), review_image(fixed_data)
    moving_layer = upsert_image(viewer, moving_name, grey, like=moving, **(moving_grid or {}),
                                colormap="magenta",
                                blending="translucent", contrast_limits=percentile_limits(grey),
                                metadata={"comir_review_of": moving.name})
    moving_layer.affine = world_affine(fixed, moving, transform)
    fixed_layer = upsert_image(viewer, fixed_name, fixed_grey, like=fixed, **(fixed_grid or {}),
                               colormap="green",
                               blending="additive",
                               contrast_limits=percentile_limits(fixed_grey, 1.0, 99.5),
                               metadata={"comir_review_of": fixed.name})
    for layer in (moving_layer, fixed_layer):  # on top, fixed last (added onto the moving)
        viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
    return fixed_layer, moving_layer


def _display_grey(image: np.ndarray) -> np.ndarray:
    """Percentile-stretched float image in [0, 1] (grey or RGB), for the checkerboard."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = percentile_limits(image)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def checkerboard(fixed: np.ndarray, moving_on_fixed: np.ndarray, square: int) -> np.ndarray:
    """Alternate squares of the fixed and the (already resampled) moving image."""
    a, b = _display_grey(fixed), _display_grey(moving_on_fixed)
    if a.ndim != b.ndim:  # one RGB, one grey: show both as RGB
        a, b = (np.repeat(x[..., None], 3, -1) if x.ndim == 2 else x[..., :3] for x in (a, b))
    rows, cols = np.indices(a.shape[:2])
    mask = ((rows // square + cols // square) % 2).astype(bool)
    if a.ndim == 3:
        mask = mask[..., None]
    return np.where(mask, b, a)


AGREEMENT = "review: CoMIR agreement (local NCC)"
#: Side (px) of the windows the agreement map compares.
AGREEMENT_WINDOW = 32


def show_agreement(viewer, fixed: Layer, fixed_comir: np.ndarray, moving_comir: np.ndarray,
                   transform) -> Layer:
    """The CoMIRs' local NCC under ``transform`` on the fixed grid (green agree, pink disagree)."""
    from ..core.evaluation import local_ncc
    from ..core.transforms import resample

    moving_comir = moving_comir.reshape(*moving_comir.shape[:2], -1)
    fixed_comir = fixed_comir.reshape(*fixed_comir.shape[:2], -1)
    warped = resample(moving_comir, transform, fixed_comir.shape[:2], order=1)
    warped = warped.reshape(*fixed_comir.shape[:2], -1)
    inside = resample(np.ones(moving_comir.shape[:2], np.float32), transform,
                      fixed_comir.shape[:2]) > 0.999
    ncc = local_ncc(fixed_comir, warped, AGREEMENT_WINDOW, inside)
    layer = upsert_image(viewer, AGREEMENT, np.nan_to_num(ncc), like=fixed, colormap="PiYG",
                         contrast_limits=(-1.0, 1.0), blending="translucent", visible=True,
                         metadata={"comir_review_of": fixed.name})
    viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
    return layer
