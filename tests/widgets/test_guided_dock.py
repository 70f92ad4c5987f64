"""The guided dock walks a registration end to end: images, model, register, review, keep."""

from __future__ import annotations

import json

import pytest

from napari_comir.widgets import _state
from napari_comir.widgets.guided import STEPS, GuidedDock

pytestmark = pytest.mark.gui


def statuses(dock) -> dict:
    return {step: dock._status[step].value for step in STEPS}


def test_guided_dock_on_the_sample_pair(viewer_with_pair, errors, tmp_path):
    viewer = viewer_with_pair
    dock = GuidedDock(viewer)
    viewer.window.add_dock_widget(dock)
    before = statuses(dock)
    assert before["images"].startswith("✓") and before["register"].startswith("press Register")
    assert before["model"] == "✓ test-model 0.1.0" or before["model"].startswith("✓")
    assert [w.label for w in dock if w in dock._status.values()] == [
        "1 · images", "2 · model", "3 · register", "4 · review", "5 · keep", "6 · teach"]
    assert dock.run() is not None and not errors, errors
    after = statuses(dock)
    assert after["register"].startswith("✓") and "agree" in after["review"]
    assert viewer.layers[-1].name == "review: SHG (green)"
    registered = dock.accept()
    assert registered.name == "BF (registered)"
    path = dock.export_transform(tmp_path / "t.json")
    assert "decomposition" in json.loads(path.read_text())

    # The new-tissue loop: fine-tune on the accepted pair, then it is this viewer's model.
    assert dock._teach.enabled and "fine-tune" in statuses(dock)["teach"]
    dock._teach_seconds.value = 5
    job = dock.teach()
    assert job is not None and not job.failed and not errors, errors
    assert _state.state_for(viewer).source == "test-model-SHG"
    assert "now using test-model-SHG" in statuses(dock)["teach"]
    assert dock._model_name.value == "test-model-SHG"
    assert "test-model-SHG" in dock._model_name.choices


def test_guided_dock_on_a_real_pair_with_the_bundled_model(make_napari_viewer, raw_cases, errors):
    case = raw_cases["sa_stroma_pancreas_2000_95"]
    viewer = make_napari_viewer()
    viewer.add_image(case.fixed, name="SHG")
    viewer.add_image(case.moving, name="H&E", rgb=True)
    dock = GuidedDock(viewer)
    dock._model_name.value = "bf-shg"
    assert _state.state_for(viewer).model.card.name == "bf-shg"
    assert statuses(dock)["model"].startswith("✓ bf-shg")
    assert dock.run() is not None and not errors, errors
    assert case.error(dock.result.transform) <= 3.0
    assert statuses(dock)["register"] == "✓ affine, likely right"
