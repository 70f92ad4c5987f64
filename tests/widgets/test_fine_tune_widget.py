import re
import time

import numpy as np
import pytest

from napari_comir import api
from napari_comir.core.inference import compute_comir
from napari_comir.widgets.fine_tune import PREVIEW_LAYER, FineTuneWidget
from napari_comir.widgets.model import ModelWidget

pytestmark = pytest.mark.gui


def _widget(viewer):
    widget = FineTuneWidget(viewer)
    widget._moving.value, widget._fixed.value = viewer.layers["BF"], viewer.layers["SHG"]
    widget.add_pair()
    widget._steps.value, widget._patch.value, widget._batch.value = 50, 32, 2
    return widget


def test_stop_early_gives_a_usable_model_that_can_be_saved(viewer_with_pair, pair, errors, user):
    viewer = viewer_with_pair
    model_widget = ModelWidget(viewer)
    widget = _widget(viewer)
    widget._preview_every.value = 2
    user.click(widget._start)
    user.wait_until(lambda: len(widget.loss_plot.values) >= 3)
    # the measured rate and the time left (steps/s when a step takes < 0.1 s)
    assert re.search(r"(s/step|steps/s) · \d+ s left", widget._status.value), widget._status.value
    clicked = time.perf_counter()
    user.click(widget._stop)
    user.wait_until(lambda: not widget.job.running, 10)
    assert time.perf_counter() - clicked < 2.0  # Stop ends within 2 s
    job = widget.job
    assert job.stopped and not job.failed, errors
    steps = len(widget.loss_plot.values)
    assert 3 <= steps < 50 and f"stopped at step {steps}" in widget._status.value
    assert PREVIEW_LAYER in viewer.layers
    preview = viewer.layers[PREVIEW_LAYER]  # beside the inputs: in sight, over none of them
    assert preview.visible and viewer.layers.index(preview) == len(viewer.layers) - 1
    inputs_right = max(layer.extent.world[1][-1] for layer in viewer.layers if layer is not preview)
    assert preview.extent.world[0][-1] > inputs_right
    assert not widget.model.training
    comir = compute_comir(widget.model, pair[0], "bf")
    assert comir.shape == (96, 96, 1) and np.isfinite(comir).all()
    user.watch.check()

    user.click(widget._save)
    assert "my-bf-shg" in api.list_models()
    assert "my-bf-shg" in model_widget._model_name.choices
    card = api.load_model("my-bf-shg", "cpu").card
    assert card.training["steps"] == steps and card.training["started_from"] == "test-model"
    # Its card says what it is, not the checks of the model it started from as its own.
    assert card.description.startswith(f"Fine-tuned from test-model on 1 pair(s), {steps} steps")
    model_widget._model_name.value = "my-bf-shg"
    shown = model_widget._card.value.split("\ndetails")[0]
    assert "checked on held-out pairs" not in shown
    assert f"trained: 1 pair(s), {steps} steps; from test-model" in shown


def test_pairs_from_csv_and_errors(viewer_with_pair, pair, tmp_path, errors, user):
    from napari_comir.core.io import write_tiff

    write_tiff(tmp_path / "a_bf.tif", pair[0])
    write_tiff(tmp_path / "a_shg.tif", pair[1])
    (tmp_path / "pairs.csv").write_text("name,bf_file,shg_file\na,a_bf.tif,a_shg.tif\n")
    widget = FineTuneWidget(viewer_with_pair)
    assert widget.start() is None and errors  # no pairs yet
    widget.add_pairs_csv(tmp_path / "pairs.csv")
    assert [entry.label for entry in widget.pairs] == ["csv: a"]
    widget._steps.value, widget._patch.value, widget._batch.value = 2, 32, 2
    user.click(widget._start)
    user.wait_until(lambda: widget.job is not None and not widget.job.running)
    assert not widget.job.failed and len(widget.loss_plot.values) == 2
    assert "done" in widget._status.value
    widget._pairs_list.value = [0]
    widget._remove_selected()
    assert widget.pairs == []


def test_a_loss_that_rose_or_unmatched_patches_are_said_to_question_the_pairs():
    """An unaligned pair in the dock: its loss rose from 2.1 to 2.5 in 20 steps and the model
    was saved and offered without a word; so was one whose loss fell while its held-out patches
    matched 0 % (a raw H&E 39 px off its SHG; aligned, 72 %)."""
    from napari_comir.widgets.fine_tune import _unaligned_warning

    rising = list(np.linspace(2.1, 2.5, 20))
    assert _unaligned_warning(rising, None).startswith("\n⚠ the loss rose (2.14 -> 2.46)")
    assert _unaligned_warning(rising[::-1], None) == ""  # falling: fine
    assert _unaligned_warning([2.0] * 20, None) == ""  # flat within noise: fine
    assert _unaligned_warning(rising[:5], None) == ""  # too few steps to tell
    falling = rising[::-1]
    assert _unaligned_warning(falling, 0.0).startswith(
        "\n⚠ held-out patches matched only 0% (chance 3 %): are the pairs aligned?")
    assert _unaligned_warning(falling, 0.72) == ""
    # Held-out patches matched decide when measured: an aligned model's loss swings by orders of
    # magnitude from step to step (its mean "rose" 5x while held-out matches went 69 -> 84 %).
    assert _unaligned_warning(rising, 0.84) == ""
    assert _unaligned_warning(falling, 0.05).startswith("\n⚠ held-out patches matched only 5%")


def test_loss_plot_reads_a_loss_that_falls_by_orders_of_magnitude():
    """InfoNCE on one pair falls to ~1e-6: on a log scale the fall stays visible, and the
    label shows significant digits, not "0.000"."""
    from napari_comir.widgets._loss_plot import log_scale

    assert log_scale([1.0, 1e-3, 1e-6, 0.0]) == [0.0, -3.0, -6.0, -8.0]


def test_pickers_start_on_the_pair(viewer_with_pair):
    """Moving = the RGB bright field, fixed = the grey SHG, without choosing anything."""
    widget = FineTuneWidget(viewer_with_pair)
    assert (widget._moving.value.name, widget._fixed.value.name) == ("BF", "SHG")
