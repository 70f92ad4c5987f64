"""The deformable stage: recovers a known smooth field, keeps it only when the details agree
beyond chance, stays within its bound and never folds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_comir.core.errors import InputError
from napari_comir.core.evaluation import smooth_deformation
from napari_comir.core.field_transform import DisplacementFieldTransform, resample
from napari_comir.core.registration.deformable import (
    MAX_INCONSISTENCY,
    MIN_DETAIL_GAIN,
    MIN_MATCH_RATIO,
    register_deformable,
)
from napari_comir.core.synthetic import synthetic_pair
from napari_comir.core.transforms import AffineTransform

SHAPE = (256, 256)


@pytest.fixture(scope="module")
def tissue():
    bf, _ = synthetic_pair(SHAPE, seed=3)
    image = 255.0 - bf.mean(axis=2)
    return image, image > 40  # the tissue (white background outside)


def noisy(image, seed):
    return image + np.random.default_rng(seed).normal(0.0, 8.0, image.shape)


def field_error(found, true, mask):
    rows, cols = np.nonzero(mask)
    points = np.stack([cols, rows], axis=1).astype(float)[::7]
    return np.linalg.norm(found.inverse().apply_xy(points) - true.inverse().apply_xy(points), axis=1)


def test_a_known_smooth_deformation_is_recovered_and_kept(tissue):
    image, mask = tissue
    true = smooth_deformation(SHAPE, 6.0, np.random.default_rng(0), smoothness_px=40.0)
    moving = resample(image, true.inverse(), SHAPE, preserve_dtype=False)
    shift = AffineTransform.rigid(0.0, (1.5, -2.0))  # the affine result it starts from is exact
    moving = resample(moving, shift.inverse(), SHAPE, preserve_dtype=False)
    result = register_deformable(noisy(image, 1), noisy(moving, 2), shift)
    assert result.kept, result.reasons
    assert isinstance(result.transform, DisplacementFieldTransform)
    identity = DisplacementFieldTransform.from_displacement(AffineTransform.rigid(0.0),
                                                           np.zeros((2, 2, 2)), 1000.0)
    before = np.median(field_error(identity, true, mask))
    after = np.median(field_error(_without(result.transform, shift), true, mask))
    assert before > 1.5 and after < 0.5, (before, after)
    assert result.detail_gain > 2 and result.min_jacobian > 0.5
    # What the dock reports as the typical displacement: the drawn field's, not an edge's maximum.
    drawn = np.linalg.norm(true.displacement_xy, axis=-1).mean()
    assert result.mean_displacement_px == pytest.approx(drawn, rel=0.25)
    assert result.mean_displacement_px < result.max_displacement_px


def _without(transform, affine):
    """The field alone: the deformed image's frame (after ``affine``) -> fixed."""
    return DisplacementFieldTransform(AffineTransform.rigid(0.0), transform.displacement_xy,
                                      transform.inverse_displacement_xy, transform.spacing_px)


def test_an_aligned_pair_keeps_the_affine_result_with_the_reason(tissue):
    image, _ = tissue
    identity = AffineTransform.rigid(0.0)
    result = register_deformable(noisy(image, 3), noisy(image, 4), identity)
    assert not result.kept and result.transform is identity
    assert "beyond chance" in result.reasons[0] and "affine result stands" in result.reasons[-1]
    assert result.detail_gain < 1.0


def test_the_field_stays_within_its_bound(tissue):
    image, _ = tissue
    true = smooth_deformation(SHAPE, 8.0, np.random.default_rng(5), smoothness_px=40.0)
    moving = resample(image, true.inverse(), SHAPE, preserve_dtype=False)
    result = register_deformable(image, moving, AffineTransform.rigid(0.0), max_displacement_px=2.0)
    assert result.field is not None and result.max_displacement_px <= 2.0 + 1e-3


def test_bad_input_is_one_clear_error(tissue):
    image, _ = tissue
    with pytest.raises(InputError, match="AffineTransform"):
        register_deformable(image, image, np.eye(3))
    with pytest.raises(InputError, match="channels"):
        register_deformable(image, np.stack([image, image], -1), AffineTransform.rigid(0.0))
    with pytest.raises(InputError, match="max_displacement_px"):
        register_deformable(image, image, AffineTransform.rigid(0.0), max_displacement_px=-1)
    with pytest.raises(InputError, match="overlap"):
        register_deformable(image, image, AffineTransform.rigid(0.0, (1000.0, 0.0)))


def test_a_field_without_a_significant_gain_is_kept_only_when_reproduced(tissue):
    """Under heavy noise a real 6 px deformation gains too little detail score to be significant,
    but the field fitted the other way round reproduces it: kept, and nearer the truth. A field
    fitted to the noise of an aligned pair is not reproduced: the affine result stands."""
    image, mask = tissue
    true = smooth_deformation(SHAPE, 6.0, np.random.default_rng(0), smoothness_px=40.0)
    moving = resample(image, true.inverse(), SHAPE, preserve_dtype=False)
    rng = np.random.default_rng(1)
    identity = AffineTransform.rigid(0.0)
    deformed = register_deformable(image + rng.normal(0, 60, SHAPE), moving + rng.normal(0, 60, SHAPE),
                                   identity)
    assert 0 < deformed.detail_gain < MIN_DETAIL_GAIN and deformed.inconsistency <= MAX_INCONSISTENCY
    assert deformed.kept, deformed.reasons
    identity_field = DisplacementFieldTransform.from_displacement(identity, np.zeros((2, 2, 2)), 1000.0)
    before = np.median(field_error(identity_field, true, mask))
    assert np.median(field_error(deformed.transform, true, mask)) < 0.5 * before
    aligned = register_deformable(image + rng.normal(0, 60, SHAPE), image + rng.normal(0, 60, SHAPE),
                                  identity)
    assert not aligned.kept and aligned.transform is identity
    assert aligned.inconsistency > MAX_INCONSISTENCY and "other way round" in aligned.reasons[-1]


def test_a_field_of_chance_matches_is_refused():
    """Two unrelated textures as smooth as CoMIRs: a block's chance match is found again the other
    way round (NCC is symmetric), so the reproduction check kept such fields (seeds 0, 4 and 5
    here); the blocks match no more often than against the moving image turned half a turn, and
    the field is refused with that reason."""
    for seed in (0, 4, 5):
        rng = np.random.default_rng(seed)
        fixed, moving = (gaussian_filter(rng.normal(size=SHAPE), 2.0) for _ in range(2))
        result = register_deformable(fixed, moving, AffineTransform.rigid(0.0))
        assert not result.kept and "no more often than by chance" in " ".join(result.reasons)
        assert result.matched_share < MIN_MATCH_RATIO * result.chance_share
