"""Synthetic, pixel-aligned bright-field (H&E) / second-harmonic-generation (SHG) image pairs.

The scene imitates a tissue-microarray core: a round-ish piece of tissue on an empty
background, with oriented, curvy collagen fibre bundles in the stroma, epithelial nests full
of nuclei, scattered stromal nuclei and a few fat cells. Both modalities are rendered from the
same scene but through different physics, so they are not one intensity mapping apart:

* BF (RGB uint8) is an H&E rendering by Beer-Lambert absorption: haematoxylin (purple) in
  nuclei, eosin (pink) in stroma and fibres, white where there is no tissue.
* SHG (grey uint8) shows only the collagen fibres, with a heavy-tailed local gain, fine fibrils
  that H&E does not resolve, and photon noise, on a dark background; nuclei are dark.

Arrays are indexed ``(row, col[, channel])``; transforms use ``(x, y) = (col, row)`` as in
:mod:`napari_comir.core.transforms`.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from .errors import InputError
from .resampling import resample
from .transforms import AffineTransform

# Optical density per unit stain (R, G, B), base 10: haematoxylin as in Ruifrok & Johnston
# (2001); eosin absorbs more blue than theirs, which gives the pink-red of real scans.
_HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
_EOSIN_OD = np.array([0.05, 0.80, 0.40])
# Light reaching the camera through an empty slide: slightly bluish white, like real scans.
_BF_BACKGROUND = np.array([244.0, 242.0, 248.0])
_N_ORIENTATIONS = 8
_MIN_SIDE = 16


def _check_shape(shape) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise InputError(f"shape must be (rows, cols), got {shape!r}") from exc
    if min(rows, cols) < _MIN_SIDE:
        raise InputError(f"shape must be at least {_MIN_SIDE}x{_MIN_SIDE} px, got {rows}x{cols}")
    return rows, cols


def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles/px) of an ``rfft2`` spectrum as ``(f_row[:, None], f_col[None, :])``."""
    return (sp_fft.fftfreq(shape[0]).astype(np.float32)[:, None],
            sp_fft.rfftfreq(shape[1]).astype(np.float32)[None, :])


def _white_spectrum(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    # float32 throughout: it halves the FFT time and the images end up as uint8 anyway.
    return sp_fft.rfft2(rng.standard_normal(shape, dtype=np.float32))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation.

    Filtering in Fourier space keeps large ``sigma`` cheap; the result wraps around the edges,
    which nothing here cares about.
    """
    fr, fc = _frequencies(shape)
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (fr**2 + fc**2))
    field = sp_fft.irfft2(_white_spectrum(rng, shape) * gain, s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def _oriented_noise(rng: np.random.Generator, shape: tuple[int, int], theta: np.ndarray,
                    scales) -> list[np.ndarray]:
    """Unit-variance noise fields streaked along the local fibre direction ``theta``.

    ``theta`` (radians, in the (x, y) frame) varies smoothly over the image. White noise is
    filtered with anisotropic Gaussians (``length`` px along, ``width`` px across the fibre) for a
    few fixed directions, and the results are blended per pixel by how close each direction is to
    ``theta``: streaks then bend with the orientation field, giving curvy fibre bundles.
    One independent field is returned per ``(length, width)`` in ``scales``.
    """
    fr, fc = _frequencies(shape)
    spectra = [_white_spectrum(rng, shape) for _ in scales]
    fields = [np.zeros(shape, dtype=np.float32) for _ in scales]
    weight_sq = np.zeros(shape, dtype=np.float32)
    cos2, sin2 = np.cos(2 * theta).astype(np.float32), np.sin(2 * theta).astype(np.float32)
    for phi in np.arange(_N_ORIENTATIONS) * np.pi / _N_ORIENTATIONS:
        along = fc * np.cos(phi) + fr * np.sin(phi)
        across = -fc * np.sin(phi) + fr * np.cos(phi)
        # Von Mises weight on doubled angles: fibres have a direction, not a sense.
        weight = np.exp(4.0 * (cos2 * np.cos(2 * phi) + sin2 * np.sin(2 * phi) - 1.0))
        weight_sq += weight**2
        for field, spectrum, (length, width) in zip(fields, spectra, scales, strict=True):
            gain = np.exp(-2 * np.pi**2 * ((length * along) ** 2 + (width * across) ** 2))
            streaks = sp_fft.irfft2(spectrum * gain, s=shape)
            field += weight * (streaks / (streaks.std() + 1e-12))
    norm = np.sqrt(weight_sq)
    return [field / norm for field in fields]


def _tissue_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A round-ish tissue core: a disc whose radius wobbles with a few random harmonics."""
    rows, cols = shape
    r, c = np.mgrid[:rows, :cols]
    dy, dx = r - (rows - 1) / 2, c - (cols - 1) / 2
    angle = np.arctan2(dy, dx)
    wobble = sum(rng.normal(0, 0.04 / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
                 for k in range(2, 7))
    radius = 0.42 * min(rows, cols) * (1 + wobble)
    return np.hypot(dy, dx) < radius


def _fat_cells(rng: np.random.Generator, tissue: np.ndarray, zone: np.ndarray) -> np.ndarray:
    """Empty round fat cells, 10-22 px across, scattered where ``zone`` is true in the tissue."""
    candidates = np.flatnonzero(tissue & zone)
    fat = np.zeros(tissue.shape, dtype=bool)
    if candidates.size == 0:
        return fat
    count = max(1, candidates.size // 1500)
    centres = np.unravel_index(rng.choice(candidates, size=count, replace=False), tissue.shape)
    radii = rng.uniform(5.0, 11.0, size=count)
    r, c = np.ogrid[:tissue.shape[0], :tissue.shape[1]]
    for row, col, radius in zip(*centres, radii, strict=True):
        half = int(radius) + 1
        r0, c0 = max(row - half, 0), max(col - half, 0)
        window = (slice(r0, row + half + 1), slice(c0, col + half + 1))
        fat[window] |= (r[window[0]] - row) ** 2 + (c[:, window[1]] - col) ** 2 <= radius**2
    return fat & tissue


def _nuclei(rng: np.random.Generator, density: np.ndarray) -> np.ndarray:
    """Nuclear stain in [0, 1]: flat-topped blobs 2-5 px across, placed as a Poisson process."""
    fr, fc = _frequencies(density.shape)
    freq_sq = fr**2 + fc**2
    stain = np.zeros(density.shape, dtype=np.float32)
    for sigma, share in ((0.9, 0.6), (1.4, 0.4)):  # two nucleus sizes
        seeds = (rng.random(density.shape, dtype=np.float32) < share * density).astype(np.float32)
        gain = np.exp(-2 * (np.pi * sigma) ** 2 * freq_sq)
        blobs = sp_fft.irfft2(sp_fft.rfft2(seeds) * gain, s=density.shape)
        stain += blobs * (2 * np.pi * sigma**2)  # peak 1 per nucleus
    return np.clip(1.6 * stain, 0.0, 1.0)


def synthetic_pair(shape=(512, 512), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render a pixel-aligned bright-field (H&E) / SHG image pair of a synthetic tissue core.

    Parameters
    ----------
    shape : tuple of int
        ``(rows, cols)`` of both images, each at least 16 px. Tissue structures have fixed sizes
        in pixels (nuclei ~2-5 px, fibres ~1-3 px wide); the core fills ~84 % of the shorter side.
    seed : int
        Random seed: the same seed and shape always give the same images.

    Returns
    -------
    bf : np.ndarray
        uint8 ``(rows, cols, 3)`` RGB H&E rendering: white background, pink stroma and fibres,
        purple nuclei.
    shg : np.ndarray
        uint8 ``(rows, cols)`` SHG rendering: sparse bright collagen fibres on a dark background.
        Pixel ``[r, c]`` of ``shg`` shows the same point of the tissue as ``bf[r, c]``.
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)

    tissue = _tissue_mask(rng, shape)
    nests = (_smooth_noise(rng, shape, 14.0) > 1.0) & tissue  # epithelium: no collagen
    fat = _fat_cells(rng, tissue & ~nests, _smooth_noise(rng, shape, 30.0) > 0.9)
    fat_wall = ndimage.binary_dilation(fat) & ~fat
    stroma = tissue & ~nests & ~fat

    # Fibre direction: one dominant angle, bent by a smooth field, so bundles curve.
    theta = rng.uniform(0, np.pi) + 0.9 * _smooth_noise(rng, shape, 40.0)
    collagen = stroma * np.clip(0.6 + 0.4 * _smooth_noise(rng, shape, 25.0), 0.1, 1.0)
    streaks, fibrils = _oriented_noise(rng, shape, theta, [(20.0, 1.0), (8.0, 0.6)])
    fibres = np.clip(streaks - 0.5, 0, None) * collagen
    fibrils = np.clip(fibrils, 0, None)

    nucleus_density = tissue * np.where(nests, 0.035, np.where(fat, 0.0, 0.0015))
    nuclei = _nuclei(rng, nucleus_density)

    # --- Bright field: Beer-Lambert absorption of two stains, then optics blur and noise.
    smooth_collagen = ndimage.gaussian_filter(fibres, 3.0)
    eosin = (tissue & ~fat) * (0.16 + 0.3 * smooth_collagen) + 0.35 * fibres + 0.35 * fat_wall
    eosin += 0.08 * nests
    haematoxylin = 1.0 * nuclei + 0.1 * nests + 0.03 * tissue
    eosin, haematoxylin = (ndimage.gaussian_filter(s, 0.8) for s in (eosin, haematoxylin))
    density = haematoxylin[..., None] * _HAEMATOXYLIN_OD + eosin[..., None] * _EOSIN_OD
    bf = _BF_BACKGROUND * 10.0 ** (-density) + rng.normal(0.0, 2.5, shape + (3,))

    # --- SHG: collagen only, with a heavy-tailed local gain (fibre packing and polarisation vary)
    # and fibrils below H&E resolution; the photon count is Poisson.
    gain = np.exp(0.6 * _smooth_noise(rng, shape, 6.0))
    signal = gain * (fibres**1.5 + 0.25 * collagen * fibrils) + 0.3 * fat_wall * tissue
    signal *= 1.0 - nuclei
    photons = rng.poisson(40.0 * signal + 0.3).astype(float)
    shg = photons * (220.0 / max(np.percentile(photons, 99.8), 1.0))
    return (np.clip(np.rint(bf), 0, 255).astype(np.uint8),
            np.clip(np.rint(shg), 0, 255).astype(np.uint8))


def misaligned_pair(shape=(512, 512), seed: int = 0, angle_deg: float = 23.0,
                    translation_xy=(14.0, -9.0)) -> tuple[np.ndarray, np.ndarray, AffineTransform]:
    """A synthetic pair whose BF image is moved by a known rigid transform.

    Parameters
    ----------
    shape, seed
        As in :func:`synthetic_pair`.
    angle_deg : float
        Rotation about the image centre, in degrees, in the (x, y) frame (y down: positive is
        clockwise on screen).
    translation_xy : tuple of float
        Shift ``(dx, dy)`` in pixels (x = column, y = row) applied after the rotation.

    Returns
    -------
    bf_moved : np.ndarray
        uint8 ``(rows, cols, 3)``: the BF image resampled so that ``true_transform`` maps it onto
        ``shg``; pixels that come from outside the original image are background white.
    shg : np.ndarray
        uint8 ``(rows, cols)``: the fixed image, as from :func:`synthetic_pair`.
    true_transform : AffineTransform
        Maps moving (``bf_moved``) pixel centres ``(x, y)`` to fixed (``shg``) pixel centres:
        ``[x_f, y_f] = R @ [x_m, y_m] + t``. Because the rotation is about the centre,
        ``true_transform.translation_xy`` is ``c - R c + translation_xy`` with ``c`` the image
        centre, not ``translation_xy`` itself. ``resample(bf_moved, true_transform, shg.shape)``
        realigns the BF image.
    """
    bf, shg = synthetic_pair(shape, seed)
    rows, cols = shg.shape
    true_transform = AffineTransform.about_center(angle_deg, ((cols - 1) / 2, (rows - 1) / 2),
                                                 translation_xy)
    # bf_moved[p] = bf[T p]: resample with T^-1 as the "moving -> fixed" map. Work relative to
    # the background so pixels from outside the slide come out as empty-slide white.
    moved = resample(bf.astype(np.float32) - _BF_BACKGROUND, true_transform.inverse(), shg.shape,
                     cval=0.0, preserve_dtype=False) + _BF_BACKGROUND
    return np.clip(np.rint(moved), 0, 255).astype(np.uint8), shg, true_transform
