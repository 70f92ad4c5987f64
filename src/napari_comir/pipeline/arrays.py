"""The registration of two images in memory (or two lazily read slides): CoMIRs, search,
refinement and verdict as a stream of :class:`Progress` events."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..core.defaults import DEFAULT_MODEL_NAME, DEFORMABLE
from ..core.device import resolve_device
from ..core.errors import InputError
from ..core.inference import COMIR_EDGE_PX, compute_comir, compute_comir_pair
from ..core.progress import Progress
from ..core.pyramid import WINDOW_TOLERANCE_PX, register_pyramid_events
from ..core.pyramid_deformable import register_pyramid_deformable
from ..core.registration import (
    RegistrationResult,
    refine_mutual_information,
    register,
    transform_score,
)
from ..core.registration.confidence import SCALE_SLACK
from ..core.registration.deformable import record_refinement, refine_result
from ..core.resampling import resample
from ..core.transforms import AffineTransform, corner_error
from ..core.zoo import ComirModel
from ..core.zoo import load_model as load_model_file
from .options import PIXEL_SIZE_TOLERANCE, RegistrationOptions
from .plan import RegistrationPlan, plan_registration, rescale, scales


def as_model(model: ComirModel | str | os.PathLike, device: str | None = None) -> ComirModel:
    """A model by name/path loaded on ``device``, or a given model moved to ``device`` if one is named."""
    if isinstance(model, (str, os.PathLike)):
        return load_model_file(model, resolve_device(device or "auto"))
    if not isinstance(model, ComirModel):
        raise InputError(f"model must be a model name, a model file path or a ComirModel, got "
                         f"{type(model).__name__}")
    return model.to(resolve_device(device)) if device is not None else model


@dataclass
class RegistrationOutcome:
    """The last event of :func:`registration_events`: the result and the CoMIRs it compared.

    ``fixed_comir`` and ``moving_comir`` are (rows, cols, comir_channels) on the grids of the
    fixed and the moving image (``None`` on the pyramid route, which never holds them whole).
    """

    result: RegistrationResult
    fixed_comir: np.ndarray | None
    moving_comir: np.ndarray | None


def registration_events(fixed_image, moving_image, model: ComirModel | str = DEFAULT_MODEL_NAME,
                        options: RegistrationOptions | None = None, *,
                        fixed_comir: np.ndarray | None = None, moving_comir: np.ndarray | None = None,
                        **option_values) -> Iterator[Progress]:
    """The whole multimodal registration as a stream of :class:`Progress` events.

    CoMIRs (those not given), the global search and the refinement, and the verdict; the last
    event's ``result`` is a :class:`RegistrationOutcome`. Options and images are checked when
    this is called, before any work. The CLI, batch and the widgets all run this generator;
    :func:`register_multimodal` is it run to the end.

    Parameters
    ----------
    fixed_image, moving_image : numpy.ndarray or Slide
        As in :func:`register_multimodal`.
    model : ComirModel or str
    options : RegistrationOptions, optional
    fixed_comir, moving_comir : numpy.ndarray, optional
        CoMIRs already computed with ``model`` for these images (e.g. shown in napari), reused.
    **option_values
        Fields of :class:`RegistrationOptions` (``method=``, ``transform=``, ...) replacing
        those of ``options``.
    """
    options = RegistrationOptions.build(options, **option_values)
    model = as_model(model, options.device)
    plan = plan_registration(model, fixed_image, moving_image, options,
                             comirs_given=fixed_comir is not None and moving_comir is not None)
    return _registration_events(model, fixed_image, moving_image, plan, fixed_comir, moving_comir)


def _registration_events(model: ComirModel, fixed_image, moving_image, plan: RegistrationPlan,
                         fixed_comir, moving_comir) -> Iterator[Progress]:
    """The work of :func:`registration_events`, after validation (a generator: runs lazily)."""
    start = time.perf_counter()
    options = plan.options
    if plan.large:
        events = register_pyramid_events(
            model, fixed_image, moving_image, coarse_side=plan.overview_side, window=plan.window,
            n_windows=plan.n_windows, rotation_range=options.rotation_range,
            transform=options.affine_model, scale_range=options.scale_range,
            fixed_pixel_size_um=options.fixed_pixel_size,
            moving_pixel_size_um=options.moving_pixel_size, border=COMIR_EDGE_PX,
            fixed_modality=options.fixed_modality, moving_modality=options.moving_modality)
        for event in events:  # its steps shown (a stop between them); its result is ours to give
            if event.result is None:
                yield Progress("register", event.step, event.total,
                               f"registering a large pair: {event.message}")
            result = event.result
        if plan.in_memory and options.final_refinement == "mutual-information":
            yield Progress("register", 0, 1, "refining on the images (mutual information)")
            result = _refined_windows_result(fixed_image, moving_image, result)
        result.seconds = time.perf_counter() - start
        _pixel_sizes_hint(result, options)
        if options.transform == DEFORMABLE:
            yield Progress("deformable", 0, 1, "refining the affine result with a displacement "
                           "field, on a coarse level of both images")
            refined = record_refinement(result, lambda affine: register_pyramid_deformable(
                model, fixed_image, moving_image, affine, fixed_modality=options.fixed_modality,
                moving_modality=options.moving_modality, device=model.device))
            yield Progress("deformable", 1, 1, "field kept" if refined.kept else refined.reasons[-1])
        yield Progress("register", 1, 1, _summary(result), result=RegistrationOutcome(result, None, None))
        return
    fixed_scale, moving_scale = scales(plan.pre_scale)
    fixed_scaled = fixed_image if fixed_scale == 1.0 else rescale(fixed_image, fixed_scale)
    moving_scaled = moving_image if moving_scale == 1.0 else rescale(moving_image, moving_scale)
    if fixed_scale != 1.0:
        fixed_comir = None  # the cached one is on the other grid
    if moving_scale != 1.0:
        moving_comir = None
    todo = [(key, image, modality) for key, image, modality, comir in
            (("fixed", fixed_scaled, options.fixed_modality, fixed_comir),
             ("moving", moving_scaled, options.moving_modality, moving_comir)) if comir is None]
    comirs = {"fixed": fixed_comir, "moving": moving_comir}
    if todo:
        names = " and ".join(key for key, *_ in todo)
        yield Progress("infer", 0, len(todo), f"computing the CoMIR of the {names} image")
        if len(todo) == 2:
            comirs["fixed"], comirs["moving"] = compute_comir_pair(
                model, fixed_scaled, options.fixed_modality, moving_scaled, options.moving_modality)
        else:
            key, image, modality = todo[0]
            comirs[key] = compute_comir(model, image, modality)
        yield Progress("infer", len(todo), len(todo), "CoMIRs done")
    comir_seconds = time.perf_counter() - start
    yield Progress("register", 0, 1, f"registering the CoMIRs ({options.affine_model}, {options.method})")
    result = register_comirs(model, comirs["fixed"], comirs["moving"], method=options.method,
                             transform=options.affine_model, select_model=options.select_model,
                             rotation_range=options.rotation_range, scale_range=plan.search_range,
                             initial=options.initial_transform)
    if options.final_refinement == "mutual-information":
        yield Progress("register", 0, 1, "refining on the images (mutual information)")
        result = _refined_on_images(model, comirs, fixed_scaled, moving_scaled, result, plan)
    fixed_comir, moving_comir = comirs["fixed"], comirs["moving"]
    if plan.pre_scale != 1.0:  # back to the images' own grids
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
    _pixel_sizes_hint(result, options)
    if options.transform == DEFORMABLE:
        yield Progress("deformable", 0, 1, "refining the affine result with a displacement field")
        refined = refine_result(result, fixed_comir, moving_comir, fixed_image, moving_image,
                                device=model.device)
        yield Progress("deformable", 1, 1, "field kept" if refined.kept else refined.reasons[-1])
    yield Progress("register", 1, 1, _summary(result),
                   result=RegistrationOutcome(result, fixed_comir, moving_comir))


#: Farthest a final refinement may move the CoMIR result, as a fraction of the moving image's
#: width at its corners: further is no refinement but another answer (a success is within 2 %).
REFINEMENT_REACH = 0.01
#: Most the CoMIRs' score and their detail score may fall (as fractions) under the refined
#: transform for it to be kept: one of them must stay within its bound. On the 20 raw cases the
#: refinements this refuses (1B_H7 and 1B_K8 0.17 px worse, 2B_D2 0.12 px better) lowered the
#: score by 3-7 % and the detail score by 2-4 %; X01Y05's (2.87 -> 1.35 px) by 1.2 and 0.5 %,
#: 1B_D2's (0.11 px worse) by 1.2 and 0.7 % (docs/benchmarks.md). A larger fall of both says the
#: images' intensities pulled the transform away from where their structures agree.
MAX_SCORE_LOSS, MAX_DETAIL_LOSS = 0.01, 0.01


def _mutual_information_refined(fixed_image, moving_image, result: RegistrationResult) -> AffineTransform:
    """``result.transform`` refined by Mattes mutual information on the images, in its own
    model; its seconds recorded in ``result.timings["mutual_information"]``."""
    start = time.perf_counter()
    refined, _ = refine_mutual_information(np.asarray(fixed_image), np.asarray(moving_image),
                                           result.transform, result.transform.model)
    result.timings = {**result.timings, "mutual_information": time.perf_counter() - start}
    return refined


def _refined_on_images(model: ComirModel, comirs: dict, fixed_image, moving_image,
                       result: RegistrationResult, plan: RegistrationPlan) -> RegistrationResult:
    """``result`` refined by Mattes mutual information on the original images, in its own
    transform model, and judged again on the CoMIRs: the refinement is kept when it stays within
    :data:`REFINEMENT_REACH`, the CoMIRs agree about as well (:data:`MAX_SCORE_LOSS` or
    :data:`MAX_DETAIL_LOSS`) and the verdict does not turn against it; otherwise the CoMIR result is."""
    transform = result.transform
    refined = _mutual_information_refined(fixed_image, moving_image, result)
    if corner_error(transform, refined, np.shape(moving_image)[:2]) > REFINEMENT_REACH * np.shape(
            moving_image)[1]:
        return result
    # Both judged alike: the CoMIRs' masked NCC under each transform as it stands, and their
    # details' agreement (the CoMIR result's detail score is that already); the refined one's
    # verdict under the loosest model's scale range.
    after = register_comirs(model, comirs["fixed"], comirs["moving"], initial=refined, refine=False,
                            select_model=False, transform=plan.options.affine_model,
                            scale_range=plan.search_range)
    score_before = transform_score(comirs["fixed"], comirs["moving"], transform, device=model.device)
    agree_as_well = (after.score >= score_before * (1 - MAX_SCORE_LOSS)
                     or after.detail_score >= result.detail_score * (1 - MAX_DETAIL_LOSS))
    if not agree_as_well or (result.success_likely and not after.success_likely):
        return result
    after.transform, after.method = refined, result.method
    after.timings = {**result.timings, "score": after.timings.get("score", 0.0)}
    return after


def _refined_windows_result(fixed_image, moving_image, result: RegistrationResult) -> RegistrationResult:
    """A coarse-to-fine result on images in memory refined by Mattes mutual information on the
    images, kept when the windows' verdict was "likely" and the refinement stays within
    :data:`~napari_comir.core.pyramid.WINDOW_TOLERANCE_PX` of their answer (the windows agree
    to that; further is another answer, which no full-resolution CoMIR is here to judge).
    On 2048² pairs it took the windows' 0.3-1.0 px to the full-resolution route's 0.05-0.36 px
    (docs/benchmarks.md, "Speed by image size")."""
    if not result.success_likely:
        return result
    refined = _mutual_information_refined(fixed_image, moving_image, result)
    if corner_error(result.transform, refined, np.shape(moving_image)[:2]) <= WINDOW_TOLERANCE_PX:
        result.transform = refined
    return result


#: How far (as a factor) a result's scale may lie from the pixel sizes' swapped ratio for the
#: verdict to ask whether they were swapped.
SWAPPED_SIZES_SLACK = 1.1


def _pixel_sizes_hint(result: RegistrationResult, options: RegistrationOptions) -> None:
    """With pixel sizes given and a result that left the scales they allow, the reasons say what
    the sizes imply, and ask whether fixed and moving's were swapped when that explains it."""
    fixed_size, moving_size = options.pixel_sizes
    if fixed_size is None or result.transform.model == "rigid":
        return
    implied = moving_size / fixed_size  # fixed px per moving px
    scale = float(np.sqrt(abs(np.linalg.det(result.transform.matrix_xy[:2, :2]))))
    if abs(np.log(scale / implied)) <= np.log(PIXEL_SIZE_TOLERANCE * SCALE_SLACK):
        return
    hint = (f"the pixel sizes given (fixed {fixed_size:g}, moving {moving_size:g} µm/px) imply "
            f"a scale of {implied:.3g}")
    if abs(np.log(scale * implied)) <= np.log(SWAPPED_SIZES_SLACK):
        hint += ": are they swapped?"
    result.reasons.append(hint)


def _summary(result: RegistrationResult) -> str:
    verdict = "likely right" if result.success_likely else "probably wrong"
    return f"score {result.score:.2f} · {verdict}"


def register_multimodal(fixed_image, moving_image, model: ComirModel | str = DEFAULT_MODEL_NAME,
                        options: RegistrationOptions | None = None,
                        **option_values) -> RegistrationResult:
    """Register a moving image onto a fixed image of another modality through their CoMIRs.

    Parameters
    ----------
    fixed_image, moving_image : numpy.ndarray or Slide
        (rows, cols) or (rows, cols, channels) raw images; sizes may differ. A grey image is
        accepted for an RGB modality (bright field).
    model : ComirModel or str
        A loaded model or a model name/path.
    options : RegistrationOptions, optional
        How to register (method, transform model, ranges, pixel sizes, ...); defaults from
        :mod:`napari_comir.core.defaults`.
    **option_values
        Fields of :class:`RegistrationOptions` (``transform="rigid"``, ...) replacing those of
        ``options``.

    Returns
    -------
    RegistrationResult
        ``result.transform`` maps MOVING pixel (x, y) to FIXED pixel (x, y); ``timings`` include
        the CoMIR inference ("comir"); ``success_likely`` and ``reasons`` the verdict.

    Notes
    -----
    Images with a side over ``LARGE_SIDE`` (4096 px) go through
    :func:`napari_comir.core.pyramid.register_pyramid`: a coarse search on block-averaged copies,
    then refinement on full-resolution windows, so no full-size CoMIR is ever held in memory.
    Images in memory with a side over ``COARSE_TO_FINE_SIDE`` (1536 px) take that route too,
    with a 512 px overview and three 512 px windows, then the final refinement on the images;
    unless both CoMIRs are given or the options need full-resolution ones
    (:func:`~napari_comir.pipeline.plan_registration`).
    """
    *_, last = registration_events(fixed_image, moving_image, model, options, **option_values)
    return last.result.result


def register_comirs(model: ComirModel, fixed_comir: np.ndarray, moving_comir: np.ndarray, *,
                    initial: AffineTransform | None = None, **register_options) -> RegistrationResult:
    """Register two CoMIRs of ``model`` (e.g. computed once and reused), with its calibrated confidence.

    ``initial`` (moving -> fixed) replaces the global search: the refinement starts there.
    ``register_options`` (``method``, ``transform``, ``rotation_range``, ``scale_range``, ...) are
    those of :func:`napari_comir.core.registration.register`.

    ``result.success_likely`` uses the model card's ``score_threshold`` and ``detail_threshold``;
    the CoMIRs' outer :data:`COMIR_EDGE_PX` are left out of the comparison.
    """
    return register(fixed_comir, moving_comir, border=COMIR_EDGE_PX, initial=initial,
                    device=model.device, score_threshold=model.card.score_threshold,
                    detail_threshold=model.card.detail_threshold, **register_options)
