import numpy as np
import pytest
import torch

from napari_comir.core.errors import InputError
from napari_comir.core.inference import compute_comir, compute_comir_pair, iter_tiles
from napari_comir.core.models import UNet, build_network, count_parameters


@pytest.mark.parametrize("shape", [(37, 50), (64, 64), (129, 17)])
def test_unet_any_size(shape):
    net = UNet(3, 2, base_channels=4, depth=3).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *shape))
    assert out.shape == (2, 2, *shape)


def test_build_network_unknown_type():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network(1, 1, {"type": "transformer"})
    assert count_parameters(build_network(1, 1, {"type": "unet", "base_channels": 4, "depth": 2})) > 0


def test_iter_tiles_cover_image_exactly():
    covered = np.zeros((300, 517), int)
    for rows, cols in iter_tiles((300, 517), tile=128, overlap=32):
        covered[rows, cols] += 1
    assert covered.min() >= 1


def _randomise_batchnorm(model):
    """Untrained BatchNorm is identity-like; random running stats make the tiling test stricter."""
    g = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
    return model.eval()


def test_tiled_equals_whole_image(tiny_model, rng):
    """Seamless tiling: tiled output equals whole-image output within 1e-3 of its range."""
    model = _randomise_batchnorm(tiny_model)
    image = (rng.random((200, 260, 3)) * 255).astype(np.uint8)
    whole = compute_comir(model, image, "bf", tile=1024)
    tiled = compute_comir(model, image, "bf", tile=128, overlap=64)
    assert tiled.shape == whole.shape == (200, 260, 1)
    scale = whole.max() - whole.min()
    assert np.abs(tiled - whole).max() <= 1e-3 * scale


def test_inference_progress_and_memmap_output(tiny_model, rng, tmp_path):
    image = rng.random((150, 150)).astype(np.float32)
    out = np.lib.format.open_memmap(tmp_path / "comir.npy", mode="w+", dtype=np.float32,
                                    shape=(150, 150, 1))
    events = []
    result = compute_comir(tiny_model, image, "shg", events.append, tile=96, overlap=16, out=out)
    assert result is out and events[-1].result is out
    assert [e.step for e in events[:-1]] == list(range(1, 5)) and events[0].total == 4


@pytest.mark.parametrize("image, modality, message", [
    (np.zeros((64, 64, 2)), "bf", "2 channel"),
    (np.zeros((64, 64, 3)), "shg", "3 channel"),
    (np.full((64, 64), np.nan), "shg", "NaN"),
    (np.zeros((0, 64)), "shg", "empty"),
    (np.zeros((8, 64)), "shg", "too small"),
    (np.zeros((5, 64, 64, 3)), "bf", "not a 2-D image"),
    (np.zeros((64, 64), bool), "shg", "dtype bool"),
    (np.zeros((64, 64)), "nir", "no modality"),
])
def test_inference_bad_inputs(tiny_model, image, modality, message):
    with pytest.raises(InputError, match=message):
        compute_comir(tiny_model, image, modality)


def test_comir_pair_equals_one_at_a_time_and_reports_bad_input(tiny_model, rng):
    """Both networks side by side (two threads on a CPU): same CoMIRs, same clear errors."""
    model = _randomise_batchnorm(tiny_model)
    fixed = rng.random((64, 80)).astype(np.float32)
    moving = (rng.random((72, 60, 3)) * 255).astype(np.uint8)
    fixed_comir, moving_comir = compute_comir_pair(model, fixed, "shg", moving, "bf")
    np.testing.assert_array_equal(fixed_comir, compute_comir(model, fixed, "shg"))
    np.testing.assert_array_equal(moving_comir, compute_comir(model, moving, "bf"))
    with pytest.raises(InputError, match="bf image.*2 channel"):
        compute_comir_pair(model, fixed, "shg", np.dstack([fixed, fixed]), "bf")


def test_grey_bright_field_is_coloured_by_the_palette(tiny_model, rng):
    """A grey image for an RGB modality is coloured with the card's palette (or repeated into
    R, G and B without one), and tiles of a large grey image get the same colours."""
    from dataclasses import replace

    from napari_comir.core.data import PALETTE_LEVELS, colourise

    grey = (rng.random((64, 64)) * 255).astype(np.uint8)
    repeated = compute_comir(tiny_model, np.repeat(grey[..., None], 3, -1), "bf")
    np.testing.assert_allclose(compute_comir(tiny_model, grey, "bf"), repeated, atol=1e-5)
    palette = tuple((v, 0.5 * v, 255 - v) for v in PALETTE_LEVELS)
    spec = replace(tiny_model.card.modalities["bf"], grey_palette=palette)
    tiny_model.card.modalities["bf"] = spec
    coloured = colourise(grey, palette)
    np.testing.assert_allclose(coloured[..., 2], 255 - grey, atol=1e-4)
    np.testing.assert_allclose(compute_comir(tiny_model, grey, "bf"),
                               compute_comir(tiny_model, coloured, "bf"), atol=1e-5)


def test_rgba_alpha_is_dropped(tiny_model, rng):
    rgb = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    rgba = np.dstack([rgb, np.full((64, 64), 255, np.uint8)])
    assert np.allclose(compute_comir(tiny_model, rgba, "bf"), compute_comir(tiny_model, rgb, "bf"))


def test_c4_average_is_exactly_equivariant_to_quarter_turns(tiny_model, rng):
    model = _randomise_batchnorm(tiny_model)
    image = rng.random((96, 96)).astype(np.float32)
    turned = np.rot90(image).copy()
    plain = compute_comir(model, turned, "shg")[..., 0]
    averaged = compute_comir(model, turned, "shg", c4_average=True)[..., 0]
    reference = compute_comir(model, image, "shg", c4_average=True)[..., 0]
    np.testing.assert_allclose(np.rot90(reference), averaged, atol=1e-5)
    assert np.abs(np.rot90(compute_comir(model, image, "shg")[..., 0]) - plain).max() > 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_equals_eager_and_follows_weight_updates():
    from napari_comir.api import new_model
    from napari_comir.core.graphed import _CACHE

    model = new_model("bf-shg").to(torch.device("cuda"))
    image = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    eager = compute_comir(model, image, "shg", cuda_graphs=False)
    np.testing.assert_allclose(compute_comir(model, image, "shg"), eager, atol=1e-5)
    np.testing.assert_allclose(compute_comir(model, image, "shg"), eager, atol=1e-5)  # replayed
    network = model.networks["shg"]
    assert len(_CACHE[network]) == 1
    with torch.no_grad():  # in place, like an optimiser step: the same graph sees it
        network.head.bias += 1.0
    np.testing.assert_allclose(compute_comir(model, image, "shg"), eager + 1.0, atol=1e-5)
    network.to(torch.float64).to(torch.float32)  # new memory: a new graph
    np.testing.assert_allclose(compute_comir(model, image, "shg"), eager + 1.0, atol=1e-5)
    half = compute_comir(model, image, "shg", half=True)
    np.testing.assert_allclose(half, eager + 1.0, atol=0.05 * np.ptp(eager))


@pytest.mark.parametrize("onednn", [True, False])
def test_folded_network_equals_the_network(onednn, monkeypatch):
    """BatchNorm folded, skips summed, ReLU fused by oneDNN (or not): the same function."""
    from napari_comir.core import models

    if onednn and not models._onednn_fusion_works():
        pytest.skip("this torch build has no oneDNN fused convolutions")
    if not onednn:
        monkeypatch.setattr(models, "_onednn_fusion_works", lambda: False)
    torch.manual_seed(0)
    net = _randomise_batchnorm(UNet(3, 2, base_channels=4, depth=3))
    x = torch.rand(2, 3, 40, 56)
    with torch.inference_mode():
        reference = net(x)
        folded = net.folded()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.folded().modules())
    torch.testing.assert_close(folded, reference, atol=1e-5, rtol=1e-5)


def test_cpu_inference_refolds_after_any_weight_change(tiny_model, rng):
    """The cached folded copy must follow in-place updates (optimiser steps, BatchNorm statistics)."""
    from napari_comir.core.inference import _FOLDED, _inference_network

    model = _randomise_batchnorm(tiny_model)
    image = rng.random((64, 64)).astype(np.float32)
    network = model.networks["shg"]
    before = compute_comir(model, image, "shg")
    assert _inference_network(model, "shg") is _inference_network(model, "shg")  # cached
    with torch.no_grad():
        network.head.bias += 1.0
    np.testing.assert_allclose(compute_comir(model, image, "shg"), before + 1.0, atol=1e-5)
    bn = next(m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var.mul_(4.0)
    changed = compute_comir(model, image, "shg")
    _FOLDED.clear()
    np.testing.assert_allclose(changed, compute_comir(model, image, "shg"), atol=1e-6)
    assert np.abs(changed - before - 1.0).max() > 1e-3
