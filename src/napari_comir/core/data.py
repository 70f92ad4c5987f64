"""Input validation, normalisation, aligned pairs and the random patch sampler for training."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .io import read_image
from .io.files import as_path

MIN_SIZE = 16


#: Grey levels of the knots of a :attr:`ModalitySpec.grey_palette` (8-bit grey).
PALETTE_LEVELS = np.linspace(0.0, 255.0, 33)
_LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as OpenCV's RGB2GRAY


@dataclass(frozen=True)
class ModalitySpec:
    """How one modality's raw image becomes network input.

    Parameters
    ----------
    channels : int
        Channels the network expects (3 for RGB, 1 for grey).
    log1p : bool
        Apply log(1 + x) first (SHG: sparse, heavy-tailed intensities).
    percentiles : tuple of float
        Per-channel intensity percentiles mapped to 0 and 1.
    grey_palette : tuple of (r, g, b), optional
        For an RGB modality: the mean colour of the training images' pixels at each grey level
        of :data:`PALETTE_LEVELS` (see :func:`grey_palette`). A grey image given for this
        modality is coloured with it, so the network sees the colours it was trained on.
    """

    channels: int
    log1p: bool = False
    percentiles: tuple[float, float] = (0.5, 99.5)
    grey_palette: tuple[tuple[float, float, float], ...] | None = None

    @classmethod
    def from_dict(cls, spec: dict) -> ModalitySpec:
        """Build from a model card's entry, checking every type and range (InputError)."""
        if not isinstance(spec, dict):
            raise InputError(f"a modality must be an object with its channels, got {spec!r:.40}")
        channels, log1p = spec["channels"], spec.get("log1p", False)
        if isinstance(channels, bool) or not isinstance(channels, int):
            raise InputError(f"channels must be a whole number, got {channels!r:.40}")
        if not isinstance(log1p, bool):
            raise InputError(f"log1p must be true or false, got {log1p!r:.40}")
        percentiles = spec.get("percentiles", (0.5, 99.5))
        if (not isinstance(percentiles, (list, tuple)) or len(percentiles) != 2
                or any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in percentiles)
                or not 0 <= percentiles[0] < percentiles[1] <= 100):
            raise InputError(f"percentiles must be two numbers, low < high, within [0, 100]; got "
                             f"{percentiles!r:.40}")
        palette = spec.get("grey_palette")
        if palette is not None:
            palette = np.asarray(palette, dtype=float)
            if palette.shape != (len(PALETTE_LEVELS), 3) or not np.all(np.isfinite(palette)):
                raise InputError(f"grey_palette must be {len(PALETTE_LEVELS)} (r, g, b) triples")
            palette = tuple(tuple(float(v) for v in row) for row in palette)
        return cls(channels, log1p, tuple(float(p) for p in percentiles), palette)

    def to_dict(self) -> dict:
        out = {"channels": self.channels, "log1p": self.log1p, "percentiles": list(self.percentiles)}
        if self.grey_palette is not None:
            out["grey_palette"] = [[round(v, 2) for v in row] for row in self.grey_palette]
        return out


def grey_palette(rgb_images: Sequence[np.ndarray]) -> tuple[tuple[float, float, float], ...]:
    """Mean colour at each grey level of :data:`PALETTE_LEVELS` over 8-bit RGB images.

    Each pixel's luminance is rounded to a level; levels no pixel reached are interpolated.
    """
    levels = PALETTE_LEVELS
    total, count = np.zeros((len(levels), 3)), np.zeros(len(levels))
    for image in rgb_images:
        pixels = np.asarray(image, dtype=np.float32).reshape(-1, image.shape[-1])[:, :3]
        nearest = np.rint(np.clip(pixels @ _LUMINANCE, 0, 255) / (levels[1] - levels[0])).astype(int)
        np.add.at(total, nearest, pixels)
        np.add.at(count, nearest, 1)
    seen = count > 0
    if not seen.any():
        raise InputError("no pixels to derive a grey palette from")
    mean = total[seen] / count[seen, None]
    return tuple(tuple(float(np.interp(level, levels[seen], mean[:, c])) for c in range(3))
                 for level in levels)


def grey_levels(grey: np.ndarray) -> np.ndarray:
    """(H, W, 1) or (H, W) grey -> (H, W) float32 8-bit levels, as :func:`colourise` reads them:
    uint16 is divided by 257, floats of at most 1 are scaled by 255, anything else is taken
    as 0-255."""
    grey = np.asarray(grey)
    values = grey.reshape(grey.shape[:2]).astype(np.float32)
    if grey.dtype == np.uint16:
        values /= 257.0
    elif np.issubdtype(grey.dtype, np.floating) and values.size and np.nanmax(values) <= 1.0:
        values *= 255.0
    return values


def colourise(grey: np.ndarray, palette) -> np.ndarray:
    """(H, W, 1) or (H, W) grey -> (H, W, 3) float32 colours of ``palette`` (see :func:`grey_levels`)."""
    values = grey_levels(grey)
    table = np.asarray(palette, dtype=np.float32)
    return np.stack([np.interp(values, PALETTE_LEVELS, table[:, c]).astype(np.float32)
                     for c in range(3)], axis=-1)


def validate_image(image, channels: int | None = None, *, name: str = "image",
                   min_size: int = MIN_SIZE, grey_palette=None) -> np.ndarray:
    """Check that ``image`` is a usable 2-D grey or colour image and return it as (H, W, C).

    Parameters
    ----------
    image : array-like
        (rows, cols) or (rows, cols, channels). An alpha channel of an RGBA image is dropped.
    channels : int, optional
        Channels the caller needs; a mismatch is an error, except that a grey image is
        accepted where 3 (RGB) are needed: coloured with ``grey_palette`` (see :func:`colourise`),
        or repeated into each channel without one.
    name : str
        Used in error messages ("fixed image", "bf image"...).
    min_size : int
        Smallest allowed side in pixels.

    Raises
    ------
    InputError
        With a message naming what was wrong and what was expected.
    """
    array = np.asarray(image)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{name}: dtype {array.dtype} is not supported; "
                         "expected integer or float intensities")
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape})")
    if array.ndim == 3 and array.shape[-1] == 4 and channels != 4:
        array = array[..., :3]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] > 4:
        raise InputError(
            f"{name}: shape {np.shape(image)} is not a 2-D image; expected (rows, cols) or "
            "(rows, cols, channels) with ≤ 4 channels — 3-D stacks and time series are not supported"
        )
    if channels == 3 and array.shape[-1] == 1:
        # A grey bright field (unstained, or saved as 8-bit grey): its palette's colours
        # registered 17-18 of the 20 raw BF/SHG cases, R = G = B only 9 (docs/benchmarks.md).
        array = (colourise(array, grey_palette) if grey_palette is not None
                 else np.repeat(array, 3, axis=-1))
    if channels is not None and array.shape[-1] != channels:
        raise InputError(f"{name} has {array.shape[-1]} channel(s) but {channels} are expected "
                         f"({'RGB' if channels == 3 else 'grey' if channels == 1 else channels})")
    if min(array.shape[:2]) < min_size:
        raise InputError(f"{name} is too small: {array.shape[0]}x{array.shape[1]} px, "
                         f"need at least {min_size}x{min_size}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def subsample(array: np.ndarray, max_pixels: int = 1_000_000) -> np.ndarray:
    """A strided view with at most ``max_pixels`` pixels, for cheap percentiles of huge images."""
    stride = max(1, math.ceil(math.sqrt(array.shape[0] * array.shape[1] / max_pixels)))
    return np.asarray(array[::stride, ::stride])


_TORCH_FRIENDLY = tuple(map(np.dtype, ("uint8", "int8", "int16", "uint16", "int32", "float16", "float32")))


def _as_tensor(image: np.ndarray, device) -> torch.Tensor:
    """(H, W, C) numpy -> float32 tensor on ``device``; integers travel in their own dtype (4x less)."""
    array = np.ascontiguousarray(image)
    if array.dtype not in _TORCH_FRIENDLY:
        array = array.astype(np.float32)
    return torch.from_numpy(array).to(device).float()


def _prepare(x: torch.Tensor, spec: ModalitySpec) -> torch.Tensor:
    return torch.log1p(x.clamp_min(0.0)) if spec.log1p else x


def intensity_range(image: np.ndarray, spec: ModalitySpec,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (low, high) intensities after log1p that :func:`normalize` maps to 0 and 1.

    Computed on ``device``; returns two (C,) float32 tensors there.
    """
    sample = _prepare(_as_tensor(subsample(image), device), spec)
    sample = sample.reshape(-1, sample.shape[-1])
    if sample.device.type == "cpu":  # numpy's selection beats torch's full sort here (5 vs 19 ms, 300² RGB)
        low, high = torch.from_numpy(np.percentile(sample.numpy(), spec.percentiles, axis=0)).float()
    else:
        q = torch.tensor(spec.percentiles, device=sample.device) / 100
        low, high = torch.quantile(sample.T, q, dim=1)
    return low, torch.maximum(high, low + 1e-6)


def normalize(image: np.ndarray, spec: ModalitySpec,
              value_range: tuple[torch.Tensor, torch.Tensor] | None = None,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """Map a validated (H, W, C) image to a (C, H, W) float32 tensor in [0, 1] on ``device``.

    ``value_range`` (from :func:`intensity_range`) lets tiles of a large image share one scaling.
    The result is a channels-last view (what the networks run fastest on), not a copy.
    """
    low, high = value_range if value_range is not None else intensity_range(image, spec, device)
    x = _prepare(_as_tensor(image, device), spec)
    return ((x - low.to(x.device)) / (high - low).to(x.device)).clamp(0.0, 1.0).permute(2, 0, 1)


@dataclass
class AlignedPair:
    """Two pixel-aligned images of one scene, keyed by modality name, e.g. ``{"bf": ..., "shg": ...}``."""

    images: dict[str, np.ndarray]
    name: str = "pair"

    def __post_init__(self):
        shapes = {key: np.shape(image)[:2] for key, image in self.images.items()}
        if len(set(shapes.values())) != 1:
            raise InputError(f"pair {self.name!r}: images are not the same size {shapes}; "
                             "aligned pairs must share one pixel grid")


def read_pairs_csv(path: str | os.PathLike, modalities: Sequence[str], split: str | None = None,
                   root: str | os.PathLike | None = None) -> list[AlignedPair]:
    """Read aligned pairs listed in a CSV with columns ``name`` and ``<modality>_file``.

    Parameters
    ----------
    path : path
        The CSV. Relative image paths are resolved against ``root`` (default: the CSV's folder).
    modalities : sequence of str
        E.g. ``("bf", "shg")``: columns ``bf_file`` and ``shg_file`` must exist.
    split : str, optional
        Keep only rows whose ``split`` column equals this (e.g. "train").
    """
    path = as_path(path, "the pairs CSV")
    if not path.is_file():
        raise InputError(f"no such pairs file: {path}")
    root = Path(root) if root is not None else path.parent
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, strict=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path.name}: not a readable UTF-8 CSV ({exc})") from exc
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        if None in row or any(value is None for value in row.values()):
            values = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise InputError(f"{path.name} line {number}: {values} values for "
                             f"{len(row) - (None in row)} columns; every row needs one value per column")
    missing = [f"{m}_file" for m in modalities if rows and f"{m}_file" not in rows[0]]
    if missing or not rows:
        raise InputError(f"{path.name}: need a header with columns name and {', '.join(missing) or 'file'} "
                         "and at least one row")
    if split is not None:
        rows = [row for row in rows if row.get("split") == split]
        if not rows:
            raise InputError(f"{path.name}: no rows with split == {split!r}")
    return [AlignedPair({m: read_image(root / row[f"{m}_file"]) for m in modalities},
                        name=row.get("name") or row[f"{modalities[0]}_file"]) for row in rows]


class PatchSampler:
    """Random aligned patches from aligned pairs, with rotation, flips and intensity jitter.

    All augmentation is torch-native: one ``grid_sample`` per patch applies the same random
    rotation/flip to both modalities so patches stay aligned; jitter is independent per modality.

    Parameters
    ----------
    pairs : list of AlignedPair
    specs : dict of str to ModalitySpec
        Normalisation per modality; the two keys define the modality order of :meth:`sample`.
    patch_size : int
    seed : int
    jitter : bool
        Random gamma, contrast, brightness and noise per patch and modality.
    hue_degrees : float
        RGB patches turned about the grey axis of colour space by a random angle within
        ±``hue_degrees``, per patch and modality: a stain's colour varies from lab to lab and
        between stains (0 = off).
    shift_px : float
        The second modality's patch placed up to ``shift_px`` px off the first's along each
        axis: serial sections aligned by landmarks still differ by a few px (0 = off).
    as_given : sequence of str
        Modalities whose (H, W, C) float images are sampled as they are, neither validated nor
        normalised (a grey route's levels / 255, coloured by a palette as it learns).
    """

    def __init__(self, pairs: Sequence[AlignedPair], specs: dict[str, ModalitySpec],
                 patch_size: int = 128, seed: int = 0, jitter: bool = True,
                 hue_degrees: float = 0.0, shift_px: float = 0.0, as_given: Sequence[str] = ()):
        if not pairs:
            raise InputError("need at least one aligned pair to train on")
        if isinstance(pairs, (str, bytes)) or not all(isinstance(p, AlignedPair) for p in pairs):
            raise InputError("pairs must be a list of AlignedPair (images of one scene by modality; "
                             "read_pairs_csv reads them from a CSV)")
        self.modalities = list(specs)
        self.patch_size, self.jitter = patch_size, jitter
        self.hue_degrees, self.shift_px = float(hue_degrees), float(shift_px)
        self.generator = torch.Generator().manual_seed(seed)
        self.tensors = []
        for pair in pairs:
            images = {}
            for modality, spec in specs.items():
                if modality not in pair.images:
                    raise InputError(f"pair {pair.name!r} has no {modality!r} image")
                if modality in as_given:
                    images[modality] = torch.from_numpy(np.asarray(pair.images[modality], np.float32)
                                                        ).permute(2, 0, 1).contiguous()
                    continue
                # a grey image for an RGB network as inference gives it: in its palette's colours
                image = validate_image(pair.images[modality], spec.channels,
                                       name=f"{pair.name} {modality}", min_size=patch_size,
                                       grey_palette=spec.grey_palette)
                images[modality] = normalize(image, spec).contiguous()
            self.tensors.append(images)
        areas = torch.tensor([float(t[self.modalities[0]].shape[-1] * t[self.modalities[0]].shape[-2])
                              for t in self.tensors])
        self.weights = areas / areas.sum()

    def _uniform(self, low: float, high: float, n: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def _grid(self, height: int, width: int) -> torch.Tensor:
        """Sampling grid (1, P, P, 2) of a randomly rotated, flipped, placed square patch."""
        size = self.patch_size
        angle = float(self._uniform(0.0, 2 * math.pi, 1))
        half_extent = 0.5 * (size - 1) * (abs(math.cos(angle)) + abs(math.sin(angle)))
        if 2 * half_extent + 1 > min(height, width):  # too small to rotate freely: stay axis-aligned
            angle, half_extent = 0.0, 0.5 * (size - 1)
        cx = float(self._uniform(half_extent, width - 1 - half_extent, 1))
        cy = float(self._uniform(half_extent, height - 1 - half_extent, 1))
        offsets = torch.arange(size, dtype=torch.float32) - 0.5 * (size - 1)
        flips = torch.randint(0, 2, (2,), generator=self.generator) * 2 - 1
        oy, ox = torch.meshgrid(offsets * flips[0], offsets * flips[1], indexing="ij")
        cos, sin = math.cos(angle), math.sin(angle)
        x = cx + cos * ox - sin * oy
        y = cy + sin * ox + cos * oy
        # align_corners=True: -1 and 1 are the centres of the first and last pixels
        return torch.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)[None]

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        shape = (n, 1, 1, 1)
        gamma = torch.exp(self._uniform(math.log(0.7), math.log(1.4), n)).view(shape)
        contrast = self._uniform(0.8, 1.2, n).view(shape)
        brightness = self._uniform(-0.1, 0.1, n).view(shape)
        noise = self._uniform(0.0, 0.03, n).view(shape)
        x = x.clamp_min(0.0).pow(gamma) * contrast + brightness
        return x + noise * torch.randn(x.shape, generator=self.generator)

    def _turn_hue(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, P, P) RGB turned about the grey axis by a random angle per patch (Rodrigues'
        rotation: greys stay grey, colours change hue), clipped to [0, 1]."""
        angles = torch.deg2rad(self._uniform(-self.hue_degrees, self.hue_degrees, x.shape[0]))
        axis = torch.full((3,), 3 ** -0.5)
        cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]],
                              [-axis[1], axis[0], 0.0]])
        rotations = (torch.cos(angles).view(-1, 1, 1) * torch.eye(3)
                     + torch.sin(angles).view(-1, 1, 1) * cross
                     + (1 - torch.cos(angles)).view(-1, 1, 1) * torch.outer(axis, axis))
        return torch.einsum("nij,njhw->nihw", rotations, x).clamp(0.0, 1.0)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return aligned patches of the two modalities, each (N, C_m, P, P)."""
        picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=self.generator)
        patches = {m: [] for m in self.modalities}
        for index in picks.tolist():
            tensors = self.tensors[index]
            height, width = tensors[self.modalities[0]].shape[-2:]
            grid = self._grid(height, width)
            for number, modality in enumerate(self.modalities):
                if number and self.shift_px:  # grid units: 2 / (side - 1) per px
                    shift = self._uniform(-self.shift_px, self.shift_px, 2)
                    grid = grid + 2 * shift / torch.tensor([width - 1.0, height - 1.0])
                patches[modality].append(
                    F.grid_sample(tensors[modality][None], grid, mode="bilinear", align_corners=True)
                )
        first, second = (torch.cat(patches[m]) for m in self.modalities)
        if self.hue_degrees:
            first, second = (self._turn_hue(x) if x.shape[1] == 3 else x for x in (first, second))
        if self.jitter:
            first, second = self._jitter(first), self._jitter(second)
        return first, second
