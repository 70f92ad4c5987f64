"""The plan of a registration, made before any work: the images checked, the pixel-size plan
(pre-scale and scale range left to search) and the route (in memory, or coarse to fine)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..core.defaults import DEFORMABLE
from ..core.errors import InputError, RegistrationError
from ..core.inference import check_image, modality_spec
from ..core.io.slides import Slide
from ..core.pyramid import N_WINDOWS, OVERVIEW_SIDE, WINDOW_SIDE
from ..core.registration import MAX_ASPECT
from ..core.resampling import resample
from ..core.transforms import AffineTransform
from ..core.zoo import ComirModel
from .options import RegistrationOptions

LARGE_SIDE = 4096  # above this, registration goes through the coarse-to-fine pyramid
#: In-memory images with a side above this are registered coarse to fine as well (an overview
#: search, then windows at full resolution: :func:`~napari_comir.core.pyramid.register_pyramid`)
#: unless both CoMIRs are given: at 2048-4096 px the full-resolution CoMIRs, refinement and
#: final MI took 10-33 s on 2 cores (docs/benchmarks.md, "Speed by image size").
COARSE_TO_FINE_SIDE = 1536
#: The in-memory coarse-to-fine route's overview long side and window side (px), and windows.
IN_MEMORY_OVERVIEW_SIDE, IN_MEMORY_WINDOW, IN_MEMORY_WINDOWS = 512, 512, 3
#: Shortest side (px) any image's overview may have on that route (the synthetic 256² sets
#: register at any angle; a strip's or a small partner's overview would be thinner): else full
#: resolution.
MIN_OVERVIEW_SIDE = 256
#: Smallest side (px) of an image registered through CoMIRs: at 32-48 px, random noise against a
#: real SHG scored 0.95 (benchmarks/confidence.py).
MIN_SIDE = 64


@dataclass(frozen=True)
class RegistrationPlan:
    """What :func:`plan_registration` decided.

    Attributes
    ----------
    options : RegistrationOptions
        The options, with modalities and recorded pixel sizes filled in.
    pre_scale : float
        Fixed px per moving px the moving image is resampled by before its CoMIR (1: not).
    search_range : (float, float) or None
        Scales left to search after the pre-scale (``None``: the default range).
    large : bool
        Registered coarse to fine (:func:`napari_comir.core.pyramid.register_pyramid`).
    overview_side, window, n_windows : int
        The coarse-to-fine route's overview long side, window side and windows (px, px, count):
        smaller for images in memory under :data:`LARGE_SIDE`.
    in_memory : bool
        Coarse to fine on images in memory: the final refinement can run on them.
    """

    options: RegistrationOptions
    pre_scale: float
    search_range: tuple[float, float] | None
    large: bool
    overview_side: int = OVERVIEW_SIDE
    window: int = WINDOW_SIDE
    n_windows: int = N_WINDOWS
    in_memory: bool = False


def check_images(model: ComirModel, fixed_image, moving_image, options: RegistrationOptions) -> None:
    """Refuse images the networks cannot register (wrong channels, too small, too thin,
    constant), before any CoMIR is computed."""
    for name, image, modality in (("fixed", fixed_image, options.fixed_modality),
                                  ("moving", moving_image, options.moving_modality)):
        checked = check_image(image, modality_spec(model, modality),
                              f"{name} image (for {model.card.name}'s {modality!r} network)")
        if min(checked.shape[:2]) < MIN_SIDE:
            raise InputError(f"{name} image is too small to register: {checked.shape[0]}x"
                             f"{checked.shape[1]} px (need at least {MIN_SIDE}x{MIN_SIDE}: the "
                             "networks see a 16 px grid at their deepest level, and smaller images "
                             "match noise as well as tissue)")
        rows, cols = checked.shape[:2]
        if not isinstance(image, Slide) and max(rows, cols) > MAX_ASPECT * min(rows, cols):
            # as core.registration.register refuses it, but before the CoMIRs are computed
            raise InputError(f"{name} image is too thin to register: {rows} x {cols} px (at most "
                             f"{MAX_ASPECT:g}:1; cut a long strip into near-square pieces)")
        if isinstance(checked, np.ndarray) and np.ptp(checked) == 0:
            raise RegistrationError(f"{name} image is constant — nothing to register")


def plan_registration(model: ComirModel, fixed_image, moving_image, options: RegistrationOptions,
                      comirs_given: bool = False) -> RegistrationPlan:
    """Check the images and choose the pixel-size plan and the route; raises before any work.

    ``comirs_given``: both images' CoMIRs are at hand, so images in memory are registered on
    them at full resolution whatever their size (up to :data:`LARGE_SIDE`).
    """
    card = model.card
    options = RegistrationOptions.build(
        options, fixed_modality=options.fixed_modality or card.fixed_modality,
        moving_modality=options.moving_modality or card.moving_modality)
    # a slide may record its pixel size
    options = options.with_recorded_pixel_sizes(getattr(fixed_image, "pixel_size_um", None),
                                                getattr(moving_image, "pixel_size_um", None))
    pre_scale, search_range = options.scale_plan()
    check_images(model, fixed_image, moving_image, options)
    if options.initial_transform is None:
        check_scaled_sides(pre_scale, np.shape(fixed_image)[:2], np.shape(moving_image)[:2])
    lazy = isinstance(fixed_image, Slide) or isinstance(moving_image, Slide)
    if lazy and (options.method != "search" or options.initial_transform is not None):
        raise InputError("a whole slide (read lazily) is registered by the search method, coarse "
                         "to fine; landmarks and SIFT need images in memory")
    side = max(*np.shape(fixed_image)[:2], *np.shape(moving_image)[:2])
    shortest = min(*np.shape(fixed_image)[:2], *np.shape(moving_image)[:2])
    large = options.method == "search" and (lazy or side > LARGE_SIDE)
    if options.initial_transform is not None:
        pre_scale, large = 1.0, False  # refine from it on the images as they are
    if large:
        return RegistrationPlan(options, pre_scale, search_range, True)
    # In memory, 1.5-4k px: a small overview and a few full-resolution windows, unless the
    # result must hold full-resolution CoMIRs (given ones, a deformable stage) or starts
    # elsewhere (landmarks, SIFT) or the images are first resampled to one pixel size.
    if (side > COARSE_TO_FINE_SIDE and shortest * IN_MEMORY_OVERVIEW_SIDE >= MIN_OVERVIEW_SIDE * side
            and options.method == "search" and pre_scale == 1.0
            and options.initial_transform is None and options.transform != DEFORMABLE
            and not comirs_given):
        return RegistrationPlan(options, pre_scale, search_range, True, IN_MEMORY_OVERVIEW_SIDE,
                                IN_MEMORY_WINDOW, IN_MEMORY_WINDOWS, in_memory=True)
    return RegistrationPlan(options, pre_scale, search_range, False)


def scales(pre_scale: float) -> tuple[float, float]:
    """(fixed, moving) resampling factors that bring both images to the coarser pixel size: the
    finer image shrinks, so the pixels computed never exceed those given, whatever the ratio
    (enlarging the coarser one by 1:8 took 6 GiB for a 512² pair)."""
    return (1 / pre_scale, 1.0) if pre_scale > 1 else (1.0, pre_scale)


def check_scaled_sides(pre_scale: float, fixed_shape, moving_shape) -> None:
    """Refuse, before any work, images that at the coarser pixel size fall under MIN_SIDE."""
    for name, shape, scale in zip(("fixed", "moving"), (fixed_shape, moving_shape),
                                  scales(pre_scale), strict=True):
        if min(shape) * scale < MIN_SIDE:
            raise InputError(
                f"at the other image's pixel size the {name} image would be {shape[0] * scale:.0f} x "
                f"{shape[1] * scale:.0f} px, under the {MIN_SIDE} px needed: the pixel sizes differ "
                f"{max(pre_scale, 1 / pre_scale):.3g}-fold; at most {min(shape) / MIN_SIDE:.3g}-fold "
                "fits these images (check the pixel sizes, or crop the other image to the same area)")


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resampled by ``scale`` (new px per old px) about pixel (0, 0), low-passed first
    when it shrinks."""
    image = np.asarray(image)
    if scale < 1:
        sigma = (0.4 / scale,) * 2 + (0,) * (image.ndim - 2)
        image = ndimage.gaussian_filter(image.astype(np.float32), sigma)
    shape = tuple(max(1, round(n * scale)) for n in image.shape[:2])
    return resample(image, AffineTransform.similarity(0.0, scale), shape)
