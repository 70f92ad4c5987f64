"""The few verbs users call; everything here is headless and delegates to the core and to the
registration pipeline (:mod:`napari_comir.pipeline`, re-exported here)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .core.apply import (
    apply_transform_to_geojson,
    apply_transform_to_image,
    apply_transform_to_points,
)
from .core.data import AlignedPair, ModalitySpec, read_pairs_csv
from .core.defaults import DEFAULT_ARCHITECTURE, DEFAULT_MODEL_NAME, DEFAULT_TEACH_SECONDS
from .core.errors import InputError
from .core.grey_route import grey_routes
from .core.inference import (
    check_image,
    comir_tiles,
    compute_comir,
    compute_comir_pair,
    modality_spec,
)
from .core.io import read_image
from .core.io.elastix_files import write_elastix_transform
from .core.io.slides import open_image
from .core.io.transform_formats import write_transform
from .core.progress import Progress
from .core.registration import register
from .core.registration.landmarks import fit_landmarks
from .core.resampling import resample
from .core.teaching import (
    START_MODEL,
    TeachingPair,
    TeachOutcome,
    image_channels,
    starting_model,
    teach_config,
    teaching_events,
)
from .core.training import TrainConfig, fine_tune_config, train
from .core.transforms import AffineTransform
from .core.zoo import (
    ComirModel,
    ModelCard,
    check_user_model_name,
    list_models,
    save_model,
    save_user_model,
)
from .pipeline import (
    RegistrationOptions,
    RegistrationOutcome,
    as_model,
    recorded_pixel_sizes,
    register_comirs,
    register_multimodal,
    registration_events,
)

__all__ = [
    "AlignedPair", "ComirModel", "Progress", "AffineTransform", "TrainConfig", "comir_events",
    "compute_comirs", "export_elastix", "export_transform",
    "fine_tune", "fine_tune_config", "check_user_model_name", "fit_landmarks",
    "list_models", "load_model", "new_model", "open_image", "read_image",
    "read_pairs_csv", "record_fine_tuning", "register",
    "register_comirs", "register_multimodal", "registration_events", "RegistrationOptions",
    "RegistrationOutcome", "recorded_pixel_sizes",
    "check_image", "check_pair_images", "modality_spec", "resample", "save_model", "save_taught_model",
    "save_user_model", "teach", "teach_config",
    "TeachingPair", "TeachOutcome",
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
#: Side (px) of the CoMIR preview a fine-tuning run can show as it trains.
PREVIEW_SIDE = 512  # a central crop: fast enough to run between training steps


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
    return as_model(name_or_path, device)


def compute_comirs(model: ComirModel | str, fixed_image, moving_image, *,
                   fixed_modality: str | None = None, moving_modality: str | None = None,
                   progress: Callable[[Progress], None] | None = None,
                   **options) -> tuple[np.ndarray, np.ndarray]:
    """CoMIRs of a fixed and a moving image, each (rows, cols, comir_channels) float32.

    Modalities default to the model card's (bf-shg: fixed SHG, moving BF). ``options`` go to
    :func:`napari_comir.core.inference.comir_tiles` (tile, overlap, half). On a CPU both
    networks run at once, so ``progress`` may be called from two threads.
    """
    model = as_model(model)
    fixed_modality = fixed_modality or model.card.fixed_modality
    moving_modality = moving_modality or model.card.moving_modality
    return compute_comir_pair(model, fixed_image, fixed_modality, moving_image, moving_modality,
                              progress, **options)


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
    config = config or fine_tune_config()
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    model = as_model(model)
    if copy_model:
        model = copy.deepcopy(model)
    events = train(model, pairs, config, resume=resume)
    return _with_previews(model, events, pairs[0], preview_every) if preview_every else events


def record_fine_tuning(model: ComirModel, started_from: str, training: dict) -> None:
    """Write into ``model``'s card that it was fine-tuned from ``started_from`` (``training``:
    what on, e.g. ``pairs`` and ``steps``). The checks of the model it started from, which it has
    not passed itself, move under ``"started_from_metrics"``: a card showed them as its own."""
    card = model.card
    pairs, steps = training.get("pairs") or [], training.get("steps")
    card.description = (f"Fine-tuned from {started_from} on {len(pairs)} pair(s)"
                        + (f", {steps} steps" if steps is not None else "")
                        + "; not checked on pairs held out of it."
                        + (f" {started_from}: {card.description}" if card.description else ""))
    if card.metrics and "started_from_metrics" not in card.metrics:
        card.metrics = {"started_from_metrics": card.metrics}
    card.training = {**training, "started_from": started_from}


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
    model = as_model(model)
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


def export_elastix(transform, path, *, fixed_shape, fixed_pixel_size_um: float = 1.0,
                   moving_pixel_size_um: float = 1.0):
    """Write a moving -> fixed transform (affine or deformable) as elastix/transformix parameter
    files: ``transformix -tp path`` (or ``itk.transformix_filter``) then maps fixed physical
    points to moving ones and resamples a moving image onto the fixed grid as napari-comir does.

    Parameters
    ----------
    transform : AffineTransform or DisplacementFieldTransform
        Moving -> fixed, pixel (x, y) (e.g. ``result.transform``).
    path : str or os.PathLike
        The parameter file for transformix; a deformable transform also writes
        ``<name>.field.txt`` and ``<name>.field.mha`` beside it.
    fixed_shape : (int, int)
        (rows, cols) of the fixed image: the grid transformix resamples onto.
    fixed_pixel_size_um, moving_pixel_size_um : float
        Pixel sizes (µm); 1.0 = pixel units.

    Returns
    -------
    list of pathlib.Path
        The files written, the parameter file last. Conventions:
        ``napari_comir.core.io.elastix_files``.
    """
    return write_elastix_transform(transform, path, fixed_shape=fixed_shape,
                                   fixed_pixel_size_um=fixed_pixel_size_um,
                                   moving_pixel_size_um=moving_pixel_size_um)


def teach(pairs: Sequence[TeachingPair], *, start: ComirModel | str | None = None,
          old: ComirModel | str | None = None, check_pairs: Sequence[TeachingPair] = (),
          max_seconds: float = DEFAULT_TEACH_SECONDS, fixed_modality: str = "fixed",
          moving_modality: str = "moving", name: str = "taught", seed: int = 0,
          device: str = "auto", config: TrainConfig | None = None) -> Iterator[Progress]:
    """Teach a model a modality pair from one or a few aligned pairs; a stream of events.

    The one teaching recipe (:mod:`napari_comir.core.teaching`) for the CLI, the GUI's teach
    step and the Fine-tune widget: train for ``max_seconds``, then register ``check_pairs`` with
    the taught and the old model; the last event's ``result`` is a :class:`TeachOutcome` whose
    ``replaces`` says whether the taught model may replace the old one (nothing is saved here:
    :func:`save_taught_model`).

    Parameters
    ----------
    pairs : sequence of TeachingPair
        ``TeachingPair.from_landmarks(fixed, moving, fixed_xy, moving_xy)`` or
        ``TeachingPair(fixed, moving, accepted_transform)``.
    start : ComirModel or str, optional
        A model to go on teaching (a copy is trained; e.g. a model taught before for this pair).
        Pairs whose bright field is grey where its network takes RGB teach only its grey
        palette (:mod:`napari_comir.core.grey_route`): colour images register as before.
        Default: a new model for the pairs' channel counts whose networks both start as the
        bundled bright-field network, ``fixed_modality`` taking the fixed images.
    old : ComirModel or str, optional
        The model the taught one would replace (default ``start``); left unchanged.
    check_pairs : sequence of TeachingPair
        Pairs held out of the teaching, registered by both models before anything is replaced.
    max_seconds : float
        Training budget (default 120 s).
    fixed_modality, moving_modality, name : str
        Names in the new model's card (ignored with ``start``).
    config : TrainConfig, optional
        Instead of the recipe's (:func:`teach_config` with ``max_seconds``, ``seed``, ``device``),
        e.g. the Fine-tune widget's settings.
    """
    if not pairs:
        raise InputError("need at least one aligned pair to teach on")
    if start is None:
        first = pairs[0]
        model = starting_model(image_channels(first.fixed_image), image_channels(first.moving_image),
                               load_model(START_MODEL, "cpu"), fixed_modality=fixed_modality,
                               moving_modality=moving_modality, name=name)
        started_from = f"both networks from {START_MODEL}'s bright-field network"
    else:
        start = as_model(start, "cpu")
        model = copy.deepcopy(start)
        started_from = f"{start.card.name} {start.card.version}"
    old = as_model(old, "cpu") if old is not None else start
    if old is not None:  # refused now, not after the training: the check registers with it
        pair = (list(check_pairs) or list(pairs))[0]
        try:
            check_pair_images(old, pair.fixed_image, pair.moving_image)
        except InputError as exc:
            raise InputError(f"the model it would replace, {old.card.name!r}, cannot register "
                             f"these pairs ({exc}); teach a model under another name") from exc
    if config is None:
        config = teach_config(max_seconds, new_pair=start is None, seed=seed, device=device,
                              grey_route=start is not None and bool(grey_routes(model.card, pairs)))
    config.validate()
    return teaching_events(pairs, model, register_multimodal, old=old, check_pairs=check_pairs,
                           config=config, started_from=started_from, new_pair=start is None)


def check_pair_images(model: ComirModel, fixed_image, moving_image) -> None:
    """:class:`InputError` (naming the side) unless ``model``'s networks take the images: its
    fixed network the fixed image, its moving network the moving one."""
    card = model.card
    for side, image, modality in (("fixed", fixed_image, card.fixed_modality),
                                  ("moving", moving_image, card.moving_modality)):
        check_image(image, modality_spec(model, modality), f"{side} image")


def save_taught_model(outcome: TeachOutcome, name: str):
    """Save a taught model as user model ``name`` if its check allows (``outcome.replaces``);
    an older user model of that name is kept as ``<name>-previous``. Returns the card path,
    or ``None`` when the taught model was not saved."""
    if not outcome.replaces:
        return None
    if name in list_models():
        save_user_model(load_model(name, "cpu"), f"{name}-previous")
    return save_user_model(outcome.model, name)
