"""Measurements of a model's quality: rotation equivariance (registration success is in the benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import field_transform
from .defaults import SUCCESS_FRACTION
from .errors import InputError
from .field_transform import coverage
from .inference import COMIR_EDGE_PX, comir_tiles, compute_comir
from .progress import Progress
from .resampling import resample
from .transforms import AffineTransform
from .zoo import ComirModel


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two arrays of one shape, over ``mask`` when given.

    NaN when it is undefined (a constant array, or fewer than 2 values).
    """
    if mask is not None:
        a, b = a[mask], b[mask]
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def _rotate(image: np.ndarray, angle_deg: float, order: int = 1) -> np.ndarray:
    """Rotate (rows, cols[, channels]) about the image centre, keeping the shape."""
    return ndimage.rotate(image, angle_deg, axes=(1, 0), reshape=False, order=order, mode="reflect")


def local_ncc(a: np.ndarray, b: np.ndarray, window: int,
              valid: np.ndarray | None = None) -> np.ndarray:
    """Windowed normalised cross-correlation of two (rows, cols, C) images, averaged over channels.

    1 = the CoMIRs agree locally, 0 = unrelated, -1 = inverted; NaN where a window is flat
    (no structure to compare) or outside ``valid``.
    """
    out = np.zeros(a.shape[:2], np.float64)
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)

        def mean(v):
            return ndimage.uniform_filter(v, window, mode="reflect")

        mx, my = mean(x), mean(y)
        cov = mean(x * y) - mx * my
        var = np.maximum(mean(x * x) - mx**2, 0) * np.maximum(mean(y * y) - my**2, 0)
        flat = var <= 1e-6 * max(x.var() * y.var(), 1e-30)  # relative: CoMIRs are unscaled
        out += np.where(flat, np.nan, cov / np.sqrt(np.where(flat, 1.0, var)))
    out /= a.shape[-1]
    if valid is not None:
        out[~valid] = np.nan
    return out.astype(np.float32)


def agreement_map(fixed_comir: np.ndarray, moving_comir: np.ndarray, transform, window: int,
                  edge_px: int = COMIR_EDGE_PX) -> tuple[np.ndarray, float]:
    """Where two CoMIRs agree under ``transform`` (moving -> fixed): their :func:`local_ncc`
    on the fixed grid, NaN where the moving CoMIR does not cover it, and where a window reaches
    within ``edge_px`` of either CoMIR's edge (the networks' padded border: a band of
    "disagree" framed every map).

    Returns
    -------
    ncc : np.ndarray
        (rows, cols) float32 of the fixed CoMIR's grid.
    overlap : float
        The share of the fixed grid compared (a pair whose CoMIRs hardly overlap is no pair).
    """
    fixed_comir, moving_comir = (np.asarray(comir, np.float32).reshape(*np.shape(comir)[:2], -1)
                                 for comir in (fixed_comir, moving_comir))
    if fixed_comir.shape[-1] != moving_comir.shape[-1]:
        raise InputError(f"the CoMIRs have {fixed_comir.shape[-1]} and {moving_comir.shape[-1]} "
                         "channels: they are of different models")
    shape = fixed_comir.shape[:2]
    # affine or deformable (a review's result)
    warped = field_transform.resample(moving_comir, transform, shape, order=1).reshape(*shape, -1)
    inside = coverage(moving_comir.shape, transform, shape) > 0.999
    if edge_px > 0:  # outside the fixed grid counts as uncovered: its edge band goes too
        reach = edge_px + window // 2  # a window that reaches into the band reads it
        inside = ndimage.minimum_filter(inside, size=2 * reach + 1, mode="constant", cval=False)
    return local_ncc(fixed_comir, warped, window, inside), float(inside.mean())


def equivariance_score(model: ComirModel, image: np.ndarray, modality: str,
                       angles: Sequence[float] = tuple(range(0, 360, 15)),
                       **options) -> dict[float, float]:
    """How well the CoMIR follows rotations of the input.

    For each angle: rotate the input, compute the CoMIR, rotate it back, and correlate it
    with the CoMIR of the unrotated input inside the central disc (where no image content
    left the frame). 1.0 is perfect equivariance.

    Parameters
    ----------
    image : numpy.ndarray
        (rows, cols) or (rows, cols, channels) raw image of ``modality``, ideally square.

    options
        Passed to :func:`napari_comir.core.inference.comir_tiles` (e.g. ``c4_average=True``).

    Returns
    -------
    dict
        angle in degrees -> Pearson correlation.
    """
    reference = compute_comir(model, image, modality, **options)
    rows, cols = reference.shape[:2]
    yy, xx = np.mgrid[:rows, :cols]
    radius = 0.5 * min(rows, cols) - 8  # margin: interpolation and padding effects at the rim
    disc = (yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2 <= radius**2
    scores = {}
    for angle in angles:
        rotated = _rotate(np.asarray(image, np.float32), angle)
        back = _rotate(compute_comir(model, rotated, modality, **options), -angle)
        scores[float(angle)] = pearson(back, reference, disc)
    return scores


def make_rigid_case(fixed_full: np.ndarray, moving_full: np.ndarray, angle_deg: float,
                    shift_xy: tuple[float, float], crop: int):
    """A registration case from an aligned pair, as in the MultiRegEval protocol.

    The fixed patch is the central ``crop`` x ``crop`` window of ``fixed_full``. The moving
    patch is the central window of ``moving_full`` after a rigid warp ``A`` (rotation by
    ``angle_deg`` about the image centre, then ``shift_xy``), so moving pixel ``p`` shows
    aligned pixel ``A^-1 (p + o)``, i.e. fixed-patch pixel ``A^-1 (p + o) - o`` (``o`` the
    crop offset).

    Parameters
    ----------
    fixed_full, moving_full : numpy.ndarray
        Aligned images (rows, cols[, channels]) of one size.
    shift_xy : (float, float)
        Translation in (x, y) pixels.

    Returns
    -------
    fixed, moving : numpy.ndarray
    true : AffineTransform
        Moving (x, y) -> fixed (x, y) of the two patches.
    """
    from .resampling import resample
    from .transforms import AffineTransform

    rows, cols = fixed_full.shape[:2]
    warp = AffineTransform.about_center(angle_deg, ((cols - 1) / 2, (rows - 1) / 2), shift_xy)
    warped = resample(np.asarray(moving_full, np.float32), warp, (rows, cols), order=3,
                      cval=_border_value(moving_full), preserve_dtype=False)
    r0, c0 = (rows - crop) // 2, (cols - crop) // 2
    offset = AffineTransform.rigid(0.0, (c0, r0))
    true = offset.inverse().compose(warp.inverse()).compose(offset)
    window = (slice(r0, r0 + crop), slice(c0, c0 + crop))
    return fixed_full[window], warped[window], true


def _border_value(image: np.ndarray) -> float:
    """Median of the border pixels: what lies beyond the frame (slide background)."""
    border = np.concatenate([image[0].ravel(), image[-1].ravel(), image[:, 0].ravel(),
                             image[:, -1].ravel()])
    return float(np.median(border))


def random_rigid(rng: np.random.Generator, max_angle_deg: float, max_shift: float):
    """(angle_deg, (tx, ty)): angle ~ U(±max_angle), shift uniform in the disc of radius max_shift."""
    angle = rng.uniform(-max_angle_deg, max_angle_deg)
    radius, phi = max_shift * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    return angle, (radius * np.cos(phi), radius * np.sin(phi))


def degrade(image: np.ndarray, rng: np.random.Generator, gamma_range=(0.7, 1.4),
            noise_std: float = 0.05) -> np.ndarray:
    """Random gamma and Gaussian noise (std relative to the range) on an image scaled to [0, 1]."""
    image = np.asarray(image, np.float32)
    low, high = float(image.min()), float(image.max())
    unit = (image - low) / max(high - low, 1e-6)
    out = unit ** rng.uniform(*gamma_range) + rng.normal(0.0, noise_std, unit.shape)
    return np.clip(out, 0, 1).astype(np.float32) * (high - low) + low


@dataclass(frozen=True)
class Scenario:
    """A registration benchmark setting: crop side, angle ~ U(±max_angle), |t| <= max_shift."""

    crop: int
    max_angle: float
    max_shift: float
    noisy: bool = False  # gamma and Gaussian noise on both images (see :func:`degrade`)

    @property
    def success_px(self) -> float:
        """Largest corner error that counts as a success: 2 % of the width."""
        return SUCCESS_FRACTION * self.crop


SCENARIOS = {
    "30": Scenario(300, 30.0, 20.0),
    "180": Scenario(300, 180.0, 20.0),
    "hard": Scenario(256, 180.0, 40.0, noisy=True),
}


@dataclass
class Case:
    """One benchmark case; ``rng`` may be drawn on further (e.g. to degrade a decoy image)."""

    pair_index: int
    pair: object
    rng: np.random.Generator
    angle: float
    shift: tuple[float, float]
    fixed: np.ndarray
    moving: np.ndarray
    truth: object  # AffineTransform, moving (x, y) -> fixed (x, y)


def rigid_cases(pairs: Sequence, scenario: Scenario, seeds: int, fixed_modality: str = "shg",
                moving_modality: str = "bf") -> Iterator[Case]:
    """The cases of ``scenario`` for each aligned pair and seed, reproducible across scripts."""
    for index, pair in enumerate(pairs):
        for seed in range(seeds):
            rng = np.random.default_rng([seed, index, scenario.crop, int(scenario.max_angle)])
            angle, shift = random_rigid(rng, scenario.max_angle, scenario.max_shift)
            fixed, moving, truth = make_rigid_case(pair.images[fixed_modality],
                                                   pair.images[moving_modality], angle, shift,
                                                   scenario.crop)
            if scenario.noisy:
                fixed, moving = degrade(fixed, rng), degrade(moving, rng)
            yield Case(index, pair, rng, angle, shift, fixed, moving, truth)


@dataclass
class RawCase:
    """A real registration case: an SHG, the raw H&E as scanned, and the reference transform.

    ``truth`` maps the raw H&E (moving) (x, y) to the SHG (fixed) (x, y).
    """

    name: str
    split: str
    fixed: np.ndarray
    moving: np.ndarray
    truth: object  # AffineTransform

    def error(self, found) -> float:
        """The shared data's score: mean distance of the SHG frame's corners (0, 0), (w, 0),
        (w, h), (0, h) sent into the raw H&E by the inverse of ``truth`` and of ``found``."""
        h, w = self.fixed.shape[:2]
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
        return float(np.linalg.norm(self.truth.inverse().apply_xy(corners)
                                    - found.inverse().apply_xy(corners), axis=1).mean())

    @property
    def success_px(self) -> float:
        """2 % of the fixed image's width."""
        return SUCCESS_FRACTION * self.fixed.shape[1]


def raw_cases(folder, split: str | None = None) -> list[RawCase]:
    """The cases of ``bf_shg_raw/pairs.csv`` in ``folder`` (optionally one split)."""
    import csv
    import json
    from pathlib import Path

    from .io import read_image
    from .transforms import AffineTransform

    folder = Path(folder)
    cases = []
    with open(folder / "pairs.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if split is not None and row["split"] != split:
                continue
            reference = json.loads((folder / row["affine_file"]).read_text(encoding="utf-8"))
            cases.append(RawCase(row["name"], row["split"], read_image(folder / row["shg_file"]),
                                 read_image(folder / row["bf_raw_file"]),
                                 AffineTransform(reference["matrix_bf_raw_to_shg"])))
    return cases


def rotation_equivariance_events(model: ComirModel, image: np.ndarray, modality: str,
                        angle: float) -> Iterator[Progress]:
    """How rotation-equivariant a network is on ``image``: the correlation r of CoMIR(image)
    and rotate⁻¹(CoMIR(rotate(image))) by ``angle`` degrees (1 = perfectly equivariant), on the
    pixels that stay inside the image both ways. Progress events; the last ``result`` is
    (r, the rotated-back CoMIR)."""
    rows, cols = image.shape[:2]
    rotation = AffineTransform.about_center(angle, ((cols - 1) / 2, (rows - 1) / 2))
    rotated = resample(image, rotation, (rows, cols), order=1)
    comirs = []
    for label, img in (("original", image), ("rotated", rotated)):
        for event in comir_tiles(model, img, modality):
            if event.result is not None:
                comirs.append(event.result)
            yield Progress("infer", event.step, event.total, f"{label}: {event.message}")
    back = resample(comirs[1], rotation.inverse(), (rows, cols), order=1)
    # Compare only pixels that stayed inside the image both ways, away from the padded border.
    inside = coverage((rows, cols), rotation, (rows, cols))
    inside = resample(inside, rotation.inverse(), (rows, cols), order=1) > 0.999
    inside = ndimage.binary_erosion(inside, iterations=4)
    r = pearson(comirs[0], back, np.repeat(inside[..., None], comirs[0].shape[-1], -1))
    yield Progress("infer", 1, 1, f"r = {r:.3f}", result=(r, back))


def smooth_deformation(shape, max_displacement_px: float, rng: np.random.Generator, *,
                       smoothness_px: float = 64.0, spacing_px: float = 4.0):
    """A random smooth, fold-free deformation of an image of ``shape`` (a benchmark case).

    Each of (dx, dy) is white noise blurred by a Gaussian of ``smoothness_px``, scaled so the
    largest displacement is ``max_displacement_px``.

    Returns
    -------
    DisplacementFieldTransform
        Identity affine part; ``resample(image, field.inverse(), shape)`` deforms an image so
        that ``field`` maps the deformed image (moving) back onto ``image`` (fixed).
    """
    from .field_transform import DisplacementFieldTransform, grid_shape

    nodes = grid_shape(shape, spacing_px)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(nodes), smoothness_px / spacing_px,
                                              mode="reflect") for _ in range(2)], axis=-1)
    field *= max_displacement_px / np.linalg.norm(field, axis=-1).max()
    return DisplacementFieldTransform.from_displacement(AffineTransform.rigid(0.0), field, spacing_px)
