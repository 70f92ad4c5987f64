import time

import numpy as np
import pytest

from napari_comir.widgets._layers import grid as _grid
from napari_comir.widgets.inspect import AGREEMENT_LAYER, InspectWidget
from napari_comir.widgets.representations import RepresentationsWidget

pytestmark = pytest.mark.gui


def test_views_agreement_and_equivariance(viewer_with_pair, errors, user):
    viewer = viewer_with_pair
    representations = RepresentationsWidget(viewer)
    user.click(representations._run)
    user.wait_until(lambda: not representations.job.running)
    widget = InspectWidget(viewer)
    assert widget._fixed.value.name == "CoMIR (SHG)"
    assert widget._moving.value.name == "CoMIR (BF)"
    widget.side_by_side()
    assert _grid(viewer).enabled and not viewer.layers["BF"].visible
    widget.overlay()
    assert not _grid(viewer).enabled and viewer.layers["CoMIR (BF)"].colormap.name == "green"

    user.click(widget._agree)  # in a worker: a 2048 px map froze the window for 2 s
    user.wait_until(lambda: not widget.job.running)
    assert -1.0 <= widget.agreement <= 1.0
    agreement = viewer.layers[AGREEMENT_LAYER]
    assert agreement.data.shape == (96, 96) and agreement.colorbar.visible
    # the CoMIRs' padded border is not compared (a band of "disagree" framed every map)
    assert np.isnan(agreement.data[:8]).all() and np.isnan(agreement.data[:, -8:]).all()
    assert "overlap on" not in widget._agree_label.value

    twin = viewer.add_image(viewer.layers["CoMIR (SHG)"].data, name="twin")
    widget._moving.value = twin  # a CoMIR agrees with itself
    user.click(widget._agree)
    user.wait_until(lambda: not widget.job.running)
    assert widget.agreement == pytest.approx(1.0, abs=1e-3)
    corner = viewer.add_image(viewer.layers["CoMIR (SHG)"].data[:30, :30], name="corner",
                              translate=(70, 70))  # of another grid: a corner overlaps
    widget._moving.value = corner
    user.click(widget._agree)
    user.wait_until(lambda: not widget.job.running)
    assert "⚠ the CoMIRs overlap on" in widget._agree_label.value

    widget._image.value, widget._modality.value = viewer.layers["SHG"], "shg"
    widget._angle.value = 90
    user.click(widget._check)
    assert not widget._check.enabled and not widget._agree.enabled  # one job at a time
    user.wait_until(lambda: not widget.job.running)
    assert widget.job.state.value == "finished", errors
    assert -1.0 <= widget.equivariance <= 1.0
    assert widget._equi_label.value.startswith("'SHG' (shg) turned 90°: r = ")
    assert widget._check.enabled and not widget._stop.enabled
    # Its maps are the plugin's: neither an image to register nor a layer to carry with a result
    # (both were offered)
    from napari_comir.widgets._layers import raw_images
    from napari_comir.widgets.inspect import EQUIVARIANCE_LAYER
    from napari_comir.widgets.session import session_for

    maps = {viewer.layers[AGREEMENT_LAYER], viewer.layers[EQUIVARIANCE_LAYER]}
    assert not maps & set(raw_images(viewer)) and not maps & set(session_for(viewer).apply_targets())


def test_defaults_pick_two_layers_and_the_modality_of_the_image(make_napari_viewer, pair):
    """Only one CoMIR shown: fixed takes it and moving stays empty rather than the same layer;
    the equivariance check's modality follows the chosen image (RGB -> bf)."""
    viewer = make_napari_viewer()
    bf, shg = pair
    viewer.add_image(shg, name="SHG")
    viewer.add_image(shg, name="CoMIR (SHG)", metadata={"comir_modality": "shg", "comir_source": "SHG"})
    viewer.add_image(bf, name="BF", rgb=True)
    widget = InspectWidget(viewer)
    assert widget._fixed.value.name == "CoMIR (SHG)" and widget._moving.value is None
    widget._image.value = viewer.layers["BF"]
    assert widget._modality.value == "bf"
    widget._image.value = viewer.layers["SHG"]
    assert widget._modality.value == "shg"


def test_a_comir_of_the_other_modality_is_not_taken_as_fixed(make_napari_viewer, pair):
    """Only the bright field's CoMIR shown yet: it went into "fixed CoMIR" (the SHG's role), and
    the SHG's, computed next, into "moving"."""
    viewer = make_napari_viewer()
    bf, shg = pair
    viewer.add_image(bf, name="CoMIR (BF)", rgb=True, metadata={"comir_modality": "bf",
                                                                 "comir_source": "BF"})
    widget = InspectWidget(viewer)
    assert widget._fixed.value is None and widget._moving.value.name == "CoMIR (BF)"
    viewer.add_image(shg, name="CoMIR (SHG)", metadata={"comir_modality": "shg", "comir_source": "SHG"})
    assert widget._fixed.value.name == "CoMIR (SHG)" and widget._moving.value.name == "CoMIR (BF)"


def test_an_agreement_map_left_shown_goes_under_a_new_review(viewer_with_pair, user):
    """Inspect's agreement map of the unregistered CoMIRs, left visible, showed as bands around
    the next registration's review."""
    from napari_comir.core.registration import RegistrationResult
    from napari_comir.core.transforms import AffineTransform
    from napari_comir.widgets import _review
    from napari_comir.widgets.session import session_for

    viewer = viewer_with_pair
    representations = RepresentationsWidget(viewer)
    user.click(representations._run)
    user.wait_until(lambda: not representations.job.running)
    inspect = InspectWidget(viewer)
    user.click(inspect._agree)
    user.wait_until(lambda: not inspect.job.running)
    assert viewer.layers[AGREEMENT_LAYER].visible
    session = session_for(viewer)
    fixed, moving = viewer.layers["SHG"], viewer.layers["BF"]
    result = RegistrationResult(AffineTransform.rigid(), 0.9, 0.1, "search", {}, True)
    session.show_result(result, fixed, moving, _review.review_images(fixed, moving))
    user.wait_until(lambda: session.result is result and not session.busy)
    assert not viewer.layers[AGREEMENT_LAYER].visible
    # Shown again by Inspect's overlay, then Accept: the accepted layer went in just above the
    # fixed image, under them (additive: a white wash over it)
    InspectWidget(viewer).overlay()
    assert viewer.layers["CoMIR (BF)"].visible and viewer.layers["CoMIR (SHG)"].visible
    session.accept()
    user.wait_until(lambda: session.accepted is not None and not session.busy)
    assert not any(viewer.layers[name].visible for name in ("CoMIR (BF)", "CoMIR (SHG)", AGREEMENT_LAYER))


def test_the_equivariance_check_stops(viewer_with_pair, errors, user, monkeypatch):
    """A 2048 px check ran 36 s with no Stop, and a second click started a second job."""
    from napari_comir.core import evaluation

    tiles = evaluation.comir_tiles

    def slow_tiles(*args, **kwargs):  # tiles as slow as a large image's
        for event in tiles(*args, **kwargs):
            time.sleep(0.3)
            yield event

    monkeypatch.setattr(evaluation, "comir_tiles", slow_tiles)
    widget = InspectWidget(viewer_with_pair)
    user.click(widget._check)
    user.wait_until(lambda: widget.job.steps > 0, 10)
    user.click(widget._stop)
    user.wait_until(lambda: not widget.job.running, 10)
    assert widget.job.stopped and widget._equi_label.value == "stopped", errors
    assert widget._check.enabled and widget.equivariance is None
