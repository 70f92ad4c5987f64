"""The shipped models do their job on held-out real data (val split of ../shared)."""

import pytest

from napari_comir import api
from napari_comir.core.data import read_pairs_csv
from napari_comir.core.evaluation import equivariance_score, make_rigid_case
from napari_comir.core.io import read_image
from napari_comir.core.transforms import corner_error


@pytest.fixture(scope="module")
def model():
    return api.load_model("bf-shg", "cpu")


@pytest.fixture(scope="module")
def val_pairs(bf_shg_dir):
    return read_pairs_csv(bf_shg_dir / "pairs.csv", ("bf", "shg"), split="val")


@pytest.mark.parametrize("index, angle, shift", [(0, 137.0, (12.0, -7.0)), (3, -71.0, (-15.0, 9.0))])
def test_bf_shg_registers_unseen_tissue(model, val_pairs, index, angle, shift):
    pair = val_pairs[index]
    fixed, moving, truth = make_rigid_case(pair.images["shg"], pair.images["bf"], angle, shift, 300)
    result = api.register_multimodal(fixed, moving, model)
    assert corner_error(truth, result.transform, moving.shape[:2]) < 1.5  # success: < 6 px
    assert result.success_likely


@pytest.mark.parametrize("index, angle, shift", [(2, 61.0, (-9.0, 14.0)), (3, -71.0, (-15.0, 9.0)),
                                                (2, -163.0, (5.0, 5.0))])
def test_bf_shg_is_sub_pixel_on_unseen_pancreas(model, val_pairs, index, angle, shift):
    """The issue's precision bar, 0.5 px / 0.2°, across modalities (val pancreas pairs: their
    reference alignment is the cleanest; the 1B_* TMA cores carry a ~1 px residual of their own)."""
    pair = val_pairs[index]
    fixed, moving, truth = make_rigid_case(pair.images["shg"], pair.images["bf"], angle, shift, 300)
    found = api.register_multimodal(fixed, moving, model).transform
    assert corner_error(truth, found, moving.shape[:2]) <= 0.5
    assert abs((found.angle_deg - truth.angle_deg + 180) % 360 - 180) <= 0.2


def test_confidence_flags_a_pair_with_nothing_to_find(model, val_pairs):
    fixed, _, _ = make_rigid_case(val_pairs[0].images["shg"], val_pairs[0].images["bf"], 0, (0, 0), 300)
    _, unrelated, _ = make_rigid_case(val_pairs[2].images["shg"], val_pairs[2].images["bf"], 40,
                                      (5, 5), 300)
    assert not api.register_multimodal(fixed, unrelated, model).success_likely


@pytest.mark.parametrize("modality", ["bf", "shg"])
def test_bf_shg_is_rotation_equivariant_at_every_angle(model, val_pairs, modality):
    """The issue's target, ≥ 0.97, at the worst angles of earlier models (between quarter turns)."""
    scores = equivariance_score(model, val_pairs[1].images[modality], modality, angles=(45, 120, 200))
    assert min(scores.values()) > 0.97


def test_c4_averaging_is_exact_for_quarter_turns(model, val_pairs):
    exact = equivariance_score(model, val_pairs[1].images["bf"], "bf", angles=(90,), c4_average=True)
    assert exact[90.0] > 0.999


@pytest.fixture(scope="module")
def zurich_corner(bf_shg_dir):
    zurich = bf_shg_dir.parent / "zurich"
    return read_image(zurich / "zh17_RGB.tif")[:512, :512], read_image(zurich / "zh17_NIR.tif")[:512, :512]


@pytest.mark.parametrize("modality", ["rgb", "nir"])
def test_rgb_nir_is_rotation_equivariant_at_every_angle(zurich_corner, modality):
    """≥ 0.97 in the card's (C4-averaged) mode, between quarter turns, where it is weakest."""
    image = dict(zip(("rgb", "nir"), zurich_corner, strict=True))[modality]
    scores = equivariance_score(api.load_model("rgb-nir", "cpu"), image, modality, angles=(30, 45, 120))
    assert min(scores.values()) > 0.97


def test_rgb_nir_registers_a_crop_of_its_scene(zurich_corner):
    """It averages quarter turns by default: sub-pixel here (plain 1.0.0 inference: 0.33 px)."""
    rgb, nir = zurich_corner
    fixed, moving, truth = make_rigid_case(nir, rgb, -150.0, (8.0, 14.0), 300)
    model = api.load_model("rgb-nir", "cpu")
    assert model.card.c4_average
    result = api.register_multimodal(fixed, moving, model)
    assert corner_error(truth, result.transform, moving.shape[:2]) < 0.25
    assert result.success_likely
