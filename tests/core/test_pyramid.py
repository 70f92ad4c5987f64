import numpy as np

from napari_comir import api
from napari_comir.core.evaluation import make_rigid_case
from napari_comir.core.pyramid import block_mean, register_pyramid
from napari_comir.core.transforms import corner_error


def test_block_mean_reads_in_bands(tmp_path, rng):
    image = rng.random((103, 70, 3)).astype(np.float32)
    lazy = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=image.shape)
    lazy[:] = image
    expected = image[:102, :69].reshape(34, 3, 23, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(block_mean(lazy, 3, band_rows=7), expected, rtol=1e-6)


def test_pyramid_recovers_a_transform_at_full_resolution(real_pair):
    """Coarse search at half resolution, then a full-resolution window: sub-pixel at full size."""
    bf, shg = real_pair
    fixed, moving, truth = make_rigid_case(shg, bf, -117.0, (9.0, 13.0), 400)
    result = register_pyramid(api.load_model("bf-shg", "cpu"), fixed, moving, coarse_side=200,
                              window=256)
    assert result.method == "pyramid" and "coarse" in result.timings and "window 1" in result.timings
    assert result.success_likely
    assert corner_error(truth, result.transform, moving.shape[:2]) < 1.5
