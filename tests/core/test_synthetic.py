"""The synthetic BF/SHG pair: deterministic, tissue-like, pixel-aligned, known misalignment."""

from __future__ import annotations

import numpy as np
import pytest

from napari_comir.core.errors import InputError
from napari_comir.core.resampling import resample
from napari_comir.core.synthetic import misaligned_pair, synthetic_pair
from napari_comir.core.transforms import AffineTransform


def _corr(a, b) -> float:
    a = np.asarray(a, float).ravel() - np.mean(a)
    b = np.asarray(b, float).ravel() - np.mean(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _eosin(bf: np.ndarray) -> np.ndarray:
    """Eosin-ness: green absorbed (pink), but not red (purple nuclei absorb red too)."""
    rgb = bf.astype(float) + 1.0
    return np.log(rgb[..., 0] / rgb[..., 1])


@pytest.fixture(scope="module")
def pair():
    return synthetic_pair((256, 256), seed=3)


def test_deterministic_per_seed():
    bf_a, shg_a = synthetic_pair((96, 128), seed=5)
    bf_b, shg_b = synthetic_pair((96, 128), seed=5)
    bf_c, shg_c = synthetic_pair((96, 128), seed=6)
    np.testing.assert_array_equal(bf_a, bf_b)
    np.testing.assert_array_equal(shg_a, shg_b)
    assert not np.array_equal(bf_a, bf_c) and not np.array_equal(shg_a, shg_c)


@pytest.mark.parametrize("shape", [(16, 16), (40, 90), (300, 200)])
def test_shapes_and_dtypes(shape):
    bf, shg = synthetic_pair(shape, seed=1)
    assert bf.shape == (*shape, 3) and bf.dtype == np.uint8
    assert shg.shape == shape and shg.dtype == np.uint8


@pytest.mark.parametrize("shape", [(8, 64), (64,), "big"])
def test_bad_shape_is_a_clear_error(shape):
    with pytest.raises(InputError, match="shape"):
        synthetic_pair(shape)


def test_looks_like_he_and_shg(pair):
    bf, shg = pair
    corner_bf, corner_shg = bf[:12, :12], shg[:12, :12]
    assert corner_bf.min() > 220  # empty slide is white in BF ...
    assert corner_shg.mean() < 3  # ... and dark in SHG
    centre = bf[64:192, 64:192].reshape(-1, 3).astype(float)
    red, green, blue = np.median(centre, axis=0)
    assert red > green and blue > green  # pink/purple tissue
    assert (centre.sum(axis=1) < 350).mean() > 0.01  # some dark haematoxylin nuclei
    values = shg.astype(float)
    assert np.median(values) < 0.1 * values.max()  # sparse signal ...
    p50, p99, p999 = np.percentile(values[values > 0], [50, 99, 99.9])
    assert p999 > 3 * p50 and p999 > p99  # ... with a heavy tail


def test_aligned_shg_fibres_match_bf_eosin_best_unshifted(pair):
    bf, shg = pair
    eosin = _eosin(bf)
    aligned = _corr(shg, eosin)
    assert aligned > 0.3
    for shift in (3, -3):
        assert _corr(shg, np.roll(eosin, shift, axis=1)) < aligned - 0.05
        assert _corr(shg, np.roll(eosin, shift, axis=0)) < aligned - 0.05


def test_not_one_intensity_mapping(pair):
    """Nuclei are dark in SHG, yet SHG varies strongly among pixels of equal BF colour."""
    bf, shg = pair
    grey = bf.mean(axis=-1)
    nuclei = grey < np.percentile(grey, 2)
    assert shg[nuclei].mean() < 0.5 * shg[grey < 235].mean()
    # Best possible prediction of SHG from quantised BF colour leaves most variance unexplained.
    keys = (bf // 32).astype(np.int64) @ np.array([64, 8, 1])
    means = np.bincount(keys.ravel(), shg.ravel()) / np.maximum(np.bincount(keys.ravel()), 1)
    residual = shg - means[keys]
    assert residual.var() > 0.3 * shg.var()


def test_misaligned_pair_true_transform_realigns():
    shape = (192, 192)
    bf, shg = synthetic_pair(shape, seed=2)
    bf_moved, shg_fixed, true = misaligned_pair(shape, seed=2, angle_deg=23.0,
                                                translation_xy=(14.0, -9.0))
    np.testing.assert_array_equal(shg_fixed, shg)
    assert isinstance(true, AffineTransform)
    assert true.angle_deg == pytest.approx(23.0)
    # Rotation about the centre, then the shift: the centre pixel moves by exactly the shift.
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    np.testing.assert_allclose(true.apply_xy(centre)[0], centre + [14.0, -9.0], atol=1e-9)
    d = true.to_dict()
    np.testing.assert_allclose(np.asarray(d["matrix_xy"]), true.matrix_xy)

    back = resample(bf_moved, true, shape).astype(float)
    inner = (slice(40, 152), slice(40, 152))
    grey_back, grey_bf = back.mean(-1)[inner], bf.astype(float).mean(-1)[inner]
    assert _corr(grey_back, grey_bf) > 0.98  # only bilinear interpolation blur is left
    assert _corr(bf_moved.astype(float).mean(-1)[inner], grey_bf) < 0.5
    # Transforms 3 px off realign clearly worse: the true one is not merely close.
    for wrong in (AffineTransform.about_center(23.0, centre, (17.0, -9.0)),
                  AffineTransform.about_center(23.0, centre, (14.0, -6.0))):
        warped = resample(bf_moved, wrong, shape).astype(float).mean(-1)[inner]
        assert _corr(warped, grey_bf) < 0.9
    # Outside the original image the moved BF is empty-slide white, not black.
    assert bf_moved[0, 0].min() > 220
