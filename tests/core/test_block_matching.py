"""Block matching: known shifts found to a fraction of a pixel, unrelated images give no match,
a block that disagrees with its neighbours is left out, and the field fades where none is."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, shift

from napari_comir.core.registration.block_matching import (
    BlockMatches,
    _box_sums,
    match_blocks,
    reject_outliers,
    smooth_field,
)


def texture(seed: int, shape=(160, 192)) -> np.ndarray:
    image = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)
    return (image / image.std()).astype(np.float32)


def as_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image))[None].float()


def test_a_known_shift_is_found_to_a_tenth_of_a_pixel():
    fixed = texture(0)
    displacement_xy = (2.3, -1.6)  # fixed at p matches moving at p + displacement
    moving = shift(fixed, (displacement_xy[1], displacement_xy[0]), order=3, mode="reflect")
    covered = torch.ones(fixed.shape)
    matches = match_blocks(as_chw(fixed), as_chw(moving), covered, spacing=16, half=16, radius=6)
    used = matches.weight > 0
    # Every block but the outer ring, whose search windows reach beyond the moving image.
    assert used[1:-1, 1:-1].all() and not used[0].any()
    error = np.abs(matches.displacement_xy[used] - displacement_xy)
    assert np.median(error) < 0.1 and error.max() < 0.3, error.max()
    assert matches.centres_x[0] == 15.5 and np.all(np.diff(matches.centres_y) == 16)


def test_unrelated_images_give_few_weak_matches():
    """Chance peaks of unrelated smooth textures: few blocks, each weighing less than a real
    match (whose peak NCC is near 1); the verdict refuses such a field (test_deformable.py)."""
    matches = match_blocks(as_chw(texture(1)), as_chw(texture(2)), torch.ones(160, 192),
                           spacing=16, half=16, radius=8)
    used = matches.weight > 0
    assert 0 < used.mean() < 0.2 and matches.weight.max() < 0.25


def test_blocks_outside_the_moving_image_are_not_used():
    fixed = texture(3)
    covered = torch.ones(fixed.shape)
    covered[:, 96:] = 0  # the moving image ends half way
    matches = match_blocks(as_chw(fixed), as_chw(fixed * covered.numpy()), covered,
                           spacing=16, half=16, radius=4)
    inner = matches.weight[1:-1]  # rows whose search windows lie inside the image
    reaches_beyond = matches.centres_x + 0.5 + 16 + 4 > 96
    assert np.all(inner[:, reaches_beyond] == 0)
    assert np.all(inner[:, ~reaches_beyond][:, 1:] > 0)


def test_a_block_that_disagrees_with_its_neighbours_is_left_out():
    n = 9
    displacement = np.tile([1.0, 0.5], (n, n, 1))
    displacement[4, 4] = (9.0, -7.0)  # a chance match among consistent ones
    matches = BlockMatches(8.0 * np.arange(n), 8.0 * np.arange(n), displacement, np.ones((n, n)))
    kept = reject_outliers(matches, 20.0)
    assert kept.weight[4, 4] == 0 and kept.weight.sum() == n * n - 1
    field = smooth_field(kept, np.array([32.0]), np.array([32.0]), 20.0)
    assert np.allclose(field[0, 0], (1.0, 0.5), atol=0.01)


def test_the_field_fades_to_no_displacement_away_from_the_blocks():
    matches = BlockMatches(np.array([10.0]), np.array([10.0]), np.array([[[4.0, -2.0]]]), np.ones((1, 1)))
    field = smooth_field(matches, np.array([10.0, 200.0]), np.array([10.0]), 20.0)
    assert np.allclose(field[0, 0], np.array([4.0, -2.0]) / 1.05)  # the prior's weight 0.05
    assert np.allclose(field[0, 1], 0.0)


def test_box_sums_are_the_sums_over_each_square():
    images = torch.from_numpy(np.random.default_rng(4).normal(size=(2, 12, 15)))
    sums = _box_sums(images, 5)
    assert sums.shape == (2, 8, 11)
    assert torch.allclose(sums[1, 3, 7], images[1, 3:8, 7:12].sum())
