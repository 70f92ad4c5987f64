"""What the review overlay shows: two grey channels, one per image, that agree where the images do.

The overlay adds the fixed channel in green to the moving one in magenta (red + blue). Where the
registration is right, the same structures light up in both and turn white; where it is wrong
they lie side by side, green beside magenta. That reads only if the two channels carry the same
structures at a fine scale. Broad stain density does not: an eosin-dense core is magenta all over
whether or not it is aligned. The views:

``"structure"`` (default)
    Local contrast of what both images show: detail of about ``feature_px`` that is brighter than
    its surroundings (:func:`local_contrast`, after a light smoothing that removes pixel noise and
    JPEG blocks). For a colour bright field against a dark-field image (H&E against SHG
    or fluorescence), the bright field's stain hue (:func:`stain_hue`): eosin-pink collagen and
    stroma bright, haematoxylin-purple nuclei dark, as SHG shows collagen. Against another bright
    field (H&E against IHC), or for a grey image, the tissue density (grey, inverted when the
    background is bright).
``"eosin"`` / ``"haematoxylin"``
    The stain's density by colour deconvolution (``skimage.color.rgb2hed``) of every colour
    bright field; a grey image shows its tissue density.
``"comir"``
    The CoMIRs (given instead of the images): their first principal component, local contrast as
    for ``"structure"``.

:func:`suggested_view` picks the view for a pair: structure when either image is a colour bright
field, the CoMIRs otherwise (a grey bright field against SHG shows too little of the collagen).

Every channel is float32 in [0, 1], ready to show with contrast limits (0, 1). The moving channel
stays on the moving image's grid: the overlay places it by the transform (or resample it with
:func:`~napari_comir.core.resampling.resample` to compare on the fixed grid).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .defaults import DEFAULT_REVIEW_FEATURE_PX, DEFAULT_REVIEW_VIEW, REVIEW_VIEWS
from .errors import InputError

VIEWS = REVIEW_VIEWS
_LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)
#: Smoothing (Gaussian sigma) before the local contrast, as a fraction of the feature size: at
#: 8 px it removes pixel noise and JPEG blocks and forgives the 1-2 px a good registration is off by.
SMOOTHING = 0.25
#: Local contrast shown at full brightness (in local standard deviations).
FULL_CONTRAST = 2.5
#: Floor of the local variance, as a fraction of the image's variance: flat background stays dark
#: instead of showing its amplified noise.
_VARIANCE_FLOOR = 0.2
#: A pixel "shows one colour" when it is lit (its brighter channel at least this) and its dimmer
#: channel is below half the brighter one.
LIT = 0.3


def _check_image(image, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 2 or image.size == 0:
        raise InputError(f"{name} image must be (rows, cols) grey or (rows, cols, channels), "
                         f"got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or not np.all(np.isfinite(image)):
        raise InputError(f"{name} image must hold finite numbers")
    return image


def _unit(image: np.ndarray) -> np.ndarray:
    """Float32 scaled by the dtype's range (integers) or the maximum (floats beyond 1)."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    image = image.astype(np.float32)
    top = float(image.max())
    return image / top if top > 1.0 else image


def _grey(image: np.ndarray) -> np.ndarray:
    unit = _unit(image)
    return unit[..., :3] @ _LUMINANCE if unit.ndim == 3 and unit.shape[-1] >= 3 else (
        unit if unit.ndim == 2 else unit.mean(axis=-1))


def _sample(image: np.ndarray) -> np.ndarray:
    """Every n-th row and column, about 512 of each: percentiles of a large image, fast."""
    return image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]


def _is_colour(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] >= 3


def is_bright_field(image, median_share: float = 0.5) -> bool:
    """Whether the background is bright: the median grey lies above ``median_share`` of its
    1-99 % range (tissue on a white or grey slide, not signal on black)."""
    grey = _grey(_sample(np.asarray(image)))
    low, high = np.percentile(grey, [1.0, 99.0])
    return bool(np.median(grey) > low + median_share * (high - low))


def is_colour_bright_field(image) -> bool:
    """Whether ``image`` is a stained bright field: colour (3+ channels) on a bright background."""
    return _is_colour(np.asarray(image)) and is_bright_field(image)


def stretch(channel, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """``channel`` mapped linearly from its ``low``-``high`` percentiles to [0, 1], clipped (float32)."""
    channel = np.asarray(channel, np.float32)
    lo, hi = np.percentile(_sample(channel), [low, high])
    return np.clip((channel - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0).astype(np.float32)


def tissue_density(image) -> np.ndarray:
    """Grey that is bright where there is tissue (inverted for a bright field), float32, not
    stretched."""
    image = np.asarray(image)
    grey = _grey(image)
    return (1.0 - grey) if is_bright_field(image) else grey


def _compressed(density: np.ndarray) -> np.ndarray:
    """Log-compressed: SHG and fluorescence are heavy-tailed, and a few bright fibres would
    otherwise set the local contrast of everything around them."""
    density = density - density.min()
    top = float(np.percentile(_sample(density), 99.5))
    return np.log1p(density * (100.0 / top)) if top > 0 else density


def stain_density(image, stain: str) -> np.ndarray:
    """The density of ``stain`` ("eosin" or "haematoxylin") in a colour bright field, by colour
    deconvolution (``skimage.color.rgb2hed``); the tissue density of any other image."""
    image = np.asarray(image)
    if not is_colour_bright_field(image):
        return tissue_density(image)
    from skimage.color import rgb2hed

    return rgb2hed(np.clip(_unit(image)[..., :3], 0.0, 1.0))[..., ("haematoxylin", "eosin").index(stain)
                                                              ].astype(np.float32)


def stain_hue(image) -> np.ndarray:
    """The red share of a colour bright field's staining: (red - blue) / (green absorbed + 0.05).

    Eosin and haematoxylin both absorb green; eosin pink (collagen, stroma; and DAB brown) keeps
    the red, haematoxylin purple (nuclei) the blue. Dividing by the staining makes pale and dense
    stroma alike (on the raw BF/SHG pairs it separated right from wrong better than red minus
    blue alone: docs/benchmarks.md, "Review views"); the 0.05 keeps the white background calm.
    """
    unit = np.clip(_unit(np.asarray(image))[..., :3], 0.0, 1.0)
    return (unit[..., 0] - unit[..., 2]) / (1.05 - unit[..., 1])


def local_contrast(channel, feature_px: float = DEFAULT_REVIEW_FEATURE_PX) -> np.ndarray:
    """Detail of about ``feature_px`` brighter than its surroundings, in [0, 1].

    The channel, smoothed by a Gaussian of :data:`SMOOTHING` times ``feature_px``, minus its
    Gaussian mean over ``feature_px``, divided by the local standard deviation there (floored, so
    flat background stays dark); shown from 0 to :data:`FULL_CONTRAST` standard deviations.

    Parameters
    ----------
    channel : np.ndarray
        (rows, cols) grey.
    feature_px : float
        Gaussian sigma of the surroundings, in pixels.

    Returns
    -------
    np.ndarray
        (rows, cols) float32 in [0, 1].
    """
    channel = ndimage.gaussian_filter(np.asarray(channel, np.float32), SMOOTHING * feature_px)
    detail = channel - ndimage.gaussian_filter(channel, feature_px)
    variance = ndimage.gaussian_filter(detail * detail, feature_px)
    z = detail / np.sqrt(variance + _VARIANCE_FLOOR * float(channel.var()) + 1e-12)
    return np.clip(z / FULL_CONTRAST, 0.0, 1.0).astype(np.float32)


def _structure_signal(image: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """What ``image`` shows that ``partner`` shows too (see the module's ``"structure"``)."""
    if is_colour_bright_field(image) and not is_bright_field(partner):
        return stain_hue(image)
    density = tissue_density(image)
    return density if is_bright_field(image) else _compressed(density)


def _comir_grey(fixed_comir: np.ndarray, moving_comir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both CoMIRs projected on the fixed one's first principal axis (they share one space)."""
    fixed_comir = fixed_comir.reshape(*fixed_comir.shape[:2], -1).astype(np.float32)
    moving_comir = moving_comir.reshape(*moving_comir.shape[:2], -1).astype(np.float32)
    if fixed_comir.shape[-1] != moving_comir.shape[-1]:
        raise InputError(f"the CoMIRs have {fixed_comir.shape[-1]} and {moving_comir.shape[-1]} "
                         "channels: give the two CoMIRs of one model")
    samples = fixed_comir[:: max(1, fixed_comir.shape[0] // 256),
                          :: max(1, fixed_comir.shape[1] // 256)].reshape(-1, fixed_comir.shape[-1])
    mean = samples.mean(axis=0)
    axis = np.linalg.svd(samples - mean, full_matrices=False)[2][0]
    return (fixed_comir - mean) @ axis, (moving_comir - mean) @ axis


def suggested_view(fixed, moving) -> str:
    """The view that reads best for this pair of images: :data:`DEFAULT_REVIEW_VIEW` when either
    is a colour bright field, else ``"comir"``.

    A grey bright field against SHG has no stain hue, and its tissue density hardly follows the
    collagen: on the 20 raw BF/SHG pairs in grey, the structure view told 8 px off from right by a
    median NCC gap of 0.02, the CoMIR view by 0.23 (docs/benchmarks.md, "Review views").
    """
    return DEFAULT_REVIEW_VIEW if any(map(is_colour_bright_field, (fixed, moving))) else "comir"


def review_channels(fixed, moving, view: str = DEFAULT_REVIEW_VIEW, *,
                    feature_px: float = DEFAULT_REVIEW_FEATURE_PX) -> tuple[np.ndarray, np.ndarray]:
    """The two grey channels of the review overlay: green for the fixed, magenta for the moving.

    Parameters
    ----------
    fixed, moving : np.ndarray
        (rows, cols) grey or (rows, cols, 3) RGB images, any size each (the moving one is not
        resampled). For ``view="comir"``, their CoMIRs, (rows, cols[, channels]).
    view : {"structure", "eosin", "haematoxylin", "comir"}
        What to show (see the module's description); default :data:`DEFAULT_REVIEW_VIEW`.
    feature_px : float
        Size in pixels of the structures the "structure" and "comir" views keep.

    Returns
    -------
    fixed_grey, moving_grey : np.ndarray
        float32 in [0, 1], of the fixed's and the moving's (rows, cols).

    Raises
    ------
    InputError
        An unknown view, an image that is not 2-D grey or RGB, CoMIRs of different channel counts.
    """
    if view not in VIEWS:
        raise InputError(f"review view must be one of {', '.join(VIEWS)}, got {view!r}")
    if not feature_px > 0:
        raise InputError(f"review feature size must be a positive number of pixels, got {feature_px!r}")
    fixed, moving = _check_image(fixed, "fixed"), _check_image(moving, "moving")
    if view == "structure":
        return (local_contrast(_structure_signal(fixed, moving), feature_px),
                local_contrast(_structure_signal(moving, fixed), feature_px))
    if view == "comir":
        return tuple(local_contrast(grey, feature_px) for grey in _comir_grey(fixed, moving))
    # The percentiles of the overlay before these views existed (its eosin view is the baseline).
    return stretch(stain_density(fixed, view), 1.0, 99.5), stretch(stain_density(moving, view), 1.0, 99.0)


def overlay_rgb(fixed_grey, moving_grey) -> np.ndarray:
    """The overlay as napari draws it (additive blending): green = fixed, red and blue = moving.

    Parameters
    ----------
    fixed_grey, moving_grey : np.ndarray
        (rows, cols) channels in [0, 1] on one grid (resample the moving one first).

    Returns
    -------
    np.ndarray
        (rows, cols, 3) uint8 RGB.
    """
    fixed_grey, moving_grey = np.asarray(fixed_grey), np.asarray(moving_grey)
    if fixed_grey.shape != moving_grey.shape or fixed_grey.ndim != 2:
        raise InputError(f"the overlay needs two (rows, cols) channels of one shape, got "
                         f"{fixed_grey.shape} and {moving_grey.shape}")
    rgb = np.stack([moving_grey, fixed_grey, moving_grey], axis=-1)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def single_colour_fraction(fixed_grey, moving_grey, valid=None) -> float:
    """Fraction of the lit pixels that show one colour (green or magenta), not white.

    A pixel is lit when its brighter channel reaches :data:`LIT`, and shows one colour when its
    dimmer channel is below half the brighter one. A right registration shows fewer such pixels
    than a wrong one.

    Parameters
    ----------
    fixed_grey, moving_grey : np.ndarray
        (rows, cols) channels in [0, 1] on one grid.
    valid : np.ndarray of bool, optional
        Pixels to count (e.g. where the moving image covers the fixed grid).

    Returns
    -------
    float
        In [0, 1]; NaN when no pixel is lit.
    """
    brighter = np.maximum(fixed_grey, moving_grey)
    dimmer = np.minimum(fixed_grey, moving_grey)
    lit = brighter >= LIT
    if valid is not None:
        lit &= valid
    count = int(lit.sum())
    return float((lit & (dimmer < 0.5 * brighter)).sum() / count) if count else float("nan")
