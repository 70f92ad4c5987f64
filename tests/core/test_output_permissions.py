"""Outputs get a new file's or folder's usual permissions (the umask applied) without the writer
ever setting the process's umask: reading it that way (set, then restore) gives any other thread
creating a file in between umask 0, world-writable files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from napari_comir.core.io.files import atomic_path, staging_directory


@pytest.fixture
def umask_untouched(monkeypatch):
    """A umask unlike the usual 022 (so permissions from a guess would show), and os.umask
    refused while it is in force."""
    previous = os.umask(0o027)

    def refuse(_mask):
        raise AssertionError("os.umask called while writing an output")

    monkeypatch.setattr(os, "umask", refuse)
    yield 0o027
    monkeypatch.undo()
    os.umask(previous)


def test_an_atomic_file_gets_the_umasks_permissions(tmp_path, umask_untouched):
    target = tmp_path / "result.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask_untouched
    assert [entry.name for entry in tmp_path.iterdir()] == ["result.json"]


def test_a_staging_folder_gets_the_umasks_permissions(tmp_path, umask_untouched):
    staging = staging_directory(tmp_path / "field.ngff.zarr")
    assert staging.parent == tmp_path and staging.name.startswith(".field.ngff.zarr.")
    assert stat.S_IMODE(staging.stat().st_mode) == 0o777 & ~umask_untouched


def test_a_saved_model_gets_the_umasks_permissions(tmp_path, tiny_model, umask_untouched):
    from napari_comir.core import zoo

    zoo.save_model(tiny_model, tmp_path / "m")
    for name in ("m.safetensors", "m.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask_untouched
    assert np.isfinite(next(zoo.load_model(tmp_path / "m.json").parameters()).detach().numpy()).all()
