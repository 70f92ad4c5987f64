"""The few verbs users call; everything here is headless and delegates to the core."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .core.apply import (
    apply_transform_to_geojson,
    apply_transform_to_image,
    apply_transform_to_points,
)
from .core.data import AlignedPair, ModalitySpec, read_pairs_csv
from .core.defaults import DEFAULT_ARCHITECTURE, DEFAULT_MODEL_NAME, DEFAULT_SCALE_RANGE
from .core.device import resolve_device
from .core.errors import InputError, RegistrationError
from .core.inference import (
    COMIR_EDGE_PX,
    check_image,
    comir_tiles,
    compute_comir,
    compute_comir_pair,
    modality_spec,
)
from .core.io import read_image
from .core.io.slides import Slide, open_image
from .core.io.transform_formats import write_transform
from .core.progress import Progress
from .core.pyramid import register_pyramid
from .core.registration import (
    DEFAULT_TRANSFORM,
    MAX_ASPECT,
    METHODS,
    RegistrationResult,
    angle_bounds,
    check_model,
    register,
    scale_bounds,
)
from .core.registration.landmarks import fit_landmarks
from .core.training import FINE_TUNE_LR, TrainConfig, train
from .core.transforms import AffineTransform, resample
from .core.zoo import ComirModel, ModelCard, list_models, save_model, save_user_model
from .core.zoo import load_model as _load_model

__all__ = [
    "AlignedPair", "ComirModel", "Progress", "AffineTransform", "TrainConfig", "comir_events",
    "compute_comirs", "export_transform",
    "fine_tune", "fit_landmarks", "list_models", "load_model", "new_model", "open_image", "read_image",
    "read_pairs_csv", "register",
    "register_comirs", "register_multimodal", "registration_events", "RegistrationOutcome",
    "resample", "save_model", "save_user_model",
    "apply_transform_to_geojson", "apply_transform_to_image", "apply_transform_to_points",
]

PRESETS = {
    "bf-shg": dict(
        modalities={"bf": ModalitySpec(3), "shg": ModalitySpec(1, log1p=True)},
        fixed_modality="shg", moving_modality="bf", tau=0.5,
        description="Bright-field H&E (RGB, moving) and second-harmonic generation (grey, fixed)."),
    "rgb-nir": dict(
        modalities={"rgb": ModalitySpec(3), "nir": ModalitySpec(1)},
        fixed_modality="nir", moving_modality="rgb", tau=0.1,
        description="Aerial RGB (moving) and near-infrared (fixed)."),
}
LARGE_SIDE = 4096  # above this, registration goes through the coarse-to-fine pyramid
#: Smallest side (px) of an image registered through CoMIRs: at 32-48 px, random noise against a
#: real SHG scored 0.95 (benchmarks/confidence.py).
MIN_SIDE = 64
#: Side (px) of the CoMIR preview a fine-tuning run can show as it trains.
PREVIEW_SIDE = 512  # a central crop: fast enough to run between training steps
#: With known pixel sizes, the scale still searched: nominal pixel sizes are good to a few percent.
PIXEL_SIZE_TOLERANCE = 1.05
#: Pixel sizes accepted (µm): 0.1 pm to 1 m, so that no ratio of two overflows.
PIXEL_SIZE_BOUNDS_UM = (1e-7, 1e6)


def new_model(preset: str = "bf-shg", *, name: str | None = None, comir_channels: int = 1,
              architecture: dict | None = None, **card_fields) -> ComirModel:
    """An untrained model for a preset modality pair ("bf-shg", "rgb-nir") or custom modalities.

    ``card_fields`` override the preset, e.g. ``modalities={"a": ModalitySpec(1), "b": ModalitySpec(1)},
    fixed_modality="a", moving_modality="b"``.
    """
    if preset not in PRESETS and "modalities" not in card_fields:
        raise InputError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)} or pass modalities=")
    fields = {**PRESETS.get(preset, {}), **card_fields}
    try:
        card = ModelCard(name=name or preset, comir_channels=comir_channels,
                         architecture=dict(architecture or DEFAULT_ARCHITECTURE), **fields)
    except (TypeError, ValueError) as exc:  # an unknown card field, an architecture not a dict
        raise InputError(f"new_model: {exc}") from exc
    # the bounds a saved card is held to (a width of 4096 would build for minutes, then fail)
    return ComirModel(ModelCard.from_dict(card.to_dict(), source="new_model"))


def load_model(name_or_path: str = DEFAULT_MODEL_NAME, device: str = "auto") -> ComirModel:
    """Load a bundled model ("bf-shg", "rgb-nir"), a saved user model, or a model file path."""
    return _load_model(name_or_path, resolve_device(device))


def _as_model(model: ComirModel | str, device: str | None = None) -> ComirModel:
    """A model by name/path loaded on ``device``, or a given model moved to ``device`` if one is named."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device or "auto")
    if not isinstance(model, ComirModel):
        raise InputError(f"model must be a model name, a model file path or a ComirModel, got "
                         f"{type(model).__name__}")
    return model.to(resolve_device(device)) if device is not None else model


def compute_comirs(model: ComirModel | str, fixed_image, moving_image, *,
                   fixed_modality: str | None = None, moving_modality: str | None = None,
                   progress: Callable[[Progress], None] | None = None,
                   **options) -> tuple[np.ndarray, np.ndarray]:
    """CoMIRs of a fixed and a moving image, each (rows, cols, comir_channels) float32.

    Modalities default to the model card's (bf-shg: fixed SHG, moving BF). ``options`` go to
    :func:`napari_comir.core.inference.comir_tiles` (tile, overlap, half). On a CPU both
    networks run at once, so ``progress`` may be called from two threads.
    """
    model = _as_model(model)
    fixed_modality = fixed_modality or model.card.fixed_modality
    moving_modality = moving_modality or model.card.moving_modality
    return compute_comir_pair(model, fixed_image, fixed_modality, moving_image, moving_modality,
                              progress, **options)


@dataclass
class RegistrationOutcome:
    """The last event of :func:`registration_events`: the result and the CoMIRs it compared.

    ``fixed_comir`` and ``moving_comir`` are (rows, cols, comir_channels) on the grids of the
    fixed and the moving image (``None`` on the pyramid route, which never holds them whole).
    """

    result: RegistrationResult
    fixed_comir: np.ndarray | None
    moving_comir: np.ndarray | None


def _pixel_size(value, name: str) -> float | None:
    if value is None:
        return None
    try:
        size = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number of µm per pixel, got {value!r}") from exc
    if not (math.isfinite(size) and PIXEL_SIZE_BOUNDS_UM[0] <= size <= PIXEL_SIZE_BOUNDS_UM[1]):
        raise InputError(f"{name} must be a number of µm per pixel from {PIXEL_SIZE_BOUNDS_UM[0]:g} "
                         f"to {PIXEL_SIZE_BOUNDS_UM[1]:g}, got {value!r}")
    return size


def recorded_pixel_sizes(fixed_size_um, moving_size_um, scale_range=None):
    """The pixel sizes two images record, to register with: both or neither (one known size
    says nothing about the ratio, and a ``scale_range`` asks for a search instead)."""
    if scale_range is not None or None in (fixed_size_um, moving_size_um):
        return None, None
    return fixed_size_um, moving_size_um


def _scale_plan(transform: str, scale_range, fixed_pixel_size, moving_pixel_size):
    """(pre-scale of the moving image, scale range left to search) from what the user knows.

    With both pixel sizes only :data:`PIXEL_SIZE_TOLERANCE` around their ratio is searched. When
    the ratio lies outside :data:`DEFAULT_SCALE_RANGE`, the networks would see tissue at too
    different scales: the moving image is first resampled to the fixed pixel size.
    """
    fixed_pixel_size = _pixel_size(fixed_pixel_size, "fixed_pixel_size")
    moving_pixel_size = _pixel_size(moving_pixel_size, "moving_pixel_size")
    if (fixed_pixel_size is None) != (moving_pixel_size is None):
        raise InputError("give both pixel sizes (fixed and moving) or neither")
    if fixed_pixel_size is None or transform == "rigid":
        return 1.0, scale_range
    if scale_range is not None:
        raise InputError("give pixel sizes or a scale_range, not both")
    ratio = moving_pixel_size / fixed_pixel_size  # fixed px per moving px
    residual = (1 / PIXEL_SIZE_TOLERANCE, PIXEL_SIZE_TOLERANCE)
    if DEFAULT_SCALE_RANGE[0] <= ratio <= DEFAULT_SCALE_RANGE[1]:
        return 1.0, (ratio * residual[0], ratio * residual[1])
    return ratio, residual


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resampled by ``scale`` (new px per old px) about pixel (0, 0), low-passed first
    when it shrinks."""
    image = np.asarray(image)
    if scale < 1:
        sigma = (0.4 / scale,) * 2 + (0,) * (image.ndim - 2)
        image = ndimage.gaussian_filter(image.astype(np.float32), sigma)
    shape = tuple(max(1, round(n * scale)) for n in image.shape[:2])
    return resample(image, AffineTransform.similarity(0.0, scale), shape)


def _scales(pre_scale: float) -> tuple[float, float]:
    """(fixed, moving) resampling factors that bring both images to the coarser pixel size: the
    finer image shrinks, so the pixels computed never exceed those given, whatever the ratio
    (enlarging the coarser one by 1:8 took 6 GiB for a 512² pair)."""
    return (1 / pre_scale, 1.0) if pre_scale > 1 else (1.0, pre_scale)


def _check_scaled_sides(pre_scale: float, fixed_shape, moving_shape) -> None:
    """Refuse, before any work, images that at the coarser pixel size fall under MIN_SIDE."""
    for name, shape, scale in zip(("fixed", "moving"), (fixed_shape, moving_shape),
                                  _scales(pre_scale), strict=True):
        side = min(shape) * scale
        if side < MIN_SIDE:
            raise InputError(
                f"at the other image's pixel size the {name} image would be {shape[0] * scale:.0f} x "
                f"{shape[1] * scale:.0f} px, under the {MIN_SIDE} px needed: the pixel sizes differ "
                f"{max(pre_scale, 1 / pre_scale):.3g}-fold; at most {min(shape) / MIN_SIDE:.3g}-fold "
                "fits these images (check the pixel sizes, or crop the other image to the same area)")


def registration_events(fixed_image, moving_image, model: ComirModel | str = DEFAULT_MODEL_NAME, *,
                        method: str = "search", transform: str = DEFAULT_TRANSFORM,
                        rotation_range: float | tuple[float, float] = 180.0,
                        scale_range: tuple[float, float] | None = None,
                        fixed_pixel_size: float | None = None, moving_pixel_size: float | None = None,
                        fixed_modality: str | None = None, moving_modality: str | None = None,
                        fixed_comir: np.ndarray | None = None, moving_comir: np.ndarray | None = None,
                        initial_transform: AffineTransform | None = None,
                        device: str | None = None) -> Iterator[Progress]:
    """The whole multimodal registration as a stream of :class:`Progress` events.

    CoMIRs (those not given), the global search and the refinement, and the verdict; the last
    event's ``result`` is a :class:`RegistrationOutcome`. Arguments are validated when this is
    called, before any work. The CLI, batch and the widgets all run this generator;
    :func:`register_multimodal` is it run to the end.

    Parameters are those of :func:`register_multimodal`, plus ``fixed_comir`` / ``moving_comir``:
    CoMIRs already computed with ``model`` for these images (e.g. shown in napari), reused.
    """
    if initial_transform is not None and not isinstance(initial_transform, AffineTransform):
        raise InputError("initial_transform must be an AffineTransform (e.g. from fit_landmarks)")
    model = _as_model(model, device)
    card = model.card
    fixed_modality = fixed_modality or card.fixed_modality
    moving_modality = moving_modality or card.moving_modality
    check_model(transform)
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    angle_bounds(rotation_range)
    if fixed_pixel_size is None and moving_pixel_size is None:  # a slide may record them
        fixed_pixel_size, moving_pixel_size = recorded_pixel_sizes(
            getattr(fixed_image, "pixel_size_um", None), getattr(moving_image, "pixel_size_um", None),
            scale_range)
    pre_scale, search_range = _scale_plan(transform, scale_range, fixed_pixel_size, moving_pixel_size)
    scale_bounds(search_range, transform)
    for name, image, modality in (("fixed", fixed_image, fixed_modality),
                                  ("moving", moving_image, moving_modality)):
        checked = check_image(image, modality_spec(model, modality), f"{modality} image")
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
    _check_scaled_sides(pre_scale, np.shape(fixed_image)[:2], np.shape(moving_image)[:2])
    lazy = isinstance(fixed_image, Slide) or isinstance(moving_image, Slide)
    if lazy and (method != "search" or initial_transform is not None):
        raise InputError("a whole slide (read lazily) is registered by the search method, coarse "
                         "to fine; landmarks and SIFT need images in memory")
    large = method == "search" and (lazy or max(*np.shape(fixed_image)[:2],
                                                *np.shape(moving_image)[:2]) > LARGE_SIDE)
    if initial_transform is not None:
        pre_scale, large = 1.0, False  # refine from it on the images as they are
    return _registration_events(model, fixed_image, moving_image, method, transform,
                                rotation_range, search_range, pre_scale, fixed_modality,
                                moving_modality, fixed_comir, moving_comir, large,
                                initial_transform, (fixed_pixel_size, moving_pixel_size),
                                scale_range)


def _registration_events(model, fixed_image, moving_image, method, transform, rotation_range,
                         scale_range, pre_scale, fixed_modality, moving_modality, fixed_comir,
                         moving_comir, large, initial_transform, pixel_sizes_um,
                         user_scale_range) -> Iterator[Progress]:
    """The work of :func:`registration_events`, after validation (a generator: runs lazily)."""
    start = time.perf_counter()
    if large:
        yield Progress("register", 0, 1, "registering a large pair: an overview search, then "
                       "windows at the model's scale")
        result = register_pyramid(model, fixed_image, moving_image, rotation_range=rotation_range,
                                  transform=transform, scale_range=user_scale_range,
                                  fixed_pixel_size_um=pixel_sizes_um[0],
                                  moving_pixel_size_um=pixel_sizes_um[1],
                                  border=COMIR_EDGE_PX, fixed_modality=fixed_modality,
                                  moving_modality=moving_modality)
        yield Progress("register", 1, 1, _summary(result), result=RegistrationOutcome(result, None, None))
        return
    fixed_scale, moving_scale = _scales(pre_scale)
    fixed_scaled = fixed_image if fixed_scale == 1.0 else _rescale(fixed_image, fixed_scale)
    moving_scaled = moving_image if moving_scale == 1.0 else _rescale(moving_image, moving_scale)
    if fixed_scale != 1.0:
        fixed_comir = None  # the cached one is on the other grid
    if moving_scale != 1.0:
        moving_comir = None
    todo = [(key, image, modality) for key, image, modality, comir in
            (("fixed", fixed_scaled, fixed_modality, fixed_comir),
             ("moving", moving_scaled, moving_modality, moving_comir)) if comir is None]
    comirs = {"fixed": fixed_comir, "moving": moving_comir}
    if todo:
        names = " and ".join(key for key, *_ in todo)
        yield Progress("infer", 0, len(todo), f"computing the CoMIR of the {names} image")
        if len(todo) == 2:
            comirs["fixed"], comirs["moving"] = compute_comir_pair(
                model, fixed_scaled, fixed_modality, moving_scaled, moving_modality)
        else:
            key, image, modality = todo[0]
            comirs[key] = compute_comir(model, image, modality)
        yield Progress("infer", len(todo), len(todo), "CoMIRs done")
    comir_seconds = time.perf_counter() - start
    yield Progress("register", 0, 1, f"registering the CoMIRs ({transform}, {method})")
    result = register_comirs(model, comirs["fixed"], comirs["moving"], method=method,
                             transform=transform, rotation_range=rotation_range,
                             scale_range=scale_range, initial=initial_transform)
    fixed_comir, moving_comir = comirs["fixed"], comirs["moving"]
    if pre_scale != 1.0:  # back to the images' own grids
        fixed_to_scaled = AffineTransform.similarity(0.0, fixed_scale)
        moving_to_scaled = AffineTransform.similarity(0.0, moving_scale)
        result.transform = fixed_to_scaled.inverse().compose(result.transform).compose(moving_to_scaled)
        result.moving_shape = tuple(np.shape(moving_image)[:2])
        fixed_shape = tuple(np.shape(fixed_image)[:2])
        fixed_comir = resample(fixed_comir, fixed_to_scaled.inverse(), fixed_shape).reshape(*fixed_shape, -1)
        moving_comir = resample(moving_comir, moving_to_scaled.inverse(), result.moving_shape)
        moving_comir = moving_comir.reshape(*result.moving_shape, -1)
    result.timings = {"comir": comir_seconds, **result.timings}
    result.seconds = time.perf_counter() - start
    yield Progress("register", 1, 1, _summary(result),
                   result=RegistrationOutcome(result, fixed_comir, moving_comir))


def _summary(result: RegistrationResult) -> str:
    verdict = "likely right" if result.success_likely else "probably wrong"
    return f"score {result.score:.2f} · {verdict}"


def register_multimodal(fixed_image, moving_image, model: ComirModel | str = DEFAULT_MODEL_NAME, *,
                        method: str = "search", transform: str = DEFAULT_TRANSFORM,
                        rotation_range: float | tuple[float, float] = 180.0,
                        scale_range: tuple[float, float] | None = None,
                        fixed_pixel_size: float | None = None, moving_pixel_size: float | None = None,
                        fixed_modality: str | None = None, moving_modality: str | None = None,
                        initial_transform: AffineTransform | None = None,
                        device: str | None = None) -> RegistrationResult:
    """Register a moving image onto a fixed image of another modality through their CoMIRs.

    Parameters
    ----------
    fixed_image, moving_image : numpy.ndarray
        (rows, cols) or (rows, cols, channels) raw images; sizes may differ. A grey image is
        accepted for an RGB modality (bright field).
    model : ComirModel or str
        A loaded model or a model name/path.
    method : {"search", "sift"}
        Global rotation x scale x translation search with sub-pixel refinement, or SIFT + RANSAC.
    transform : {"rigid", "similarity", "affine"}
        The transform model (default ``"affine"``: two microscopes' pixel grids differ by scale,
        rotation and a little stretch; docs/benchmarks.md, "Real pairs").
    rotation_range : float or (float, float)
        Angles searched, degrees: ±value (180 = any rotation) or a (low, high) range.
    scale_range : (float, float), optional
        Scales (fixed px per moving px) searched when the pixel sizes are unknown; default
        0.8-1.25, at most 0.5-2.
    fixed_pixel_size, moving_pixel_size : float, optional
        Pixel sizes (µm, or any one unit): only ±5 % around their ratio is searched (the moving
        image is first brought to the fixed pixel size if the ratio lies outside 0.8-1.25).
    initial_transform : AffineTransform, optional
        Moving -> fixed start of the refinement instead of the global search, e.g. from
        :func:`fit_landmarks` when the search failed.
    device : str, optional
        "auto", "cpu", "cuda", "mps"; default: where the model is ("auto" for a name).

    Returns
    -------
    RegistrationResult
        ``result.transform`` maps MOVING pixel (x, y) to FIXED pixel (x, y); ``timings`` include
        the CoMIR inference ("comir"); ``success_likely`` and ``reasons`` the verdict.

    Notes
    -----
    Images with a side over ``LARGE_SIDE`` (4096 px) go through
    :func:`napari_comir.core.pyramid.register_pyramid`: a coarse search on block-averaged copies,
    then refinement on a full-resolution window, so no full-size CoMIR is ever held in memory.
    """
    events = registration_events(fixed_image, moving_image, model, method=method,
                                 transform=transform, rotation_range=rotation_range,
                                 scale_range=scale_range, fixed_pixel_size=fixed_pixel_size,
                                 moving_pixel_size=moving_pixel_size, fixed_modality=fixed_modality,
                                 moving_modality=moving_modality, initial_transform=initial_transform,
                                 device=device)
    *_, last = events
    return last.result.result


def register_comirs(model: ComirModel, fixed_comir: np.ndarray, moving_comir: np.ndarray, *,
                    method: str = "search", transform: str = DEFAULT_TRANSFORM,
                    rotation_range: float | tuple[float, float] = 180.0,
                    scale_range: tuple[float, float] | None = None,
                    initial: AffineTransform | None = None) -> RegistrationResult:
    """Register two CoMIRs of ``model`` (e.g. computed once and reused), with its calibrated confidence.

    ``initial`` (moving -> fixed) replaces the global search: the refinement starts there.

    ``result.success_likely`` uses the model card's ``score_threshold`` and ``detail_threshold``;
    the CoMIRs' outer :data:`COMIR_EDGE_PX` are left out of the comparison.
    """
    return register(fixed_comir, moving_comir, method=method, transform=transform,
                    rotation_range=rotation_range, scale_range=scale_range, border=COMIR_EDGE_PX,
                    initial=initial, device=model.device,
                    score_threshold=model.card.score_threshold,
                    detail_threshold=model.card.detail_threshold)


def fine_tune(model: ComirModel | str, pairs: Sequence[AlignedPair], config: TrainConfig | None = None,
              *, resume: str | None = None, copy_model: bool = True,
              preview_every: int = 0) -> Iterator[Progress]:
    """Fine-tune (or train) a model on aligned pairs; yields :class:`Progress`, last ``result`` is the model.

    The bundled model is never changed in place: with ``copy_model`` (default) training runs
    on a copy. Save the result with :func:`save_user_model` to reuse it by name.

    Without ``config``, a gentle fine-tuning setting: learning rate ``FINE_TUNE_LR`` (1e-4) and
    the pretrained BatchNorm statistics kept (higher rates made the bundled ``bf-shg`` worse after
    30 s on one pair, docs/benchmarks.md). Pass a :class:`TrainConfig` to train from scratch.

    ``preview_every``: also yield a ``"preview"`` event every that many steps whose ``result`` is
    the CoMIR of the centre (:data:`PREVIEW_SIDE` px) of the first pair's moving image.
    """
    config = config or TrainConfig(lr=FINE_TUNE_LR, freeze_batchnorm=True)
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    model = _as_model(model)
    if copy_model:
        model = copy.deepcopy(model)
    events = train(model, pairs, config, resume=resume)
    return _with_previews(model, events, pairs[0], preview_every) if preview_every else events


def _with_previews(model: ComirModel, events: Iterator[Progress], pair: AlignedPair,
                   every: int) -> Iterator[Progress]:
    modality = model.card.moving_modality
    image = pair.images[modality]
    rows, cols = image.shape[:2]
    top, left = max(0, (rows - PREVIEW_SIDE) // 2), max(0, (cols - PREVIEW_SIDE) // 2)
    image = image[top:top + PREVIEW_SIDE, left:left + PREVIEW_SIDE]
    for event in events:
        yield event
        if event.step % every == 0 and event.result is None:
            comir = compute_comir(model, image, modality)
            yield Progress("preview", event.step, event.total, "preview", result=comir)


def comir_events(model: ComirModel | str, jobs: Sequence[tuple[str, np.ndarray, str]]) -> Iterator[Progress]:
    """CoMIRs of several images as one stream of events; the last one's result is {key: CoMIR}.

    ``jobs`` are (key, image, modality) triples.
    """
    model = _as_model(model)
    results = {}
    for key, image, modality in jobs:
        for event in comir_tiles(model, image, modality):
            if event.result is not None:
                results[key] = event.result
            yield Progress("infer", event.step, event.total, f"CoMIR of {key}: {event.message}")
    yield Progress("infer", 1, 1, "CoMIRs done", result=results)


def export_transform(transform: AffineTransform, path, *, format: str | None = None,
                     fixed_pixel_size_um: float = 1.0, moving_pixel_size_um: float = 1.0,
                     center_xy=None):
    """Write a moving -> fixed transform in a format another tool reads, atomically.

    Parameters
    ----------
    transform : AffineTransform
        Moving -> fixed transform in pixels (e.g. ``result.transform``).
    path : str or os.PathLike
        Output file; its ending chooses the format unless ``format`` is given: ``.tfm`` or
        ``.txt`` ITK/elastix (fixed -> moving, µm), ``.ngff.json`` OME-NGFF affine (moving ->
        fixed, µm, axes y, x), ``.qupath.txt`` QuPath's Interactive image alignment (fixed ->
        moving, px, pixel-corner origin), ``.csv`` (moving -> fixed, px, with a
        ``<name>.README.txt``), ``.json`` napari-comir's JSON.
    format : {"itk", "ngff", "qupath", "csv", "json"}, optional
        The format, whatever the file name.
    fixed_pixel_size_um, moving_pixel_size_um : float
        Isotropic pixel sizes (µm) for the physical formats (ITK, NGFF); 1.0 = pixel units.
    center_xy : tuple of float, optional
        For the JSON: also write the decomposition about this moving point.

    Returns
    -------
    pathlib.Path
        The file written. Conventions: ``napari_comir.core.io.transform_formats``.
    """
    return write_transform(transform, path, format=format, fixed_pixel_size_um=fixed_pixel_size_um,
                           moving_pixel_size_um=moving_pixel_size_um, center_xy=center_xy)
