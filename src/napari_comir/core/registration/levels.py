"""Pyramid levels: block means, level <-> full-resolution transforms, FFT-friendly sizes.

Pixel ``i`` of a level made of ``k`` x ``k`` block means has its centre at ``k * i + (k - 1) / 2``
in the full image, for any image, so one ``k`` keeps fixed and moving in one consistent frame.
Arrays are torch ``(C, rows, cols)``; transforms map moving (x, y) to fixed (x, y).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..transforms import AffineTransform


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per channel (NCC is invariant to it; keeps float32 sums well scaled)."""
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1).view(-1, 1, 1)
    std = flat.std(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (x - mean) / std


def block_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average ``k`` x ``k`` blocks of (C, H, W) (remainder rows/cols dropped)."""
    if k == 1:
        return x
    return F.avg_pool2d(x[None], kernel_size=k, stride=k)[0]


def level_to_full_xy(k: int) -> np.ndarray:
    """(x, y) matrix from level-``k`` pixel coordinates to full-resolution ones."""
    return np.array([[k, 0.0, (k - 1) / 2.0], [0.0, k, (k - 1) / 2.0], [0.0, 0.0, 1.0]])


def to_level(transform: AffineTransform, k: int, k_moving: int | None = None) -> AffineTransform:
    """Express a full-resolution transform in the coordinates of block-mean level ``k`` (of the
    moving image: level ``k_moving`` when the two pyramids differ)."""
    up = level_to_full_xy(k)
    up_moving = up if k_moving is None else level_to_full_xy(k_moving)
    return AffineTransform(np.linalg.inv(up) @ transform.matrix_xy @ up_moving, transform.model)


def from_level(transform: AffineTransform, k: int) -> AffineTransform:
    """Inverse of :func:`to_level`: a level-``k`` transform in full-resolution coordinates."""
    up = level_to_full_xy(k)
    return AffineTransform(up @ transform.matrix_xy @ np.linalg.inv(up), transform.model)


def fast_length(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def pyramid_factors(k: int) -> list[int]:
    """Coarse-to-fine block sizes from ``k`` down to 1: then powers of 4, each >= 2x finer.

    Gauss-Newton converges from the previous level's estimate across a factor of 4 as well as
    across 2 (same results on the benchmark), and every level costs a fixed overhead.
    """
    levels = [k]
    while levels[-1] > 1:
        levels.append(4 ** int(math.log(levels[-1] / 2, 4) + 1e-9))
    return levels
