"""Block matching: local shifts between two images of one modality, and a smooth field from them.

Each block of the fixed image (a square of ``2 * half`` px, centres ``spacing`` px apart) is
compared with the moving image at every whole-pixel shift up to ``radius`` px by normalised
cross-correlation (NCC); the best shift, refined to a fraction of a pixel by a parabola through
the peak and its neighbours, is that block's displacement. A block is used only where it is
distinctive (its peak NCC at least :data:`MIN_MATCH_NCC`), its peak lies inside the search
window and the moving image covers its whole search window. A smooth field then follows from the
blocks by Gaussian kernel regression (Nadaraya-Watson with a weak prior towards no
displacement, so that it fades to zero away from any usable block), blocks that disagree with
their neighbours' field being left out (:func:`reject_outliers`).

Why blocks rather than a field optimised on the whole image: on serial sections much of each
image has no counterpart in the other (cells differ between sections). A global fit lets those
regions pull the field; a block there finds no distinctive peak and is dropped, and one that
matches by chance disagrees with its neighbours and is rejected (docs/benchmarks.md, "Block
matching").

Coordinates: images are (C, rows, cols) tensors; positions and displacements are pixel
``(x, y)`` (column, row) of these images, the moving image read at ``p + displacement(p)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

#: Least peak NCC for a block's shift to be used. Chance peaks of 32 x 32 px blocks against
#: unrelated texture as smooth as a CoMIR reach 0.31-0.49 over 17 x 17 shifts, and real matches
#: under heavy noise no more: no threshold tells them apart block by block, so chance matches are
#: left to the outlier rejection and to the verdict (a field of chance matches is not reproduced
#: the other way round). 0.3-0.5 gave the same landmark errors on the H&E-vs-IHC serial sections;
#: 0.35 and above lost a 6 px bend under heavy noise (tests/core/test_deformable.py).
MIN_MATCH_NCC = 0.3
#: Least share of a block's search window the moving image must cover.
MIN_COVERED = 0.99
#: A block is left out where it is this many robust standard deviations (plus 0.5 px) from the
#: field of the others, in each of :data:`OUTLIER_PASSES` passes.
OUTLIER_CUT = 3.0
OUTLIER_PASSES = 2
#: Weight of the prior towards no displacement, in perfect matches (NCC 1) at zero distance.
PRIOR_WEIGHT = 0.05


@dataclass
class BlockMatches:
    """Block centres on a regular grid and their displacements, px (x, y) of the images.

    ``centres_x`` (n_cols,) and ``centres_y`` (n_rows,) span the grid; ``displacement_xy``
    (n_rows, n_cols, 2) and ``weight`` (n_rows, n_cols): 0 where a block is not used, else its
    peak NCC squared.
    """

    centres_x: np.ndarray
    centres_y: np.ndarray
    displacement_xy: np.ndarray
    weight: np.ndarray


def match_blocks(fixed: torch.Tensor, moving: torch.Tensor, covered: torch.Tensor, *,
                 spacing: int, half: int, radius: int) -> BlockMatches:
    """Each fixed block's best shift in ``moving`` (see the module).

    Parameters
    ----------
    fixed, moving : torch.Tensor
        (C, rows, cols) images on one grid (the moving one already roughly aligned).
    covered : torch.Tensor
        (rows, cols) 1 where the moving image has data, 0 outside it.
    spacing, half, radius : int
        Block centres' spacing, half the block side and the largest shift searched, px.
    """
    channels, rows, cols = fixed.shape
    side, window, shifts = 2 * half, 2 * half + 2 * radius, 2 * radius + 1
    if rows < side or cols < side:
        raise ValueError(f"images of {rows} x {cols} px hold no block of {side} px")
    n_rows, n_cols = (rows - side) // spacing + 1, (cols - side) // spacing + 1
    count = n_rows * n_cols
    padded = F.pad(moving, (radius,) * 4)
    # Each block (C * L, side, side) and its search window (C * L, window, window), L blocks in
    # row-major order: one copy each of a strided view (unfold then permute copied twice, slower).
    blocks = _squares(fixed, side, spacing, n_rows, n_cols)
    blocks = blocks - blocks.mean(dim=(1, 2), keepdim=True)
    block_norm = blocks.flatten(1).norm(dim=1)  # (C * L,)
    # NCC at every shift: one correlation per block and channel (grouped convolution).
    windows = _squares(padded, window, spacing, n_rows, n_cols)
    products = F.conv2d(windows[None], blocks[:, None], groups=channels * count)[0]
    # The moving image's sums over a block at every shift, read off its sums over every square.
    sums, squares = (_squares(_box_sums(image, side), shifts, spacing, n_rows, n_cols)
                     for image in (padded, padded**2))
    spread = (squares - sums**2 / side**2).clamp_min(0.0).sqrt().float()
    ncc = products / (block_norm[:, None, None] * spread).clamp_min(1e-6)
    ncc = ncc.reshape(channels, count, shifts, shifts).mean(dim=0)

    flat = ncc.reshape(count, -1)
    peak, best = flat.max(dim=1)
    peak_y, peak_x = best // shifts, best % shifts
    interior = (peak_y > 0) & (peak_y < 2 * radius) & (peak_x > 0) & (peak_x < 2 * radius)
    shift_y = peak_y.double() - radius + _parabola_offset(ncc, peak_y, peak_x, interior, axis=0)
    shift_x = peak_x.double() - radius + _parabola_offset(ncc, peak_y, peak_x, interior, axis=1)
    coverage = _box_sums(F.pad(covered[None], (radius,) * 4), window)[0, ::spacing, ::spacing]
    coverage = coverage[:n_rows, :n_cols].reshape(-1) / window**2
    usable = interior & (peak >= MIN_MATCH_NCC) & (coverage >= MIN_COVERED)
    weight = torch.where(usable, peak.double() ** 2, torch.zeros_like(peak, dtype=torch.float64))
    grid = lambda values: values.reshape(n_rows, n_cols).cpu().numpy()  # noqa: E731
    return BlockMatches(
        centres_x=spacing * np.arange(n_cols) + half - 0.5,
        centres_y=spacing * np.arange(n_rows) + half - 0.5,
        displacement_xy=np.stack([grid(shift_x), grid(shift_y)], axis=-1),
        weight=grid(weight))


def _squares(images: torch.Tensor, side: int, spacing: int, n_rows: int, n_cols: int) -> torch.Tensor:
    """The ``side`` x ``side`` squares of (C, H, W) ``images`` whose corners lie ``spacing`` px
    apart, (C * n_rows * n_cols, side, side), channel-major then row-major."""
    images = images.contiguous()
    channel, row, col = images.stride()
    view = images.as_strided((images.shape[0], n_rows, n_cols, side, side),
                             (channel, spacing * row, spacing * col, row, col))
    return view.reshape(-1, side, side)


def _box_sums(images: torch.Tensor, side: int) -> torch.Tensor:
    """Sums over every ``side`` x ``side`` square of (N, H, W) ``images``, (N, H - side + 1,
    W - side + 1), from a summed-area table (float64: its differences cancel)."""
    table = F.pad(images.double().cumsum(dim=1).cumsum(dim=2), (1, 0, 1, 0))
    return (table[:, side:, side:] - table[:, :-side, side:] - table[:, side:, :-side]
            + table[:, :-side, :-side])


def _parabola_offset(ncc: torch.Tensor, peak_y: torch.Tensor, peak_x: torch.Tensor,
                     interior: torch.Tensor, axis: int) -> torch.Tensor:
    """Sub-pixel offset of each peak along ``axis`` (0: y, 1: x) from a parabola through it and
    its two neighbours (0 on the window's edge or where the NCC does not curve down)."""
    limit = ncc.shape[1] - 1
    index = torch.arange(len(ncc))
    step_y, step_x = (1, 0) if axis == 0 else (0, 1)
    before = ncc[index, (peak_y - step_y).clamp(0, limit), (peak_x - step_x).clamp(0, limit)].double()
    at = ncc[index, peak_y, peak_x].double()
    after = ncc[index, (peak_y + step_y).clamp(0, limit), (peak_x + step_x).clamp(0, limit)].double()
    curvature = before - 2 * at + after
    offset = 0.5 * (before - after) / torch.where(curvature < 0, curvature, -torch.ones_like(curvature))
    return torch.where(interior & (curvature < 0), offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


def _gaussian_weights(positions: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((np.asarray(positions, float)[:, None] - centres[None]) / sigma) ** 2)


def smooth_field(matches: BlockMatches, x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """(len y, len x, 2) displacement (x, y) at the grid of positions ``x`` by ``y``: the blocks'
    displacements by Gaussian kernel regression (``sigma`` px), fading to 0 away from blocks
    with weight (:data:`PRIOR_WEIGHT`). Separable: the blocks lie on a grid."""
    along_y = _gaussian_weights(y, matches.centres_y, sigma)
    along_x = _gaussian_weights(x, matches.centres_x, sigma)
    weighted = matches.weight[..., None] * matches.displacement_xy
    total = along_y @ matches.weight @ along_x.T + PRIOR_WEIGHT
    return np.stack([along_y @ weighted[..., i] @ along_x.T for i in range(2)], axis=-1) / total[..., None]


def reject_outliers(matches: BlockMatches, sigma: float) -> BlockMatches:
    """``matches`` without the blocks far from the field of the others (see :data:`OUTLIER_CUT`)."""
    weight = matches.weight
    for _ in range(OUTLIER_PASSES):
        field = smooth_field(replace(matches, weight=weight), matches.centres_x, matches.centres_y, sigma)
        distance = np.linalg.norm(matches.displacement_xy - field, axis=-1)
        used = weight > 0
        if not used.any():
            break
        cut = OUTLIER_CUT * (1.4826 * np.median(distance[used]) + 0.5)
        weight = np.where(distance < cut, matches.weight, 0.0)
    return replace(matches, weight=weight)
