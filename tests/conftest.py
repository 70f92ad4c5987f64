"""Shared fixtures: small real data from ../shared (skipped when absent) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BF_SHG = SHARED / "bf_shg"


@pytest.fixture(scope="session")
def bf_shg_dir() -> Path:
    if not (BF_SHG / "pairs.csv").is_file():
        pytest.skip("../shared/data/bf_shg is not beside the checkout")
    return BF_SHG


@pytest.fixture(scope="session")
def real_pair(bf_shg_dir):
    """One real aligned train pair (BF RGB uint8, SHG grey uint8), 512 x 512."""
    from napari_comir.core.io import read_image

    return read_image(bf_shg_dir / "X02Y08_BF.tif"), read_image(bf_shg_dir / "X02Y08_SHG.tif")


@pytest.fixture
def tiny_model():
    """An untrained bf-shg model small enough for fast tests."""
    import torch

    from napari_comir.api import new_model

    torch.manual_seed(0)  # weight initialisation
    return new_model("bf-shg", architecture={"type": "unet", "base_channels": 4, "depth": 3})


@pytest.fixture(autouse=True)
def _user_models_dir(tmp_path, monkeypatch):
    """Never write into the real per-user model folder from tests."""
    monkeypatch.setenv("NAPARI_COMIR_MODELS_DIR", str(tmp_path / "user-models"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def raw_cases():
    """The 20 real cases of ../shared/data/bf_shg_raw (H&E as scanned vs its SHG)."""
    folder = SHARED / "bf_shg_raw"
    if not (folder / "pairs.csv").is_file():
        pytest.skip("../shared/data/bf_shg_raw is not beside the checkout")
    from napari_comir.core.evaluation import raw_cases as read_cases

    return {case.name: case for case in read_cases(folder)}
