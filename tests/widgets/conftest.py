"""Fixtures of the widget tests: synchronous jobs, a tiny saved model, small BF/SHG images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_comir import api
from napari_comir.widgets import _state, _worker

SIZE = 96


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    """Run every widget job inline so tests are deterministic (no threads, no waiting)."""
    monkeypatch.setattr(_worker, "SYNCHRONOUS", True)


@pytest.fixture(autouse=True)
def model_dir(tmp_path, monkeypatch):
    """A user-models folder holding one tiny untrained model "test-model", which every new
    viewer's state loads."""
    monkeypatch.setenv("NAPARI_COMIR_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("NAPARI_COMIR_SETTINGS", str(tmp_path / "settings.json"))
    import torch

    torch.manual_seed(0)
    api.save_user_model(api.new_model("bf-shg", architecture={"type": "unet", "base_channels": 4,
                                                              "depth": 2}), "test-model")
    monkeypatch.setattr(_state, "DEFAULT_MODEL_NAME", "test-model")  # what a new viewer loads
    monkeypatch.setattr(_state, "_STATES", {})
    yield tmp_path / "models"
    _state.library.models_saved.disconnect()


def _pair(shape=(SIZE, SIZE), seed=0):
    try:
        from napari_comir.core.synthetic import synthetic_pair

        return synthetic_pair(shape, seed)
    except ImportError:  # sample data not landed yet: blobs, stained in BF, bright in SHG
        rng = np.random.default_rng(seed)
        fibres = ndimage.gaussian_filter(rng.random(shape), 3)
        fibres = (fibres - fibres.min()) / np.ptp(fibres)
        shg = (255 * fibres**3).astype(np.uint8)
        bf = np.stack([255 - 120 * fibres, 255 - 200 * fibres, 255 - 90 * fibres], -1)
        return bf.astype(np.uint8), shg


@pytest.fixture
def pair():
    """(bf uint8 HxWx3, shg uint8 HxW), aligned."""
    return _pair()


@pytest.fixture
def viewer_with_pair(make_napari_viewer, pair):
    viewer = make_napari_viewer()
    bf, shg = pair
    viewer.add_image(bf, name="BF", rgb=True)
    viewer.add_image(shg, name="SHG")
    return viewer


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to napari's show_error by any widget module (instead of notifications)."""
    messages = []
    import napari_comir.widgets as package

    for name in ("_worker", "model", "representations", "register", "fine_tune", "inspect"):
        module = __import__(f"{package.__name__}.{name}", fromlist=["show_error"])
        monkeypatch.setattr(module, "show_error", messages.append)
    return messages
