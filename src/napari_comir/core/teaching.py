"""Teaching a model a new modality pair from one or a few pairs: the one recipe.

A person aligns one or a few pairs (landmarks, or a registration they accepted); the moving
image is resampled onto the fixed one's grid, the networks are trained on those pairs for a
fixed wall-clock budget, and the taught model is checked on pairs held out of the teaching
before it replaces anything: every held-out pair the old model registered must still be
registered, and at least one must be (a model that registers nothing is never offered).

The recipe (``benchmarks/teach.py``, docs/benchmarks.md "Teaching a new modality pair"): both
networks start from the bundled bright-field network (a grey input sums its first filters over
R, G and B, which is what a grey image repeated into RGB would give), Adam at 1e-3 with BatchNorm
statistics re-estimated, patches 128 px, 16 per step, RGB patches' hue turned at random (the
stains a model meets differ from the one it was taught), for 120 s. Serial sections aligned by
landmarks are aligned to a few px only; the contrastive loss compares 128 px patches (a random
shift of the patches measured worse). H&E vs IHC models taught on one stain registered 9-10 of
12 held-out pairs within 1.3x the best affine map (taught on Ki67, a nuclear stain, the others
mostly fail). A model taught more pairs of its own
modalities trains gently instead (:func:`teach_config`), and when their bright field is grey where
its network takes RGB, only its grey palette learns (:mod:`~napari_comir.core.grey_route`).

The verdict of a taught model: the detail threshold of the card it started from was measured
for other CoMIRs (bf-shg's 1.7 called most taught successes "probably wrong"), so it is
calibrated at teach time on garbage made from the taught pairs (:func:`null_detail_scores`)
and stored on the taught model's card.
"""

from __future__ import annotations

import copy
import csv
import io
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import AlignedPair, ModalitySpec, validate_image
from .defaults import DEFAULT_TEACH_SECONDS, SUCCESS_FRACTION
from .errors import InputError, RegistrationError
from .field_transform import DisplacementFieldTransform, resample
from .grey_route import grey_route_events, grey_routes
from .io import read_image
from .io.files import read_utf8_text
from .io.landmarks import read_landmarks
from .progress import Progress
from .registration.landmarks import coverage_warning, fit_landmarks
from .training import TrainConfig, fine_tune_config, train
from .transforms import AffineTransform
from .zoo import ComirModel, ModelCard

#: A new model's modality names: keys of its networks (no '.': torch's module names).
MODALITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
#: Learning rate of the recipe: 1e-4 with frozen BatchNorm (the old fine-tuning default) left
#: H&E-vs-IHC models registering 3 of 4 pairs after 60 s; 1e-3 registered 4 of 4.
TEACH_LR = 1e-3
#: Hue augmentation of a new pair's RGB patches (degrees either way; ``TrainConfig.hue_degrees``):
#: the stains checked differ from the one taught. H&E vs IHC taught on one stain, 36 steps, seed 0:
#: 10 of 12 held-out pairs registered, the worst 5x the best affine map, where without it 9 of 12
#: and 85x; seed 1, 120 s: 9 of 12 (docs/benchmarks.md: within the spread, kept for the worst case).
TEACH_HUE_DEGREES = 180.0
#: The grey route (:mod:`~napari_comir.core.grey_route`): a model taught pairs whose bright
#: field is grey learns only its grey palette, this many colour levels (0-255) per Adam step,
#: for this many steps: the loss is near 0 after ~6, and Adam's steps on what is left are noise
#: that drifts the palette toward the taught tissue. bf-shg taught 1B_D2 in grey, seeds 0-2:
#: 19 of the 20 grey raw cases each at 8 steps; 18, 19, 19 at 36 (seed 0 lost a pancreas case).
GREY_ROUTE_LR, GREY_ROUTE_STEPS = 2.0, 8
#: The bundled model and network every taught network starts from.
START_MODEL, START_NETWORK = "bf-shg", "bf"
#: A held-out pair counts as registered when its landmarks' mean error is at most this many
#: times that of the best affine map through them (the issue's target), or at most
#: :data:`~napari_comir.core.defaults.SUCCESS_FRACTION` of the fixed width, as the raw BF/SHG cases.
SUCCESS_RATIO = 1.3
#: A taught model's least detail score of a likely success is this many times the highest its
#: CoMIRs reach on garbage made from the taught pairs (:func:`null_detail_scores`) ...
NULL_MARGIN = 1.5
#: ... and never below this (a null that happens to fall low must not let noise through).
MIN_DETAIL_THRESHOLD = 1.0
#: Taught pairs whose mirror images serve as garbage (two registrations each).
NULL_PAIRS = 2


@dataclass
class TeachingPair:
    """A fixed and a moving image and the transform a person vouches for.

    Parameters
    ----------
    fixed_image, moving_image : numpy.ndarray
        (rows, cols) or (rows, cols, channels); sizes may differ.
    transform : AffineTransform or DisplacementFieldTransform
        Moving (x, y) -> fixed (x, y): fitted to landmarks or an accepted registration (a
        deformable one included: the moving image is taught as the field warps it).
    fixed_points_xy, moving_points_xy : numpy.ndarray, optional
        (N, 2) landmarks (x, y), row i of both on one structure: held-out pairs are scored on
        them; without them, on the distance to ``transform`` at the fixed image's corners.
    name : str
    """

    fixed_image: np.ndarray
    moving_image: np.ndarray
    transform: AffineTransform | DisplacementFieldTransform
    fixed_points_xy: np.ndarray | None = None
    moving_points_xy: np.ndarray | None = None
    name: str = "pair"

    @classmethod
    def from_landmarks(cls, fixed_image, moving_image, fixed_points_xy, moving_points_xy, *,
                       name: str = "pair", transform: str = "affine") -> TeachingPair:
        """The pair aligned by the ``transform`` model fitted to its landmarks (at least 4); a
        ``UserWarning`` when they cover little of the moving image (:func:`coverage_warning`)."""
        fixed_points_xy = np.asarray(fixed_points_xy, dtype=float)
        if len(fixed_points_xy) < 4:
            raise InputError(f"pair {name!r}: {len(fixed_points_xy)} landmark pairs; teaching needs "
                             "at least 4 (one more than an affine map needs, so an error shows)")
        fitted, _ = fit_landmarks(fixed_points_xy, moving_points_xy, transform)
        spread = coverage_warning(moving_points_xy, np.shape(moving_image)[:2])
        if spread:  # the pair is taught as aligned by an extrapolating fit
            warnings.warn(f"pair {name!r}: {spread}", UserWarning, stacklevel=2)
        return cls(np.asarray(fixed_image), np.asarray(moving_image), fitted, fixed_points_xy,
                   np.asarray(moving_points_xy, dtype=float), name)

    def error(self, transform: AffineTransform) -> float:
        """Mean distance (fixed px) between where ``transform`` and the truth put the landmarks,
        or, without landmarks, the fixed image's corners mapped back into the moving image."""
        if self.fixed_points_xy is not None:
            return float(np.linalg.norm(transform.apply_xy(self.moving_points_xy)
                                        - self.fixed_points_xy, axis=1).mean())
        rows, cols = self.fixed_image.shape[:2]
        corners = np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], float)
        return float(np.linalg.norm(self.transform.inverse().apply_xy(corners)
                                    - transform.inverse().apply_xy(corners), axis=1).mean())

    def registered(self, transform: AffineTransform) -> bool:
        """Whether ``transform`` is as good as this pair allows (:data:`SUCCESS_RATIO` times the
        best affine map's landmark error, or :data:`~napari_comir.core.defaults.SUCCESS_FRACTION`
        of the width)."""
        floor = self.error(self.transform) if self.fixed_points_xy is not None else 0.0
        return self.error(transform) <= max(SUCCESS_RATIO * floor,
                                            SUCCESS_FRACTION * self.fixed_image.shape[1])

    def aligned(self, fixed_modality: str, moving_modality: str) -> AlignedPair:
        """The moving image resampled onto the fixed image's grid, as a training pair."""
        moving = resample(self.moving_image, self.transform, self.fixed_image.shape[:2])
        return AlignedPair({fixed_modality: self.fixed_image,
                            moving_modality: moving.reshape(*self.fixed_image.shape[:2], -1)},
                           name=self.name)


#: Columns of a CSV of pairs with landmarks (``he_ihc/pairs.csv`` has them); a ``pair_id`` or
#: ``name`` column names the pairs.
PAIR_COLUMNS = ("fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks")


def read_teaching_pairs(path: str | os.PathLike) -> list[TeachingPair]:
    """The pairs listed in a CSV with columns :data:`PAIR_COLUMNS` (paths relative to the CSV),
    each aligned by its landmarks."""
    path = Path(path)
    text = read_utf8_text(path, "a CSV of pairs with landmarks")
    try:
        rows = list(csv.DictReader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise InputError(f"{path.name}: not a readable CSV ({exc})") from exc
    missing = [column for column in PAIR_COLUMNS if not rows or column not in rows[0]]
    if missing:
        raise InputError(f"{path.name}: need a header with columns {', '.join(PAIR_COLUMNS)} and at "
                         f"least one row (missing: {', '.join(missing)})")
    pairs = []
    for number, row in enumerate(rows, start=2):
        if any(not row.get(column) for column in PAIR_COLUMNS):
            raise InputError(f"{path.name} line {number}: a value is missing")
        name = row.get("pair_id") or row.get("name") or Path(row["moving_image"]).stem
        pairs.append(TeachingPair.from_landmarks(
            read_image(path.parent / row["fixed_image"]), read_image(path.parent / row["moving_image"]),
            read_landmarks(path.parent / row["fixed_landmarks"]),
            read_landmarks(path.parent / row["moving_landmarks"]), name=name))
    return pairs


def image_channels(image) -> int:
    """Channels of an image as a modality sees it: 1 (grey) or 3 (RGB; an alpha dropped)."""
    return validate_image(image, name="image").shape[-1]


def starting_model(fixed_channels: int, moving_channels: int, start: ComirModel, *,
                   fixed_modality: str = "fixed", moving_modality: str = "moving",
                   name: str = "taught") -> ComirModel:
    """A model for a new modality pair whose two networks both start as ``start``'s
    bright-field network (:data:`START_NETWORK`).

    Parameters
    ----------
    fixed_channels, moving_channels : {1, 3}
        Channels of each modality's images (grey or RGB).
    start : ComirModel
        The bundled model lending its bright-field network (bf-shg).
    fixed_modality, moving_modality : str
        The modalities' names: the network called ``fixed_modality`` takes the fixed images.
    """
    for modality in (fixed_modality, moving_modality):
        if not isinstance(modality, str) or not MODALITY_NAME.match(modality):
            raise InputError(f"a modality's name is a word of letters, digits, '_' or '-' (at "
                             f"most 32, e.g. 'he' or 'ihc'), got {modality!r}")
    source = start.networks[START_NETWORK].state_dict()
    modalities = {}
    for modality, channels in ((fixed_modality, fixed_channels), (moving_modality, moving_channels)):
        if channels not in (1, 3):
            raise InputError(f"{modality} images have {channels} channels; a taught model takes "
                             "grey (1) or RGB (3) images")
        modalities[modality] = ModalitySpec(channels)
    if fixed_modality == moving_modality:
        raise InputError(f"the two modalities need different names, got {fixed_modality!r} twice")
    card = ModelCard(name=name, modalities=modalities, fixed_modality=fixed_modality,
                     moving_modality=moving_modality, tau=start.card.tau, critic=start.card.critic,
                     architecture=dict(start.card.architecture),
                     score_threshold=start.card.score_threshold,
                     detail_threshold=start.card.detail_threshold)  # pixel size: the images', unknown
    model = ComirModel(card)
    for modality, spec in modalities.items():
        model.networks[modality].load_state_dict(_for_channels(source, spec.channels))
    return model.eval()


def _for_channels(state: dict, channels: int) -> dict:
    """An RGB network's weights for ``channels`` inputs: for grey, each first-layer filter summed
    over R, G and B (the response to a grey image repeated into the three channels)."""
    state = copy.deepcopy(state)
    first = next(key for key, value in state.items() if value.ndim == 4)  # the first convolution
    if channels == 1:
        state[first] = state[first].sum(dim=1, keepdim=True)
    return state


def teach_config(max_seconds: float = DEFAULT_TEACH_SECONDS, *, new_pair: bool = True,
                 frozen_modality: str | None = None, seed: int = 0, device: str = "auto",
                 grey_route: bool = False) -> TrainConfig:
    """The recipe's :class:`TrainConfig`: what the GUI's teach step, the Fine-tune widget,
    ``napari-comir train --landmarks`` and :func:`napari_comir.api.teach` all train with.

    ``new_pair``: networks learning a new modality pair (from :func:`starting_model`) train at
    :data:`TEACH_LR` with BatchNorm statistics re-estimated and RGB patches' hue turned within
    ±:data:`TEACH_HUE_DEGREES`; a model taught more pairs of its own
    modalities (``False``) trains gently, at ``FINE_TUNE_LR`` with its statistics kept (at
    :data:`TEACH_LR`, bf-shg taught one grey pair registered 10 of the 20 grey raw cases, not 17).
    ``frozen_modality``: a network left as it started (the other learns to meet its CoMIRs).
    ``grey_route``: only the grey palette learns (:mod:`~napari_comir.core.grey_route`), at
    :data:`GREY_ROUTE_LR` for :data:`GREY_ROUTE_STEPS` steps (or ``max_seconds``).
    """
    if grey_route:
        return TrainConfig(steps=GREY_ROUTE_STEPS, max_seconds=max_seconds, lr=GREY_ROUTE_LR,
                           seed=seed, device=device)
    settings = dict(steps=10**9, max_seconds=max_seconds, seed=seed, device=device,
                    frozen_modalities=(frozen_modality,) if frozen_modality else ())
    if not new_pair:
        return fine_tune_config(**settings)
    return TrainConfig(lr=TEACH_LR, freeze_batchnorm=False, hue_degrees=TEACH_HUE_DEGREES, **settings)


def null_detail_scores(pairs: Sequence[TeachingPair], model: ComirModel,
                       register: RegisterFunction) -> list[float]:
    """Detail scores (:mod:`~napari_comir.core.registration.confidence`) of the best placements
    ``register`` finds for garbage: each taught pair's fixed image against its moving image
    mirrored left-right and upside down. No rotation or scale reaches a mirror image, so what
    agrees there agrees by chance, on the taught modalities' own tissue."""
    scores = []
    for pair in list(pairs)[:NULL_PAIRS]:
        for axis in (1, 0):
            mirrored = np.ascontiguousarray(np.flip(pair.moving_image, axis))
            try:
                scores.append(float(register(pair.fixed_image, mirrored, model).detail_score))
            except RegistrationError:  # garbage that cannot even be placed agrees with nothing
                scores.append(0.0)
    return scores


def calibrated_detail_threshold(null_scores: Sequence[float]) -> float:
    """The taught model's detail threshold: :data:`NULL_MARGIN` times the highest null score,
    at least :data:`MIN_DETAIL_THRESHOLD`."""
    return max(MIN_DETAIL_THRESHOLD, NULL_MARGIN * max(null_scores))


@dataclass
class PairCheck:
    """One held-out pair registered by the taught and by the old model.

    ``*_result`` are the registrations (``transform``, ``success_likely``...), ``*_error`` their
    :meth:`TeachingPair.error` (fixed px), ``*_registered`` :meth:`TeachingPair.registered`;
    the ``old_*`` fields are ``None`` without an old model.
    """

    name: str
    new_result: object
    new_error: float
    new_registered: bool
    old_result: object = None
    old_error: float | None = None
    old_registered: bool | None = None


@dataclass
class TeachOutcome:
    """The last event's result of :func:`teaching_events`.

    ``replaces`` says whether ``model`` may replace ``old`` (``reason`` says why, in words);
    ``checks`` are the held-out pairs' results. ``old`` is never changed.
    """

    model: ComirModel
    old: ComirModel | None
    checks: list[PairCheck] = field(default_factory=list)
    replaces: bool = False
    reason: str = ""
    seconds: float = 0.0
    steps: int = 0


RegisterFunction = Callable[[np.ndarray, np.ndarray, ComirModel], "object"]


def verdict(checks: Sequence[PairCheck]) -> tuple[bool, str]:
    """(whether the taught model may replace the old one, why) from the held-out checks."""
    lost = [c.name for c in checks if c.old_registered and not c.new_registered]
    registered = sum(c.new_registered for c in checks)
    before = sum(bool(c.old_registered) for c in checks)
    if lost:
        return False, (f"kept the old model: the taught one no longer registers {', '.join(lost)}, "
                       "which the old one did")
    if not registered:
        return False, f"kept the old model: the taught one registers none of the {len(checks)} check pair(s)"
    compared = any(c.old_registered is not None for c in checks)
    return True, (f"the taught model registers {registered} of {len(checks)} check pair(s)"
                  + (f" (the old one {before})" if compared else ""))


def teaching_events(pairs: Sequence[TeachingPair], model: ComirModel, register: RegisterFunction, *,
                 old: ComirModel | None = None, check_pairs: Sequence[TeachingPair] = (),
                 config: TrainConfig | None = None, started_from: str = "",
                 new_pair: bool = True) -> Iterator[Progress]:
    """Train ``model`` in place on ``pairs``, then check it on ``check_pairs``; a generator.

    Parameters
    ----------
    pairs : sequence of TeachingPair
        The pairs taught on.
    model : ComirModel
        The model trained (a copy of the old one, or :func:`starting_model`).
    register : callable
        ``register(fixed_image, moving_image, model)`` -> a result with ``transform`` and
        ``success_likely`` (:func:`napari_comir.api.register_multimodal`).
    old : ComirModel, optional
        The model the taught one would replace; registered on the check pairs too.
    check_pairs : sequence of TeachingPair
        Held out of the teaching. Without any, the taught pairs are registered from scratch
        (a global search, not from the transform taught) instead: a weaker check, said so.
    config : TrainConfig, optional
        Default :func:`teach_config`.
    started_from : str
        What ``model`` started as, in words, for its card.
    new_pair : bool
        ``model`` learns a new modality pair: the detail threshold its card holds was measured
        for other CoMIRs and is replaced by the calibrated one. ``False`` (a model taught more
        pairs of its own modalities): its threshold, measured on many pairs, only rises if the
        garbage demands it.

    Yields
    ------
    Progress
        ``"train"`` events (loss per step), then one ``"check"`` event per pair; the last
        one's ``result`` is a :class:`TeachOutcome`.
    """
    if not pairs:
        raise InputError("need at least one aligned pair to teach on")
    # A grey bright field for a model's own RGB network: its grey route alone learns.
    routes = [] if new_pair else grey_routes(model.card, pairs)
    config = config or teach_config(grey_route=bool(routes))
    aligned = [pair.aligned(model.card.fixed_modality, model.card.moving_modality) for pair in pairs]
    last, start = None, time.perf_counter()
    training = (grey_route_events(model, routes, aligned, config) if routes
                else train(model, aligned, config))
    for last in training:
        yield last
    seconds = time.perf_counter() - start
    yield Progress("calibrate", 0, 1, "calibrating the verdict: registering the taught images "
                   "mirrored, which no transform aligns")
    null_scores = null_detail_scores(pairs, model, register)
    calibrated = calibrated_detail_threshold(null_scores)
    model.card.detail_threshold = calibrated if new_pair else max(calibrated,
                                                                  model.card.detail_threshold)
    yield Progress("calibrate", 1, 1, f"detail threshold {model.card.detail_threshold:.2f} "
                   f"(mirrored pairs reached {max(null_scores):.2f})")
    checking = list(check_pairs) or list(pairs)
    checks = []
    for index, pair in enumerate(checking, start=1):
        found = register(pair.fixed_image, pair.moving_image, model)
        check = PairCheck(pair.name, found, pair.error(found.transform),
                          pair.registered(found.transform))
        if old is not None:
            check.old_result = register(pair.fixed_image, pair.moving_image, old)
            check.old_error = pair.error(check.old_result.transform)
            check.old_registered = pair.registered(check.old_result.transform)
        checks.append(check)
        message = f"checked {pair.name}: {check.new_error:.1f} px"
        if old is not None:
            message += f" (old model {check.old_error:.1f} px)"
        yield Progress("check", index, len(checking), message)
    replaces, reason = verdict(checks)
    if not check_pairs:
        reason += " (no pairs held out: checked on the taught pairs, registered from scratch)"
    _describe(model.card, pairs, checks, config, started_from, seconds, last.step if last else 0,
              bool(check_pairs), null_scores, routes)
    outcome = TeachOutcome(model, old, checks, replaces, reason, seconds, last.step if last else 0)
    yield Progress("check", len(checking), len(checking), reason, result=outcome)


def channels_message(card: ModelCard) -> str:
    """Which image goes to which network, in words (for the CLI and the GUI)."""
    def describe(modality):
        channels = card.modalities[modality].channels
        return f"{modality!r} ({'RGB' if channels == 3 else 'grey' if channels == 1 else channels})"
    return (f"fixed images go to network {describe(card.fixed_modality)}, moving images to "
            f"network {describe(card.moving_modality)}")


def _describe(card: ModelCard, pairs, checks, config, started_from, seconds, steps, held_out,
              null_scores, routes):
    """Write what the model was taught on and what it was measured on into its card."""
    taught = (f"only the grey palette of {', '.join(map(repr, routes))} learned, the networks "
              "unchanged; " if routes else "")
    card.description = (f"Taught on {len(pairs)} pair(s) by napari-comir's teaching recipe; "
                        + taught + channels_message(card) + ".")
    card.training = {"pairs": [pair.name for pair in pairs], "recipe": "core.teaching",
                     "taught": ("grey palette of " + ", ".join(routes)) if routes else "networks",
                     "started_from": started_from, "lr": config.lr, "batch_size": config.batch_size,
                     "patch_size": config.patch_size, "hue_degrees": config.hue_degrees,
                     "shift_px": config.shift_px, "seed": config.seed, "steps": steps,
                     "seconds": round(seconds, 1)}
    card.metrics = {"checked_on": "pairs held out of the teaching" if held_out
                    else "the taught pairs, registered from scratch",
                    "detail_threshold": {"null_scores": [round(v, 2) for v in null_scores],
                                         "margin": NULL_MARGIN},
                    "checks": [{"pair": c.name, "error_px": round(c.new_error, 2),
                                "registered": c.new_registered,
                                "likely": bool(c.new_result.success_likely),
                                "detail_score": round(float(c.new_result.detail_score), 2),
                                **({} if c.old_error is None else
                                   {"old_error_px": round(c.old_error, 2),
                                    "old_registered": c.old_registered})} for c in checks]}
