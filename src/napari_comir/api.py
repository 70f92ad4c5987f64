"""The few verbs users call; everything here is headless and delegates to the core."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .core.data import AlignedPair, ModalitySpec, read_pairs_csv
from .core.device import resolve_device
from .core.errors import InputError
from .core.inference import compute_comir_pair
from .core.io import read_image
from .core.progress import Progress
from .core.pyramid import register_pyramid
from .core.registration import RegistrationResult, register
from .core.training import FINE_TUNE_LR, TrainConfig, train
from .core.transforms import RigidTransform, resample
from .core.zoo import ComirModel, ModelCard, list_models, save_model, save_user_model
from .core.zoo import load_model as _load_model

__all__ = [
    "AlignedPair", "ComirModel", "Progress", "RigidTransform", "TrainConfig", "compute_comirs",
    "fine_tune", "list_models", "load_model", "new_model", "read_image", "read_pairs_csv", "register",
    "register_comirs", "register_multimodal", "resample", "save_model", "save_user_model",
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
DEFAULT_ARCHITECTURE = {"type": "unet", "base_channels": 8, "depth": 4}
LARGE_SIDE = 4096  # above this, registration goes through the coarse-to-fine pyramid


def new_model(preset: str = "bf-shg", *, name: str | None = None, comir_channels: int = 1,
              architecture: dict | None = None, **card_fields) -> ComirModel:
    """An untrained model for a preset modality pair ("bf-shg", "rgb-nir") or custom modalities.

    ``card_fields`` override the preset, e.g. ``modalities={"a": ModalitySpec(1), "b": ModalitySpec(1)},
    fixed_modality="a", moving_modality="b"``.
    """
    if preset not in PRESETS and "modalities" not in card_fields:
        raise InputError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)} or pass modalities=")
    fields = {**PRESETS.get(preset, {}), **card_fields}
    card = ModelCard(name=name or preset, comir_channels=comir_channels,
                     architecture=dict(architecture or DEFAULT_ARCHITECTURE), **fields)
    return ComirModel(card)


def load_model(name_or_path: str = "bf-shg", device: str = "auto") -> ComirModel:
    """Load a bundled model ("bf-shg", "rgb-nir"), a saved user model, or a model file path."""
    return _load_model(name_or_path, resolve_device(device))


def _as_model(model: ComirModel | str, device: str | None = None) -> ComirModel:
    """A model by name/path loaded on ``device``, or a given model moved to ``device`` if one is named."""
    if isinstance(model, str):
        return load_model(model, device or "auto")
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


def register_multimodal(fixed_image, moving_image, model: ComirModel | str = "bf-shg", *,
                        method: str = "search", rotation_range: float | tuple[float, float] = 180.0,
                        fixed_modality: str | None = None, moving_modality: str | None = None,
                        device: str | None = None) -> RegistrationResult:
    """Register a moving image onto a fixed image of another modality through their CoMIRs.

    Parameters
    ----------
    fixed_image, moving_image : numpy.ndarray
        (rows, cols) or (rows, cols, channels) raw images; sizes may differ.
    model : ComirModel or str
        A loaded model or a model name/path.
    method : {"search", "sift"}
        Global rotation x translation search with sub-pixel refinement, or SIFT + RANSAC.
    device : str, optional
        "auto", "cpu", "cuda", "mps"; default: where the model is ("auto" for a name).
    rotation_range : float or (float, float)
        Angles searched, degrees: ±value (180 = any rotation) or a (low, high) range.

    Returns
    -------
    RegistrationResult
        ``result.transform`` maps MOVING pixel (x, y) to FIXED pixel (x, y); ``timings`` include
        the CoMIR inference ("comir").

    Notes
    -----
    Images with a side over ``LARGE_SIDE`` (4096 px) go through
    :func:`napari_comir.core.pyramid.register_pyramid`: a coarse search on block-averaged copies,
    then refinement on a full-resolution window, so no full-size CoMIR is ever held in memory.
    """
    start = time.perf_counter()
    model = _as_model(model, device)
    if method == "search" and max(*np.shape(fixed_image)[:2], *np.shape(moving_image)[:2]) > LARGE_SIDE:
        return register_pyramid(model, fixed_image, moving_image, rotation_range=rotation_range,
                                fixed_modality=fixed_modality, moving_modality=moving_modality)
    fixed_comir, moving_comir = compute_comirs(model, fixed_image, moving_image,
                                               fixed_modality=fixed_modality,
                                               moving_modality=moving_modality)
    comir_seconds = time.perf_counter() - start
    result = register_comirs(model, fixed_comir, moving_comir, method=method,
                             rotation_range=rotation_range)
    result.timings = {"comir": comir_seconds, **result.timings}
    result.seconds = time.perf_counter() - start
    return result


def register_comirs(model: ComirModel, fixed_comir: np.ndarray, moving_comir: np.ndarray, *,
                    method: str = "search",
                    rotation_range: float | tuple[float, float] = 180.0) -> RegistrationResult:
    """Register two CoMIRs of ``model`` (e.g. computed once and reused), with its calibrated confidence.

    ``result.success_likely`` uses the model card's ``score_threshold``.
    """
    return register(fixed_comir, moving_comir, method=method, rotation_range=rotation_range,
                    device=model.device, score_threshold=model.card.score_threshold)


def fine_tune(model: ComirModel | str, pairs: Sequence[AlignedPair], config: TrainConfig | None = None,
              *, resume: str | None = None, copy_model: bool = True) -> Iterator[Progress]:
    """Fine-tune (or train) a model on aligned pairs; yields :class:`Progress`, last ``result`` is the model.

    The bundled model is never changed in place: with ``copy_model`` (default) training runs
    on a copy. Save the result with :func:`save_user_model` to reuse it by name.

    Without ``config``, a gentle fine-tuning setting: learning rate ``FINE_TUNE_LR`` (1e-4) and
    the pretrained BatchNorm statistics kept (higher rates made the bundled ``bf-shg`` worse after
    30 s on one pair, docs/benchmarks.md). Pass a :class:`TrainConfig` to train from scratch.
    """
    config = config or TrainConfig(lr=FINE_TUNE_LR, freeze_batchnorm=True)
    model = _as_model(model)
    if copy_model:
        model = copy.deepcopy(model)
    return train(model, pairs, config, resume=resume)
