"""The images' own detail beside the CoMIRs in the deformable stage: added for two colour bright
fields only, and what it buys where the CoMIRs are coarser than the images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.color import hed2rgb

from napari_comir.core.evaluation import smooth_deformation
from napari_comir.core.field_transform import resample
from napari_comir.core.registration.deformable import register_deformable
from napari_comir.core.registration.image_detail import with_image_detail
from napari_comir.core.transforms import AffineTransform

SHAPE = (256, 256)


def stained(haematoxylin: np.ndarray, second_stain: np.ndarray) -> np.ndarray:
    """An 8-bit colour bright field: haematoxylin and a second stain (eosin's channel) on white."""
    hed = np.stack([haematoxylin, second_stain, np.zeros_like(haematoxylin)], axis=-1)
    return (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def bent_sections():
    """Two colour bright fields sharing their nuclei (as H&E and an IHC stain share the
    haematoxylin), the moving one bent by a known smooth field; and CoMIR stand-ins that carry
    only the tissue's coarse layout (the nuclei blurred away), as a model taught from a few pairs
    may, each with detail of its own where the modalities disagree."""
    rng = np.random.default_rng(0)
    nuclei = ndimage.gaussian_filter((rng.random(SHAPE) < 0.01).astype(float), 1.5)
    nuclei /= nuclei.max()
    layout = ndimage.gaussian_filter(rng.normal(size=SHAPE), 12.0)
    layout = (layout - layout.min()) / np.ptp(layout)
    tissue = np.clip(2 * layout - 1, 0, 1)  # patches of tissue on white glass
    fixed = stained(0.6 * nuclei, 0.3 * tissue)
    bend = smooth_deformation(SHAPE, 5.0, np.random.default_rng(1), smoothness_px=60.0)
    moving = resample(stained(0.5 * nuclei, 0.4 * tissue ** 2), bend.inverse(), SHAPE, cval=255)
    coarse = ndimage.gaussian_filter(layout, 6.0)
    own = [ndimage.gaussian_filter(rng.normal(size=SHAPE), 3.0) for _ in range(2)]
    fixed_comir, moving_comir = (coarse + 0.5 * np.std(coarse) * detail / np.std(detail) for detail in own)
    return fixed, moving, fixed_comir, resample(moving_comir, bend.inverse(), SHAPE), bend


def test_two_colour_bright_fields_get_their_tissue_density_as_a_channel(bent_sections):
    fixed, moving, fixed_comir, moving_comir, _ = bent_sections
    fixed_matched, moving_matched, added = with_image_detail(fixed_comir, moving_comir, fixed, moving)
    assert added and fixed_matched.shape == (*SHAPE, 2) and moving_matched.shape == (*SHAPE, 2)
    np.testing.assert_allclose(fixed_matched[..., 0], fixed_comir, rtol=1e-6)  # float32
    # the added channel is the tissue density: bright where the nuclei are
    nuclei = fixed[..., 2] < 200
    assert fixed_matched[nuclei, 1].mean() > fixed_matched[~nuclei, 1].mean() + 0.1


def test_a_dark_field_partner_keeps_the_comirs_alone(bent_sections):
    fixed, _, fixed_comir, moving_comir, _ = bent_sections
    dark_field = (255 - fixed.mean(axis=-1)).astype(np.uint8)  # signal on black, like SHG
    for images in ((fixed, dark_field), (dark_field, fixed)):
        fixed_matched, moving_matched, added = with_image_detail(fixed_comir, moving_comir, *images)
        assert not added and fixed_matched.shape == (*SHAPE, 1) and moving_matched.shape == (*SHAPE, 1)


def test_a_comir_off_its_images_grid_is_refused(bent_sections):
    fixed, moving, fixed_comir, moving_comir, _ = bent_sections
    with pytest.raises(ValueError, match="not on its image's grid"):
        with_image_detail(fixed_comir[:128], moving_comir, fixed, moving)


def test_the_images_detail_finds_a_bend_the_coarse_comirs_miss(bent_sections):
    """CoMIRs that share only the coarse layout hold a 5 px bend loosely (1.8 px off, the field
    refused); matched with the shared nuclei the field finds it to 0.2 px and is kept."""
    fixed, moving, fixed_comir, moving_comir, bend = bent_sections
    moving_xy = np.random.default_rng(2).uniform(40, 216, size=(200, 2))
    errors, kept = [], []
    with_images = with_image_detail(fixed_comir, moving_comir, fixed, moving)[:2]
    for matched in ((fixed_comir, moving_comir), with_images):
        found = register_deformable(*matched, AffineTransform.rigid(0.0))
        moved = found.field.apply_xy(moving_xy) - bend.apply_xy(moving_xy)
        errors.append(np.median(np.linalg.norm(moved, axis=1)))
        kept.append(found.kept)
    comirs_alone, with_images = errors
    assert with_images < 0.3 * comirs_alone and with_images < 0.5, errors
    assert kept[1], "the field matched with the images' detail is kept"
