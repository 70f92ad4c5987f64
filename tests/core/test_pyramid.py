import re
import time

import numpy as np
import pytest

from napari_comir import api
from napari_comir.core.evaluation import make_rigid_case
from napari_comir.core.pyramid import block_mean, register_pyramid, register_pyramid_events
from napari_comir.core.resampling import resample
from napari_comir.core.synthetic import misaligned_pair
from napari_comir.core.transforms import AffineTransform, corner_error


def test_block_mean_reads_in_bands(tmp_path, rng):
    image = rng.random((103, 70, 3)).astype(np.float32)
    lazy = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=image.shape)
    lazy[:] = image
    expected = image[:102, :69].reshape(34, 3, 23, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(block_mean(lazy, 3, band_rows=7), expected, rtol=1e-6)
    region = image[10:58, 4:70].reshape(16, 3, 22, 3, 3)  # rows 10-57 of 10-58, all 66 columns
    np.testing.assert_allclose(block_mean(lazy, 3, band_rows=7, rows=slice(10, 59), cols=slice(4, None)),
                               region.mean(axis=(1, 3)), rtol=1e-6)


def test_pyramid_recovers_a_transform_at_full_resolution(real_pair):
    """Coarse search at half resolution, then a full-resolution window: sub-pixel at full size."""
    bf, shg = real_pair
    fixed, moving, truth = make_rigid_case(shg, bf, -117.0, (9.0, 13.0), 400)
    result = register_pyramid(api.load_model("bf-shg", "cpu"), fixed, moving, coarse_side=200,
                              window=256)
    assert result.method == "pyramid" and "coarse" in result.timings and "window 1" in result.timings
    assert result.success_likely
    assert corner_error(truth, result.transform, moving.shape[:2]) < 1.5


@pytest.fixture(scope="module")
def large_case():
    """A 1100 px synthetic pair: 4 x 4 window positions of 256 px, so several windows are used."""
    return misaligned_pair((1100, 1100), seed=5, angle_deg=33.0, translation_xy=(12.0, -7.0))


def test_windows_spread_over_the_image_fix_the_transform_and_seconds_are_honest(large_case):
    bf, shg, truth = large_case
    model = api.load_model("bf-shg", "cpu")
    start = time.perf_counter()
    events = list(register_pyramid_events(model, shg, bf, coarse_side=300, window=256))
    wall = time.perf_counter() - start
    result = events[-1].result
    assert result.success_likely and corner_error(truth, result.transform, bf.shape) < 1.2
    windows = [key for key in result.timings if key.startswith("window")]
    assert len(windows) >= 3
    # An event before the overview and before each window (a worker stops between them; a whole
    # slide's Register showed a busy bar for a minute and stopped 34 s after Stop was clicked).
    assert [(event.step, event.total) for event in events] == [(0, 0)] + [
        (number, len(windows) + 1) for number in range(1, len(windows) + 2)]
    assert all(event.result is None for event in events[:-1])
    assert re.match(r"overview: 3[23]\.\d°; window 1 of \d at the model.s scale", events[1].message)
    assert sum(result.timings.values()) <= result.seconds <= wall  # the whole call, every phase
    assert result.seconds > 0.9 * wall


def test_pixel_sizes_give_each_image_its_own_overview_factor(large_case):
    bf, shg, truth = large_case
    finer = AffineTransform.similarity(0.0, 1 / 1.1)  # the moving image at 2.2 µm instead of 2.0
    moving = resample(bf, finer, (1000, 1000))
    result = register_pyramid(api.load_model("bf-shg", "cpu"), shg, moving, coarse_side=300,
                              window=256, fixed_pixel_size_um=2.0, moving_pixel_size_um=2.2)
    assert result.success_likely
    assert corner_error(truth.compose(finer.inverse()), result.transform, moving.shape) < 2.0


def test_noise_is_not_reported_as_a_success(large_case):
    _, shg, _ = large_case
    noise = (np.random.default_rng(0).random((1100, 1100, 3)) * 255).astype(np.uint8)
    result = register_pyramid(api.load_model("bf-shg", "cpu"), shg, noise, coarse_side=300, window=256)
    assert not result.success_likely
    assert any("full-scale windows matched" in reason for reason in result.reasons)
