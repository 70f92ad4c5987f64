import pytest

from napari_comir import api
from napari_comir.widgets._state import library, state_for
from napari_comir.widgets.model import ModelWidget

pytestmark = pytest.mark.gui


def test_lists_models_and_shows_card(make_napari_viewer, model_dir):
    viewer = make_napari_viewer()
    widget = ModelWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "test-model" in widget._model_name.choices
    assert widget._model_name.value == "test-model"
    text = widget._card.value
    assert "moving: bf" in text and "fixed: shg" in text and "3 channel" in text


def test_the_card_spans_the_dock(make_napari_viewer, model_dir, user):
    """Beside the label column the card's lines were wrapped at a third of the dock's width."""
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-comir", "CoMIR model")
    user.wait(0.5)
    dock_width = widget.native.width()
    assert widget._card.native.width() > 0.9 * dock_width
    assert widget._model_name.native.width() < 0.9 * dock_width  # the choices keep their labels


def test_load_file_device_and_saved_models_refresh(make_napari_viewer, model_dir, errors):
    viewer = make_napari_viewer()
    widget, current = ModelWidget(viewer), state_for(viewer)
    other = api.new_model("rgb-nir", architecture={"type": "unet", "base_channels": 4, "depth": 2})
    (model_dir.parent / "elsewhere").mkdir()
    path = api.save_model(other, model_dir.parent / "elsewhere" / "aerial")
    assert widget.load(str(path.with_suffix(".safetensors")))
    assert current.source.endswith("aerial.safetensors") and "moving: rgb" in widget._card.value
    assert widget._model_name.value is None  # not the listed model used before (a file's card shows)
    from napari_comir.widgets.guided import GuidedDock

    assert GuidedDock(viewer).model_name.value is None  # nor in the guided dock's picker
    widget._device.value = "cpu"
    assert current.device == "cpu" and errors == []

    api.save_user_model(api.new_model("bf-shg"), "fresh")
    library.models_saved.emit("fresh")
    assert "fresh" in widget._model_name.choices
    widget._model_name.value = "fresh"
    assert current.source == "fresh"


def test_bad_file_is_a_notification_not_a_crash(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget, current = ModelWidget(viewer), state_for(viewer)
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    (tmp_path / "broken.safetensors").write_bytes(b"junk")
    assert not widget.load(str(bad))
    assert errors and "broken.json" in errors[0]
    assert current.source == "test-model"  # the previous model stays current
    assert widget._status.value.startswith("⚠ load failed: ")
    assert widget._status.value.endswith("; still using test-model")  # it said "load failed" only


def test_c4_checkbox_switches_the_current_models_inference(make_napari_viewer, model_dir):
    viewer = make_napari_viewer()
    widget, current = ModelWidget(viewer), state_for(viewer)
    assert widget._c4.value is False and current.model.card.c4_average is False
    widget._c4.value = True
    assert current.model.card.c4_average is True
    widget.load("test-model")  # a freshly loaded model shows its own setting
    assert widget._c4.value is False


def test_each_viewer_has_its_own_model(make_napari_viewer, model_dir):
    """State belongs to a viewer: loading a model in one leaves the other's alone."""
    first, second = make_napari_viewer(), make_napari_viewer()
    ModelWidget(first).load("test-model")
    state_for(second).set(api.new_model("rgb-nir", architecture={"type": "unet", "base_channels": 4,
                                                                 "depth": 2}))
    assert state_for(first).model.card.name == "test-model"
    assert state_for(second).model.card.name == "rgb-nir"


def test_the_card_says_how_the_model_was_checked_and_trained_before_the_details():
    """The card was its JSON record: 1300 px of it in a 260 px box, the validation at the end."""
    from napari_comir import api
    from napari_comir.widgets.model import _checked_lines, _trained_lines, card_text

    summary, details = card_text(api.load_model("bf-shg", "cpu")).split("\ndetails\n")
    assert "checked on held-out pairs: ±30° 100 % (median 0.366 px)" in summary
    assert "trained: 16 pair(s), 969 steps, 4 min; from scratch" in summary
    assert "verdict: likely right from score 0.15 and detail score 1.7" in summary
    assert "validation metrics" in details
    # a user's card may hold anything in its records: what is not numbers is left to the details
    assert _checked_lines({"val_registration": [1], "checks": "x"}) == []
    assert _trained_lines({"minutes": "four", "steps": 5}) == ["trained: 5 steps"]
    # fine-tuned: the checks of the model it started from are not shown as its own
    tuned = api.load_model("bf-shg", "cpu")
    api.record_fine_tuning(tuned, "bf-shg", {"pairs": ["a", "b", "c"], "steps": 46})
    summary = card_text(tuned).split("\ndetails\n")[0]
    assert "Fine-tuned from bf-shg on 3 pair(s), 46 steps" in summary
    assert "checked on held-out pairs" not in summary and "checked: not on pairs held out" in summary
    assert "trained: 3 pair(s), 46 steps; from bf-shg" in summary
