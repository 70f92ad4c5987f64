"""Model and checkpoint files from untrusted sources: refused clearly, and nothing runs.

A pickle can execute code while it is loaded; the payload below would create a marker file.
Every way of handing it to napari-comir (model path, .safetensors in disguise, checkpoint,
``train --resume``, ``register --model``) must raise a clear error and leave no marker.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from napari_comir import api
from napari_comir.cli import main
from napari_comir.core.errors import ModelFileError
from napari_comir.core.training import load_checkpoint


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "the pickle payload ran"


@pytest.fixture
def evil(tmp_path, marker):
    """Crafted pickles: torch.save's zip format and a plain (legacy) pickle."""
    torch.save({"model": _Payload(marker), "step": 1}, tmp_path / "evil.pt")
    with open(tmp_path / "legacy.pt", "wb") as handle:
        pickle.dump({"model": _Payload(marker)}, handle)
    return tmp_path


@pytest.fixture
def saved(tmp_path, tiny_model):
    """A valid tiny model: (card path, weights path, card dict)."""
    card = api.save_model(tiny_model, tmp_path / "good")
    return card, card.with_suffix(".safetensors"), json.loads(card.read_text())


def _write_card(path, card: dict):
    path.write_text(json.dumps(card))
    return path


def test_pickle_as_model_path_is_refused(evil):
    with pytest.raises(ModelFileError, match="no model card evil.json beside"):
        api.load_model(str(evil / "evil.pt"))


def test_pickle_disguised_as_safetensors_is_refused(evil, saved):
    card = {**saved[2], "sha256": ""}  # no hash to catch it: the safetensors parser must
    (evil / "disguised.safetensors").write_bytes((evil / "evil.pt").read_bytes())
    _write_card(evil / "disguised.json", card)
    with pytest.raises(ModelFileError, match="not a valid safetensors weights file.*pickled"):
        api.load_model(str(evil / "disguised.json"))


@pytest.mark.parametrize("name", ["evil.pt", "legacy.pt"])
def test_pickle_as_checkpoint_is_refused(evil, name):
    with pytest.raises(ModelFileError, match=f"{name}: not a napari-comir checkpoint"):
        load_checkpoint(evil / name)


@pytest.mark.parametrize("name", ["evil.pt", "legacy.pt"])
def test_checkpoint_refusal_gives_no_unsafe_advice(evil, name):
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(evil / name)
    assert "weights_only" not in str(info.value) and "\x1b" not in str(info.value)


def test_cli_refuses_pickles(evil, tmp_path, capsys, pair_files):
    fixed, moving = pair_files
    status = main(["register", "--fixed", fixed, "--moving", moving, "--model",
                   str(evil / "evil.pt"), "--out", str(tmp_path / "r.json")])
    assert status == 2 and "no model card" in capsys.readouterr().err
    status = main(["train", "--fixed", fixed, "--moving", moving, "--base-channels", "4",
                   "--depth", "3", "--steps", "1", "--patch-size", "32", "--batch-size", "2",
                   "--resume", str(evil / "evil.pt"), "--out", str(tmp_path / "m")])
    assert status == 2 and "not a napari-comir checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "m.json").exists()


@pytest.fixture
def pair_files(tmp_path):
    """A tiny aligned pair on disk (synthetic, 64 x 64)."""
    from napari_comir.core.io import write_tiff
    from napari_comir.core.synthetic import synthetic_pair

    bf, shg = synthetic_pair((64, 64), seed=0)
    write_tiff(tmp_path / "shg.tif", shg)
    write_tiff(tmp_path / "bf.tif", bf)
    return str(tmp_path / "shg.tif"), str(tmp_path / "bf.tif")


def _truncate(weights):
    weights.write_bytes(weights.read_bytes()[:100])


def _flip_last_byte(weights):
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # still valid safetensors: one weight changed
    weights.write_bytes(bytes(data))


def _break_header(weights):
    data = bytearray(weights.read_bytes())
    data[8:12] = b"{{{{"
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, keep_hash, match", [
    (_truncate, True, "SHA-256 does not match"),
    (_flip_last_byte, True, "SHA-256 does not match"),
    (_truncate, False, "not a valid safetensors weights file"),
    (_break_header, False, "not a valid safetensors weights file"),
    (lambda w: w.unlink(), True, "weights file missing"),
], ids=["truncated", "one byte changed", "truncated, no hash", "broken header, no hash",
        "missing"])
def test_damaged_weights(saved, damage, keep_hash, match):
    card_path, weights, card = saved
    if not keep_hash:
        _write_card(card_path, {**card, "sha256": ""})
    damage(weights)
    with pytest.raises(ModelFileError, match=match):
        api.load_model(str(card_path))


@pytest.mark.parametrize("change, match", [
    (lambda c: {**c, "format": 99}, "unsupported card format 99"),
    (lambda c: {k: v for k, v in c.items() if k != "modalities"}, "missing field.*modalities"),
    (lambda c: {**c, "modalities": "bf,shg"}, "invalid field"),
    (lambda c: {**c, "modalities": {"bf": {"channels": "three"}, "shg": {"channels": 1}}},
     "invalid field"),
    (lambda c: {**c, "fixed_modality": "nir"}, "exactly two modalities"),
    (lambda c: {**c, "comir_channels": 7}, "channel counts out of range"),
    (lambda c: [c], "expected a JSON object"),
], ids=["format", "missing field", "modalities not a dict", "channels not a number",
        "unknown fixed modality", "too many CoMIR channels", "not an object"])
def test_card_with_wrong_schema(saved, change, match):
    card_path, _, card = saved
    _write_card(card_path, change(card))
    with pytest.raises(ModelFileError, match=match):
        api.load_model(str(card_path))


def test_card_that_is_not_json(saved):
    saved[0].write_bytes(b"\x00\xff not json")
    with pytest.raises(ModelFileError, match="not a readable JSON model card"):
        api.load_model(str(saved[0]))


@pytest.mark.parametrize("change", [
    lambda c: {**c, "architecture": {**c["architecture"], "base_channels": 8}},
    lambda c: {**c, "architecture": {**c["architecture"], "depth": 4}},
    lambda c: {**c, "modalities": {**c["modalities"], "bf": {**c["modalities"]["bf"],
                                                             "channels": 1}}},
    lambda c: {**c, "comir_channels": 2},
], ids=["wider", "deeper", "input channels", "CoMIR channels"])
def test_weights_that_do_not_fit_the_card(saved, change):
    card_path, _, card = saved
    _write_card(card_path, change(card))
    with pytest.raises(ModelFileError, match="weights do not fit the card's architecture"):
        api.load_model(str(card_path))


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_after", ["weights set aside", "new weights", "new card"])
def test_an_interrupted_save_leaves_a_loadable_pair(tmp_path, tiny_model, monkeypatch, crash_after):
    """A save killed at any step leaves the old pair or the new one, never a card with the
    other's weights; file modes follow the umask."""
    import copy
    import os

    import torch

    from napari_comir.core import zoo

    path = tmp_path / "m"
    zoo.save_model(tiny_model, path)
    path = tmp_path / "m.json"
    old_sha = zoo.load_model(path).card.sha256
    changed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    real_write = zoo.write_text_atomic
    if crash_after == "weights set aside":
        real_keep = zoo._keep_as_previous

        def keep(*args):
            real_keep(*args)
            raise _Crash
        monkeypatch.setattr(zoo, "_keep_as_previous", keep)
    elif crash_after == "new weights":
        monkeypatch.setattr(zoo, "write_text_atomic", lambda *a: (_ for _ in ()).throw(_Crash()))
    else:
        def write(*args):
            real_write(*args)
            raise _Crash
        monkeypatch.setattr(zoo, "write_text_atomic", write)
    with pytest.raises(_Crash):
        zoo.save_model(changed, path)
    monkeypatch.undo()
    loaded = zoo.load_model(path)  # whole, whichever pair it is
    expected_new = crash_after == "new card"
    assert (loaded.card.sha256 != old_sha) == expected_new
    zoo.save_model(changed, path)  # the next save cleans up
    assert not (tmp_path / "m.safetensors.previous").exists()
    umask = os.umask(0)
    os.umask(umask)
    for name in ("m.safetensors", "m.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


SAVE_LOOP = r"""
import sys, time, torch
from napari_comir import api
model = api.load_model(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
saves = 0
while time.monotonic() < deadline:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)  # other weights, another SHA-256 on every save
    api.save_model(model, sys.argv[1])
    saves += 1
print(saves)
"""


@pytest.mark.parametrize("writers", [1, 2])
def test_loads_while_other_processes_save_never_fail(tmp_path, tiny_model, writers):
    """A reader never pairs a card with another save's weights (before atomic pairs: 14 of
    1516 loads failed with "SHA-256 does not match"; with two writers saving one name, 8 of
    1227 until saves of one model took turns)."""
    import subprocess
    import sys

    card = api.save_model(tiny_model, tmp_path / "m")
    savers = [subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(card), "6"],
                               stdout=subprocess.PIPE, text=True) for _ in range(writers)]
    loads, failures = 0, []
    while any(saver.poll() is None for saver in savers):
        try:
            api.load_model(str(card))
        except ModelFileError as exc:
            failures.append(str(exc))
        loads += 1
    saves = [int(saver.stdout.read()) for saver in savers]
    assert all(saver.returncode == 0 for saver in savers) and min(saves) >= 10 and loads >= 20
    assert failures == []


@pytest.mark.parametrize("kind", ["weights link to /dev/zero", "weights a FIFO", "card a FIFO"])
def test_model_files_that_are_not_regular_files_are_refused_at_once(saved, capsys, monkeypatch,
                                                                    kind):
    """A weights file linked to /dev/zero was read until memory ran out, a FIFO for ever (also
    in `napari-comir models`): both are refused before a byte is read."""
    import os
    import threading

    card, weights, card_dict = saved
    card_dict.pop("sha256", None)  # no hash to stop the read: the file's kind must
    _write_card(card, card_dict)
    target = card if kind == "card a FIFO" else weights
    target.unlink()
    if kind == "weights link to /dev/zero":
        target.symlink_to("/dev/zero")
    else:
        os.mkfifo(target)
    done = {}
    worker = threading.Thread(target=lambda: done.update(error=_load_error(card)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert "error" in done, "the load hung"
    assert done["error"] != "loaded"
    if kind != "card a FIFO":  # (a card that is not a file is "no model card")
        assert "not a regular file" in done["error"]
    monkeypatch.setenv("NAPARI_COMIR_MODELS_DIR", str(card.parent))
    if kind == "card a FIFO":  # listed as unusable, the listing goes on
        worker = threading.Thread(target=lambda: done.update(status=main(["models"])), daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert done.get("status") == 0, "`models` hung"
        listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("good ")]
        assert len(listed) == 1 and "unusable: good.json: not a regular file" in listed[0], listed


def _load_error(card) -> str:
    try:
        api.load_model(str(card))
    except ModelFileError as exc:
        return str(exc)
    return "loaded"
