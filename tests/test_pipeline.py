"""The pipeline's options: validated once, with the same names in every entry point."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from napari_comir import api
from napari_comir.core.defaults import DEFAULT_ROTATION_RANGE, DEFAULT_TRANSFORM
from napari_comir.core.errors import InputError
from napari_comir.core.synthetic import misaligned_pair
from napari_comir.pipeline import RegistrationOptions, plan_registration


@pytest.mark.parametrize("values, match", [
    ({"method": "elastix"}, "method must be one of"),
    ({"transform": "bspline"}, "transform must be one of"),
    ({"rotation_range": (10, -10)}, "rotation_range"),
    ({"scale_range": (0.1, 3)}, "scale_range"),
    ({"fixed_pixel_size": 0.5}, "both pixel sizes"),
    ({"fixed_pixel_size": -1, "moving_pixel_size": 1}, "µm per pixel from 1e-07"),
    ({"fixed_pixel_size": 1, "moving_pixel_size": 1, "scale_range": (0.9, 1.1)}, "not both"),
    ({"initial_transform": np.eye(3)}, "AffineTransform"),
])
def test_bad_options_refused_when_made(values, match):
    with pytest.raises(InputError, match=match):
        RegistrationOptions(**values)
    with pytest.raises(InputError, match=match):  # the same check through the API's keywords
        api.registration_events(np.zeros((64, 64)), np.zeros((64, 64)), "bf-shg", **values)


def test_defaults_and_replacement():
    options = RegistrationOptions()
    assert (options.transform, options.rotation_range) == (DEFAULT_TRANSFORM, DEFAULT_ROTATION_RANGE)
    changed = RegistrationOptions.build(options, transform="rigid")
    assert changed.transform == "rigid" and options.transform == DEFAULT_TRANSFORM
    with pytest.raises(TypeError):
        RegistrationOptions.build(options, rotation=5)  # a misspelt option is not ignored


def test_from_namespace_takes_only_the_fields():
    namespace = argparse.Namespace(transform="similarity", rotation_range=30.0, out="x.json")
    options = RegistrationOptions.from_namespace(namespace)
    assert (options.transform, options.rotation_range, options.method) == ("similarity", 30.0, "search")


def test_pixel_size_plan(tiny_model):
    """A pixel-size ratio inside the default scale range narrows the search around it; outside,
    the moving image is resampled to the fixed pixel size first; rigid ignores the sizes."""
    bf, shg, _ = misaligned_pair((128, 128), seed=0)
    near = plan_registration(tiny_model, shg, bf, RegistrationOptions(fixed_pixel_size=1.0,
                                                                      moving_pixel_size=1.1))
    assert near.pre_scale == 1.0 and near.search_range[0] < 1.1 < near.search_range[1]
    far = plan_registration(tiny_model, shg, bf, RegistrationOptions(fixed_pixel_size=1.0,
                                                                     moving_pixel_size=2.0))
    assert far.pre_scale == 2.0 and far.search_range[0] < 1.0 < far.search_range[1]
    rigid = plan_registration(tiny_model, shg, bf, RegistrationOptions(
        transform="rigid", fixed_pixel_size=1.0, moving_pixel_size=2.0))
    assert rigid.pre_scale == 1.0
    assert near.options.fixed_modality == "shg" and near.options.moving_modality == "bf"


def test_options_object_and_keywords_agree(tiny_model):
    bf, shg, _ = misaligned_pair((96, 96), seed=1)
    by_object = api.register_multimodal(shg, bf, tiny_model, RegistrationOptions(transform="rigid",
                                                                                 rotation_range=40))
    by_keywords = api.register_multimodal(shg, bf, tiny_model, transform="rigid", rotation_range=40)
    assert by_object.transform.model == "rigid"
    np.testing.assert_allclose(by_object.transform.matrix_xy, by_keywords.transform.matrix_xy)


def test_final_refinement_on_the_images_is_timed_and_never_far_from_the_comir_result():
    """The final refinement runs on the images in memory (its time recorded), lands within a
    refinement's reach of the CoMIR result and keeps the pair registered."""
    from napari_comir.core.transforms import corner_error

    bf, shg, truth = misaligned_pair((256, 256), seed=2, angle_deg=-35.0)
    plain = api.register_multimodal(shg, bf, "bf-shg", final_refinement="none")
    refined = api.register_multimodal(shg, bf, "bf-shg")
    assert "mutual_information" in refined.timings and "mutual_information" not in plain.timings
    assert corner_error(plain.transform, refined.transform, bf.shape[:2]) <= 0.01 * 256
    assert corner_error(truth, refined.transform, bf.shape[:2]) <= 0.02 * 256
    assert refined.success_likely


def test_size_route_plan(tiny_model):
    """In-memory images over COARSE_TO_FINE_SIDE go coarse to fine with a small overview;
    given CoMIRs, a deformable stage, SIFT, landmarks or a pre-scale keep full resolution."""
    from napari_comir.pipeline import plan

    side = plan.COARSE_TO_FINE_SIDE + 64
    fixed, moving = np.zeros((side, side // 2), np.uint8), np.zeros((side // 2, side // 2, 3), np.uint8)
    fixed[::7], moving[::5] = 255, 255  # not constant
    routed = plan_registration(tiny_model, fixed, moving, RegistrationOptions())
    assert routed.large and (routed.overview_side, routed.window, routed.n_windows) == (
        plan.IN_MEMORY_OVERVIEW_SIDE, plan.IN_MEMORY_WINDOW, plan.IN_MEMORY_WINDOWS)
    small = np.zeros((plan.COARSE_TO_FINE_SIDE, 600), np.uint8)
    small[::7] = 255
    assert not plan_registration(tiny_model, small, moving, RegistrationOptions()).large
    strip = np.zeros((side // 4, side), np.uint8)  # its overview would be 128 px thin
    strip[::7] = 255
    assert not plan_registration(tiny_model, strip, strip, RegistrationOptions()).large
    for options, given in ((RegistrationOptions(), True),
                           (RegistrationOptions(transform="deformable"), False),
                           (RegistrationOptions(method="sift"), False),
                           (RegistrationOptions(initial_transform=api.AffineTransform.rigid()), False),
                           (RegistrationOptions(fixed_pixel_size=1.0, moving_pixel_size=2.0), False)):
        assert not plan_registration(tiny_model, fixed, moving, options, comirs_given=given).large


@pytest.mark.slow
def test_size_route_is_as_precise_as_a_success_needs():
    """A 2048² pair in memory, registered coarse to fine (overview, full-resolution windows,
    then mutual information on the images): as precise as the full-resolution route (0.05 px
    there, 0.32 px from the windows alone; docs/benchmarks.md, "Speed by image size"), likely."""
    from napari_comir.core.transforms import corner_error

    bf, shg, truth = misaligned_pair((2048, 2048), seed=1, angle_deg=-47.0, translation_xy=(31.0, -18.0))
    result = api.register_multimodal(shg, bf, "bf-shg", device="cpu")
    assert result.method == "pyramid" and result.success_likely
    assert "mutual_information" in result.timings
    assert corner_error(truth, result.transform, bf.shape[:2]) < 0.15
