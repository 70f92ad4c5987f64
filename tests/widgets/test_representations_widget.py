import numpy as np
import pytest

from napari_comir.widgets.representations import RepresentationsWidget

pytestmark = pytest.mark.gui


def test_computes_both_comirs_and_rerun_updates_in_place(viewer_with_pair, errors, user):
    viewer = viewer_with_pair
    viewer.layers["SHG"].scale = (0.5, 0.5)
    widget = RepresentationsWidget(viewer)
    assert widget._moving.value.name == "BF" and widget._fixed.value.name == "SHG"
    user.click(widget._run)
    assert widget.job.running and not widget._run.enabled  # returned at once: GUI not blocked
    user.wait_until(lambda: not widget.job.running)
    assert widget.job.state.value == "finished" and errors == [] and widget._run.enabled
    bf_comir, shg_comir = viewer.layers["CoMIR (BF)"], viewer.layers["CoMIR (SHG)"]
    assert bf_comir.data.shape == viewer.layers["BF"].data.shape[:2]
    assert tuple(shg_comir.scale) == (0.5, 0.5)
    lo, hi = shg_comir.contrast_limits
    assert hi > lo and shg_comir.metadata["comir_modality"] == "shg"

    n_layers = len(viewer.layers)
    viewer.layers["BF"].data = viewer.layers["BF"].data[::-1].copy()
    user.click(widget._run)
    # not the last run's "CoMIRs of ..." while it computes
    assert widget._status.value == "computing the CoMIRs of BF, SHG…"
    user.wait_until(lambda: not widget.job.running)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["CoMIR (BF)"] is bf_comir  # same layer, new data
    assert np.allclose(bf_comir.metadata["comir"][..., 0], bf_comir.data)


def test_no_layers_is_an_error_message(make_napari_viewer, errors):
    widget = RepresentationsWidget(make_napari_viewer())
    assert widget.run() is None
    assert errors


def test_layer_pickers_follow_the_current_models_modalities(make_napari_viewer, model_dir):
    from napari_comir import api
    from napari_comir.widgets._state import state_for

    viewer = make_napari_viewer()
    widget, current = RepresentationsWidget(viewer), state_for(viewer)
    assert (widget._moving.label, widget._fixed.label) == ("moving (bf)", "fixed (shg)")
    current.set(api.new_model("rgb-nir", architecture={"type": "unet", "base_channels": 4, "depth": 2}))
    assert (widget._moving.label, widget._fixed.label) == ("moving (rgb)", "fixed (nir)")
