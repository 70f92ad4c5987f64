import pytest

from napari_comir.demo import WIDGETS, setup_demo_viewer


@pytest.mark.gui
def test_demo_opens_sample_pair_with_widgets_docked(make_napari_viewer):
    viewer = make_napari_viewer()
    setup_demo_viewer(viewer)
    assert {"SHG (sample)", "BF (sample, misaligned)"} <= {layer.name for layer in viewer.layers}
    docked = " ".join(viewer.window.dock_widgets)
    assert all(name in docked for name in WIDGETS)
