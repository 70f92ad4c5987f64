import json
import time

import numpy as np
import pytest
import torch

from napari_comir import api
from napari_comir.core.data import AlignedPair
from napari_comir.core.errors import InputError, ModelFileError
from napari_comir.core.inference import compute_comir
from napari_comir.core.training import TrainConfig, load_checkpoint, train
from napari_comir.core.zoo import list_models, load_model, save_model, save_user_model

FAST = dict(batch_size=6, patch_size=64, lr=3e-3, device="cpu")


def _losses(events):
    return [e.metrics["loss"] for e in events]


def test_loss_falls_on_a_real_pair(real_pair):
    torch.manual_seed(0)
    model = api.new_model("bf-shg")  # the shipped architecture
    bf, shg = real_pair
    events = list(train(model, [AlignedPair({"bf": bf, "shg": shg})],
                        TrainConfig(steps=40, seed=0, **FAST)))
    losses = _losses(events)
    assert len(losses) == 40 and events[-1].result is model
    assert losses[0] > 2.2  # near chance: log(2N - 1) = log(11) = 2.40
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:8])
    assert not model.training


def _pair(seed=0, size=96):
    rng = np.random.default_rng(seed)
    shg = rng.random((size, size)).astype(np.float32)
    return AlignedPair({"shg": shg, "bf": np.repeat(1 - shg[..., None], 3, axis=2)})


def test_training_is_deterministic(tiny_model):
    other = api.new_model("bf-shg", architecture=tiny_model.card.architecture)
    other.load_state_dict(tiny_model.state_dict())
    config = TrainConfig(steps=3, seed=5, **FAST)
    assert _losses(train(tiny_model, [_pair()], config)) == _losses(train(other, [_pair()], config))


def test_stop_early_leaves_eval_model(tiny_model):
    run = train(tiny_model, [_pair()], TrainConfig(steps=50, seed=0, **FAST))
    for event in run:
        if event.step == 2:
            break
    run.close()
    assert not tiny_model.training


def test_checkpoint_resume_matches_uninterrupted(tmp_path, tiny_model):
    start = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    config = TrainConfig(steps=4, seed=1, checkpoint=str(tmp_path / "ck.pt"), checkpoint_every=2, **FAST)
    full = _losses(train(tiny_model, [_pair()], config))

    tiny_model.load_state_dict(start)
    run = train(tiny_model, [_pair()], config)
    first_half = [next(run).metrics["loss"] for _ in range(2)]
    run.close()
    assert load_checkpoint(tmp_path / "ck.pt")["step"] == 2
    resumed = _losses(train(tiny_model, [_pair()], config, resume=tmp_path / "ck.pt"))
    np.testing.assert_allclose(first_half + resumed, full, rtol=1e-4)


def test_save_load_round_trip(tmp_path, tiny_model, rng):
    card_path = save_model(tiny_model, tmp_path / "m")
    card = json.loads(card_path.read_text())
    assert card["modalities"]["shg"]["log1p"] is True and len(card["sha256"]) == 64
    loaded = load_model(card_path)
    image = rng.random((40, 40)).astype(np.float32)
    np.testing.assert_array_equal(compute_comir(loaded, image, "shg"),
                                  compute_comir(tiny_model.eval(), image, "shg"))
    assert load_model(tmp_path / "m.safetensors").card.name == "bf-shg"


def test_dots_in_a_model_name_are_kept(tmp_path, tiny_model):
    """``run-w0.05`` is a name, not ``run-w0`` with suffix ``.05`` (two runs once overwrote each other)."""
    card_path = save_model(tiny_model, tmp_path / "run-w0.05")
    assert card_path.name == "run-w0.05.json" and (tmp_path / "run-w0.05.safetensors").is_file()
    assert load_model(tmp_path / "run-w0.05.safetensors").card.name == "bf-shg"
    save_model(tiny_model, tmp_path / "run-w0.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run-w0.05.json", "run-w0.05.safetensors", "run-w0.json", "run-w0.safetensors"]


def test_user_models_are_listed_and_loadable(tiny_model):
    save_user_model(tiny_model, "my-tissue")
    assert "my-tissue" in list_models()
    assert load_model("my-tissue").card.name == "my-tissue"
    save_user_model(tiny_model, "my-tissue-v1.2")
    assert load_model("my-tissue-v1.2").card.name == "my-tissue-v1.2"
    with pytest.raises(ModelFileError, match="invalid model name"):
        save_user_model(tiny_model, "../escape")


def test_load_errors_are_clear(tmp_path, tiny_model):
    with pytest.raises(ModelFileError, match="unknown model 'nope'"):
        load_model("nope")
    card_path = save_model(tiny_model, tmp_path / "m")
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(card_path)
    card = json.loads(card_path.read_text())
    card["sha256"] = ""
    card["architecture"]["base_channels"] = 8
    card_path.write_text(json.dumps(card))
    save_model(tiny_model, tmp_path / "other")
    (tmp_path / "other.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError, match="not a readable JSON"):
        load_model(tmp_path / "bad.json")


def test_pickled_weights_are_refused(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path / "m")
    torch.save(tiny_model.state_dict(), tmp_path / "m.safetensors")  # a pickle in disguise
    card = json.loads((tmp_path / "m.json").read_text())
    card["sha256"] = ""
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        load_model(tmp_path / "m.json")


def test_freeze_batchnorm_keeps_pretrained_statistics(tiny_model):
    def running_means():
        return [m.running_mean.clone() for m in tiny_model.modules()
                if isinstance(m, torch.nn.BatchNorm2d)]

    before = running_means()
    list(train(tiny_model, [_pair()], TrainConfig(steps=2, seed=0, freeze_batchnorm=True, **FAST)))
    assert all(torch.equal(a, b) for a, b in zip(before, running_means(), strict=True))
    list(train(tiny_model, [_pair()], TrainConfig(steps=2, seed=0, **FAST)))
    assert not all(torch.equal(a, b) for a, b in zip(before, running_means(), strict=True))


def test_a_frozen_network_stays_as_it_was_while_the_other_learns(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    list(train(tiny_model, [_pair()], TrainConfig(steps=2, seed=0, frozen_modalities=("shg",), **FAST)))
    after = tiny_model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k.startswith("networks.shg."))
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith("networks.bf."))
    with pytest.raises(InputError, match="cannot freeze he"):
        next(train(tiny_model, [_pair()], TrainConfig(frozen_modalities=("he",), **FAST)))


def test_api_fine_tune_defaults_are_gentle(tiny_model):
    """Without a config, fine-tuning keeps the BatchNorm statistics and uses lr 1e-4."""
    def running_means():
        return [m.running_mean.clone() for m in tiny_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    before = running_means()
    weights = {k: v.clone() for k, v in tiny_model.state_dict().items() if k.endswith("weight")}
    run = api.fine_tune(tiny_model, [_pair(size=128)], copy_model=False)
    event = next(run)
    run.close()
    assert event.metrics["lr"] == pytest.approx(1e-4, rel=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, running_means(), strict=True))
    assert any(not torch.equal(v, tiny_model.state_dict()[k]) for k, v in weights.items())  # it did train


def test_time_budget_ends_the_run_and_anneals_within_it(tiny_model):
    config = TrainConfig(steps=100_000, seed=0, max_seconds=3.0, **FAST)
    tic = time.perf_counter()
    events = list(train(tiny_model, [_pair()], config))
    assert time.perf_counter() - tic < 3.0 + 5.0  # the budget, plus at most a slow last step
    last = events[-1]
    assert last.result is tiny_model and last.step == last.total < 100_000
    assert last.metrics["lr"] < 0.5 * FAST["lr"]  # the cosine decay was planned for the budget
    # Until a few steps are timed the total is unknown (0), never the 100 000 steps allowed
    # (a progress bar read "step 2/1000000000 · 14735510 min left").
    assert [event.total for event in events[:2]] == [0, 0]
    assert "timing the steps that fit in 3 s" in events[0].message
    assert all(0 < event.total < 100_000 for event in events[2:])  # then the steps that fit


@pytest.mark.parametrize("options, message", [
    ({"steps": 0}, "steps ≥ 1"),
    ({"batch_size": 1}, "negatives come from the batch"),
    ({"patch_size": 16}, "patch_size ≥ 32"),
    ({"lr": 0.0}, "learning rate must be positive"),
    ({"max_seconds": 0.0}, "max_seconds must be positive"),
    ({"optimizer": "rmsprop"}, "optimizer must be"),
    ({"equivariance_weight": -1.0}, "equivariance_weight must be ≥ 0"),
    ({"hue_degrees": -5.0}, "hue_degrees must be ≥ 0"),
    ({"shift_px": 100.0}, "shift_px must be a number of at most 64"),
])
def test_bad_training_settings_are_refused_before_training(tiny_model, options, message):
    with pytest.raises(InputError, match=message):
        next(train(tiny_model, [_pair()], TrainConfig(**options)))


def test_held_out_band_is_never_trained_on_and_is_measured(tiny_model, rng):
    """With holdout_every, a one-patch band of each pair is split off before sampling and the
    share of its patch pairs that find their partner is reported every N steps."""
    from napari_comir.core.data import AlignedPair
    from napari_comir.core.training import TrainConfig, split_off_band, train

    shg = rng.random((96, 160)).astype(np.float32)
    bf = (rng.random((96, 160, 3)) * 255).astype(np.uint8)
    pair = AlignedPair({"shg": shg, "bf": bf}, name="p")
    kept, band = split_off_band(pair, 48)
    assert kept.images["bf"].shape == (96, 112, 3) and band.images["shg"].shape == (96, 48)
    np.testing.assert_array_equal(band.images["shg"], shg[:, -48:])
    config = TrainConfig(steps=4, batch_size=4, patch_size=48, holdout_every=2, device="cpu")
    events = list(train(tiny_model, [pair], config))
    measured = [e.step for e in events if "heldout_match" in e.metrics]
    assert measured == [1, 2, 4]
    assert all(0.0 <= e.metrics["heldout_match"] <= 1.0 for e in events if e.step in measured)
    with pytest.raises(InputError, match="too small to hold out"):
        split_off_band(pair, 96)


def test_resume_of_a_finished_or_foreign_checkpoint_says_why(tmp_path, tiny_model):
    config = TrainConfig(steps=2, seed=1, checkpoint=str(tmp_path / "ck.pt"), checkpoint_every=1,
                         **FAST)
    _losses(train(tiny_model, [_pair()], config))
    with pytest.raises(InputError, match="already finished 2 steps"):
        next(train(tiny_model, [_pair()], config, resume=tmp_path / "ck.pt"))
    wider = api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 8, "depth": 3})
    longer = TrainConfig(steps=5, seed=1, **FAST)
    with pytest.raises(ModelFileError, match="saved for another model"):
        next(train(wider, [_pair()], longer, resume=tmp_path / "ck.pt"))
