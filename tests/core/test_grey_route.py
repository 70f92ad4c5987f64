"""The grey route taught alone: only the grey palette learns, the networks stay bit-identical."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_comir.core.data import AlignedPair, colourise, grey_palette
from napari_comir.core.grey_route import colourise_levels, grey_route_events, grey_routes
from napari_comir.core.inference import compute_comir
from napari_comir.core.teaching import GREY_ROUTE_LR, TeachingPair, teach_config, teaching_events
from napari_comir.core.transforms import AffineTransform


def _stained(rng, shape=(96, 128)):
    """A pink-and-purple RGB bright field, its grey version (BT.601) and an SHG-like image."""
    from scipy import ndimage

    tissue = ndimage.gaussian_filter(rng.random(shape), 2.5)
    tissue = (tissue - tissue.min()) / np.ptp(tissue)
    rgb = np.stack([230 - 60 * tissue, 200 - 150 * tissue, 220 - 80 * tissue], -1).astype(np.uint8)
    grey = (rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    shg = (255 * tissue**3).astype(np.uint8)
    return rgb, grey, shg


@pytest.fixture
def model(tiny_model, rng):
    """``tiny_model`` (bf-shg's modalities) with a grey palette from a stained image."""
    rgb, _, _ = _stained(rng)
    spec = tiny_model.card.modalities["bf"]
    tiny_model.card.modalities["bf"] = dataclasses.replace(spec, grey_palette=grey_palette([rgb]))
    return tiny_model


def test_the_palette_colours_patches_as_inference_colours_images(model, rng):
    _, grey, _ = _stained(rng)
    palette = model.card.modalities["bf"].grey_palette
    coloured = colourise_levels(torch.from_numpy(grey.astype(np.float32))[None, None],
                                torch.tensor(palette, dtype=torch.float32))
    np.testing.assert_allclose(coloured[0].permute(1, 2, 0).numpy(), colourise(grey, palette),
                               atol=1e-3)


def test_only_rgb_modalities_with_a_palette_and_grey_images_have_a_grey_route(model, rng):
    rgb, grey, shg = _stained(rng)
    assert grey_routes(model.card, [AlignedPair({"bf": grey, "shg": shg})]) == ["bf"]
    assert grey_routes(model.card, [AlignedPair({"bf": grey[..., None], "shg": shg})]) == ["bf"]
    assert grey_routes(model.card, [AlignedPair({"bf": grey, "shg": shg}),
                                    AlignedPair({"bf": rgb, "shg": shg})]) == []
    pair = TeachingPair(shg, grey, AffineTransform.similarity())  # fixed: SHG, moving: bf
    assert grey_routes(model.card, [pair]) == ["bf"]
    model.card.modalities["bf"] = dataclasses.replace(model.card.modalities["bf"], grey_palette=None)
    assert grey_routes(model.card, [pair]) == []


def test_teaching_the_grey_route_leaves_every_weight_and_colour_comir_bit_identical(model, rng):
    rgb, grey, shg = _stained(rng)
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    before = {"colour": compute_comir(model, rgb, "bf"), "grey": compute_comir(model, grey, "bf"),
              "shg": compute_comir(model, shg, "shg")}
    palette = np.array(model.card.modalities["bf"].grey_palette)
    config = teach_config(seed=0, device="cpu", grey_route=True)
    config.steps, config.batch_size, config.patch_size = 12, 4, 64
    events = list(grey_route_events(model, ["bf"], [AlignedPair({"bf": grey, "shg": shg})], config))
    assert [e.step for e in events] == list(range(1, 13)) and events[-1].result is model
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    np.testing.assert_array_equal(compute_comir(model, rgb, "bf"), before["colour"])
    np.testing.assert_array_equal(compute_comir(model, shg, "shg"), before["shg"])
    learned = np.array(model.card.modalities["bf"].grey_palette)
    change = np.linalg.norm(learned - palette, axis=1)  # Adam: ≤ lr per colour a step
    assert 0.5 < change.max() <= 12 * GREY_ROUTE_LR * np.sqrt(3) + 1e-4
    assert learned.min() >= 0 and learned.max() <= 255
    inside = ((learned > 0) & (learned < 255)).all(axis=1)  # not clamped: luminance kept
    np.testing.assert_allclose(learned[inside] @ [0.299, 0.587, 0.114],
                               palette[inside] @ [0.299, 0.587, 0.114], atol=1e-3)
    assert not np.array_equal(compute_comir(model, grey, "bf"), before["grey"])


def test_teaching_events_teach_a_models_grey_pair_through_its_grey_route(model, rng):
    """A model taught more of its own pairs, the bright field grey: the palette learns, the
    card says so, and the networks are those it started with."""
    _, grey, shg = _stained(rng)
    corners = np.array([[10.0, 10], [110, 10], [110, 80], [10, 80]])
    pair = TeachingPair.from_landmarks(shg, grey, corners, corners, name="grey pair")
    weights = {key: value.clone() for key, value in model.state_dict().items()}

    def register(fixed_image, moving_image, model):
        return SimpleNamespace(transform=AffineTransform.similarity(), success_likely=True,
                               detail_score=0.5)

    config = teach_config(seed=0, device="cpu", grey_route=True)
    config.steps, config.batch_size, config.patch_size = 2, 4, 64
    *_, last = teaching_events([pair], model, register, config=config, new_pair=False)
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())
    assert last.result.model.card.training["taught"] == "grey palette of bf"
    assert "only the grey palette of 'bf' learned" in model.card.description


@pytest.mark.slow
def test_bf_shg_taught_one_grey_pair_registers_it_and_colour_as_before():
    """bf-shg fails the raw case 1B_D2 with its bright field in grey; taught that pair through
    its grey route (five clicks, 2 px noise), it registers it, and the colour version lands
    exactly where the bundled model puts it."""
    from napari_comir import api
    from napari_comir.core.evaluation import raw_cases

    folder = Path(__file__).resolve().parents[3] / "shared" / "data" / "bf_shg_raw"
    if not (folder / "pairs.csv").is_file():
        pytest.skip("../shared/data/bf_shg_raw is not beside the checkout")
    (case,) = [case for case in raw_cases(folder) if case.name == "1B_D2"]
    grey = (case.moving @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    truth = TeachingPair(case.fixed, grey, case.truth)
    bundled = api.load_model("bf-shg", "cpu")
    assert not truth.registered(api.register_multimodal(case.fixed, grey, bundled).transform)
    clicks_xy = np.array([[0.18, 0.2], [0.82, 0.21], [0.78, 0.82], [0.2, 0.78], [0.5, 0.49]])
    moving_xy = clicks_xy * [grey.shape[1], grey.shape[0]]
    fixed_xy = case.truth.apply_xy(moving_xy) + np.random.default_rng(0).normal(0, 2, (5, 2))
    pair = TeachingPair.from_landmarks(case.fixed, grey, fixed_xy, moving_xy, name="1B_D2 grey")
    *_, last = api.teach([pair], start=bundled, check_pairs=[truth], device="cpu")
    taught = last.result.model
    assert last.result.checks[0].new_registered and last.result.replaces
    colour = [api.register_multimodal(case.fixed, case.moving, m).transform.matrix_xy
              for m in (bundled, taught)]
    np.testing.assert_array_equal(*colour)
