import numpy as np
import pytest
import torch

from napari_comir.core.data import (
    AlignedPair,
    ModalitySpec,
    PatchSampler,
    colourise,
    normalize,
    read_pairs_csv,
    validate_image,
)
from napari_comir.core.errors import InputError


def test_normalize_percentiles_and_log():
    image = np.arange(10000, dtype=np.float32).reshape(100, 100, 1)
    out = normalize(image, ModalitySpec(1, percentiles=(1, 99)))
    assert out.dtype == torch.float32 and out.shape == (1, 100, 100)
    assert out.min() == 0 and out.max() == 1
    assert np.isclose(float(out.median()), 0.5, atol=0.01)
    logged = normalize(image, ModalitySpec(1, log1p=True, percentiles=(0, 100)))
    assert logged[0, 50, 50] > 0.9  # log compresses the high end


def test_normalize_rgb_is_channels_last_per_channel():
    rng = np.random.default_rng(0)
    image = (rng.random((40, 50, 3)) * [50, 100, 250]).astype(np.uint8)
    out = normalize(image, ModalitySpec(3, percentiles=(0, 100)))
    assert out.shape == (3, 40, 50) and out[None].is_contiguous(memory_format=torch.channels_last)
    for c in range(3):  # each channel stretched to [0, 1] on its own
        expected = (image[..., c] - image[..., c].min()) / np.ptp(image[..., c])
        np.testing.assert_allclose(out[c].numpy(), expected, atol=1e-6)


def test_normalize_constant_image_is_finite():
    assert torch.isfinite(normalize(np.full((32, 32, 1), 7.0), ModalitySpec(1))).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_normalize_on_cuda_matches_cpu():
    rng = np.random.default_rng(1)
    image = (rng.random((300, 280, 3)) * 4000).astype(np.uint16)
    spec = ModalitySpec(3, log1p=True)
    on_gpu = normalize(image, spec, device="cuda")
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), normalize(image, spec), atol=1e-5, rtol=0)


def test_validate_image_keeps_grey_and_rgb():
    assert validate_image(np.zeros((20, 30), np.uint16)).shape == (20, 30, 1)
    assert validate_image(np.zeros((20, 30, 3), np.uint8), 3).shape == (20, 30, 3)


def test_sampler_patches_are_aligned_rotated_copies():
    """The same random geometry is applied to both modalities: identical inputs give identical patches."""
    rng = np.random.default_rng(0)
    image = rng.random((200, 220)).astype(np.float32)
    spec = ModalitySpec(1, percentiles=(0, 100))
    pair = AlignedPair({"a": image, "b": image.copy()})
    sampler = PatchSampler([pair], {"a": spec, "b": spec}, patch_size=64, seed=1, jitter=False)
    a, b = sampler.sample(6)
    assert a.shape == (6, 1, 64, 64) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # different random crops


def test_sampler_is_deterministic_with_seed():
    image = np.random.default_rng(0).random((150, 150)).astype(np.float32)
    spec = ModalitySpec(1)
    pair = AlignedPair({"a": image, "b": image})
    first = PatchSampler([pair], {"a": spec, "b": spec}, 64, seed=3).sample(4)
    second = PatchSampler([pair], {"a": spec, "b": spec}, 64, seed=3).sample(4)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_sampler_rejects_small_or_mismatched():
    spec = ModalitySpec(1)
    with pytest.raises(InputError, match="too small"):
        PatchSampler([AlignedPair({"a": np.zeros((40, 40)), "b": np.zeros((40, 40))})],
                     {"a": spec, "b": spec}, patch_size=64)
    with pytest.raises(InputError, match="same size"):
        AlignedPair({"a": np.zeros((40, 40)), "b": np.zeros((41, 40))})
    with pytest.raises(InputError, match="at least one"):
        PatchSampler([], {"a": spec, "b": spec})


def test_read_pairs_csv_real(bf_shg_dir):
    val = read_pairs_csv(bf_shg_dir / "pairs.csv", ("bf", "shg"), split="val")
    assert len(val) == 4 and val[0].images["bf"].shape == (512, 512, 3)
    assert val[0].images["shg"].shape == (512, 512)
    with pytest.raises(InputError, match="split"):
        read_pairs_csv(bf_shg_dir / "pairs.csv", ("bf", "shg"), split="test")
    with pytest.raises(InputError, match="nir_file"):
        read_pairs_csv(bf_shg_dir / "pairs.csv", ("rgb", "nir"))


def test_sampler_hue_turn_keeps_greys_and_changes_colours():
    """Hue augmentation turns colours about the grey axis: a grey pixel stays grey, a red one
    changes colour but keeps its distance from grey; a grey modality is left alone."""
    image = np.zeros((96, 96, 3), np.float32)
    image[:, :48] = 0.5            # grey half
    image[:, 48:] = [0.9, 0.1, 0.1]  # red half
    rgb, grey = ModalitySpec(3, percentiles=(0, 100)), ModalitySpec(1, percentiles=(0, 100))
    pair = AlignedPair({"a": image, "b": image[..., 0]})
    plain = PatchSampler([pair], {"a": rgb, "b": grey}, 64, seed=2, jitter=False)
    turned = PatchSampler([pair], {"a": rgb, "b": grey}, 64, seed=2, jitter=False, hue_degrees=180)
    (a_plain, b_plain), (a_turned, b_turned) = plain.sample(8), turned.sample(8)
    assert torch.equal(b_plain, b_turned)
    greys = (a_plain.std(dim=1) < 1e-6)
    torch.testing.assert_close(a_turned.permute(0, 2, 3, 1)[greys], a_plain.permute(0, 2, 3, 1)[greys])
    colours = a_plain.std(dim=1) > 0.3
    assert (a_turned - a_plain).abs().amax(dim=1)[colours].mean() > 0.1


def test_sampler_shift_moves_the_second_patch_only():
    """``shift_px``: the second modality's patch lies up to that many px off the first's."""
    from scipy import ndimage

    image = ndimage.gaussian_filter(np.random.default_rng(0).random((200, 220)), 4).astype(np.float32)
    spec = ModalitySpec(1, percentiles=(0, 100))
    pair = AlignedPair({"a": image, "b": image.copy()})
    a, b = PatchSampler([pair], {"a": spec, "b": spec}, 64, seed=1, jitter=False, shift_px=3).sample(6)
    a, b = (x.flatten(1) - x.flatten(1).mean(1, keepdim=True) for x in (a, b))
    ncc = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert ncc.min() > 0.5 and ncc.min() < 0.999  # near, but moved
    plain_a, _ = PatchSampler([pair], {"a": spec, "b": spec}, 64, seed=1, jitter=False).sample(6)
    first, _ = PatchSampler([pair], {"a": spec, "b": spec}, 64, seed=1, jitter=False,
                            shift_px=3).sample(6)
    assert torch.equal(first[0], plain_a[0])  # the first modality's patch is where it was


def test_sampler_colours_a_grey_image_for_an_rgb_network_as_inference_does():
    """A grey bright field taught to an RGB network is seen in the palette's colours, as
    inference shows it (repeated into R, G, B, the network learned inputs it never meets)."""
    from napari_comir.api import load_model

    spec = load_model("bf-shg", "cpu").card.modalities["bf"]
    grey = (np.random.default_rng(0).random((100, 100)) * 255).astype(np.uint8)
    other = ModalitySpec(1, percentiles=(0, 100))
    taught, _ = PatchSampler([AlignedPair({"bf": grey, "b": grey})], {"bf": spec, "b": other}, 64,
                             seed=4, jitter=False).sample(3)
    coloured = colourise(grey, spec.grey_palette)
    expected, _ = PatchSampler([AlignedPair({"bf": coloured, "b": grey})], {"bf": spec, "b": other},
                               64, seed=4, jitter=False).sample(3)
    torch.testing.assert_close(taught, expected)
    assert not torch.allclose(taught[:, 0], taught[:, 2])  # not R = G = B
