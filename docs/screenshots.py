"""Screenshots of every napari-comir dock widget in a meaningful state, for the user guide.

Run under a display (``xvfb-run -a python docs/screenshots.py``); writes docs/images/*.png.
It fine-tunes the bundled model on the synthetic aligned sample (~1 min on CPU), then registers
the misaligned sample with the bundled model, so the pictures show real results. Models are saved to a
temporary folder, never to your user models folder; the widgets start from their defaults, not
from your saved settings.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["NAPARI_COMIR_MODELS_DIR"] = tempfile.mkdtemp(prefix="napari-comir-models-")
# the defaults, not whatever this machine's napari-comir last saved (e.g. a rigid transform)
os.environ["NAPARI_COMIR_SETTINGS"] = os.path.join(tempfile.mkdtemp(prefix="napari-comir-"), "settings.json")

import napari  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

from napari_comir import _sample_data, api  # noqa: E402
from napari_comir.widgets import _worker, fine_tune  # noqa: E402
from napari_comir.widgets.fine_tune import FineTuneWidget  # noqa: E402
from napari_comir.widgets.inspect import InspectWidget  # noqa: E402
from napari_comir.widgets.model import ModelWidget  # noqa: E402
from napari_comir.widgets.register import RegisterWidget  # noqa: E402
from napari_comir.widgets.representations import RepresentationsWidget  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
WIDTH = 1000  # px of the saved PNGs: readable, small files


def settle(viewer, seconds: float = 0.3):
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    QApplication.processEvents()


def shot(viewer, name: str):
    settle(viewer)
    path = IMAGES / f"{name}.png"
    pixmap = viewer.window._qt_window.grab()
    pixmap.scaledToWidth(WIDTH, Qt.TransformationMode.SmoothTransformation).save(str(path))
    try:  # a 256-colour palette keeps the PNGs a few hundred kB at most
        from PIL import Image

        Image.open(path).convert("RGB").quantize(128, dither=Image.Dither.NONE).save(
            path, optimize=True)
    except ImportError:
        pass
    print("wrote", path, f"{path.stat().st_size // 1024} kB")


def add_layers(viewer, layer_data):
    for data, kwargs, _kind in layer_data:
        viewer.add_image(data, **kwargs)


def dock(viewer, widget, title):
    return viewer.window.add_dock_widget(widget, name=title, area="right")


def main():
    IMAGES.mkdir(exist_ok=True)
    _worker.SYNCHRONOUS = True  # a script: run jobs inline, in order
    fine_tune.show_info = print  # no "saved" toast over the later pictures
    if "bf-shg" not in api.list_models():
        api.save_user_model(api.new_model("bf-shg"), "bf-shg-untrained")
    viewer = napari.Viewer(title="napari-comir")
    viewer.window._qt_window.resize(1500, 950)

    # Fine-tune on the aligned sample, with the live loss curve and a CoMIR preview.
    add_layers(viewer, _sample_data.sample_pair())
    tune = FineTuneWidget(viewer)
    tune._moving.value = viewer.layers["BF (sample)"]
    tune._fixed.value = viewer.layers["SHG (sample)"]
    tune.add_pair()
    tune._steps.value, tune._patch.value, tune._batch.value, tune._lr.value = 60, 128, 16, 3e-4
    tune._preview_every.value = 20
    tune._name.value = "bf-shg-demo"
    dock_tune = dock(viewer, tune, "Fine-tune CoMIR")
    tune.start()
    viewer.layers["SHG (sample)"].visible = False
    shot(viewer, "fine_tune")
    tune.save("bf-shg-demo")
    viewer.window.remove_dock_widget(dock_tune)
    viewer.layers.clear()

    # The model widget with the bundled model chosen (its card holds the validation metrics).
    add_layers(viewer, _sample_data.sample_pair_misaligned())
    model = ModelWidget(viewer)
    dock_model = dock(viewer, model, "CoMIR model")
    model._model_name.value = "bf-shg" if "bf-shg" in api.list_models() else "bf-shg-demo"
    shot(viewer, "model")
    viewer.window.remove_dock_widget(dock_model)

    # CoMIRs of both images (side by side so the shared representation is visible).
    reps = RepresentationsWidget(viewer)
    dock_reps = dock(viewer, reps, "CoMIR representations")
    reps.run()
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    shot(viewer, "representations")
    viewer.canvas.grid.enabled = False
    viewer.window.remove_dock_widget(dock_reps)
    viewer.reset_view()

    # Registration: overlay (fixed magenta, moving green), then the checkerboard.
    register = RegisterWidget(viewer)
    dock_register = dock(viewer, register, "Register (CoMIR)")
    register.run()
    shot(viewer, "register")  # the default review overlay, nothing hidden
    register._square.value = 64
    register._checker.value = True
    shot(viewer, "register_checkerboard")
    register._checker.value = False
    viewer.window.remove_dock_widget(dock_register)

    # Inspect: agreement map of the registered CoMIRs and the equivariance check.
    inspect = InspectWidget(viewer)
    dock(viewer, inspect, "Inspect CoMIRs")
    inspect._fixed.value = viewer.layers["CoMIR (SHG (sample))"]
    inspect._moving.value = viewer.layers["CoMIR (BF (sample, misaligned))"]
    inspect.agreement_map()
    inspect._image.value = viewer.layers["SHG (sample)"]
    inspect._modality.value = "shg"
    inspect.check_equivariance()
    for layer in viewer.layers:
        layer.visible = layer.name.startswith("CoMIR agreement")
    shot(viewer, "inspect")
    viewer.close()
    guided_on_a_real_pair()
    guided_on_whole_slides()
    return 0


def guided_on_a_real_pair(name: str = "sa_stroma_pancreas_2000_95"):
    """The guided dock at 1280 x 800 on a real case: the H&E as scanned against its SHG (from
    ../shared beside the checkout; skipped without it), registered with the bundled model."""
    from napari_comir.core.evaluation import raw_cases

    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg_raw"
    if not (folder / "pairs.csv").is_file():
        print("skipped the real-pair picture: no", folder)
        return
    case = {c.name: c for c in raw_cases(folder)}[name]

    def add(viewer):
        viewer.add_image(case.fixed, name=f"{name} SHG")
        viewer.add_image(case.moving, name=f"{name} H&E (as scanned)", rgb=True)

    guided_shot(add, "guided_real_pair")


def guided_shot(add_pair, name: str):
    """A 1280 x 800 viewer with the pair ``add_pair(viewer)`` adds, the guided dock registering
    it with the bundled model, saved as ``name``."""
    from napari_comir.widgets._state import state_for
    from napari_comir.widgets.guided import GuidedDock

    viewer = napari.Viewer(title="napari-comir")
    viewer.window._qt_window.resize(1280, 800)
    add_pair(viewer)
    state_for(viewer).load("bf-shg")
    guided = GuidedDock(viewer)
    dock(viewer, guided, "CoMIR registration")
    guided.run()
    viewer.reset_view()
    shot(viewer, name)
    viewer.close()


def guided_on_whole_slides(size: int = 6000):
    """The guided dock at 1280 x 800 on a pyramidal pair made by benchmarks/whole_slide.py (tiles
    of the shared aligned pairs, the H&E warped by a known similarity), opened by the plugin's
    reader as multiscale layers and registered coarse to fine; skipped without ../shared."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import whole_slide

    if not whole_slide.DATA.is_dir():
        print("skipped the whole-slide picture: no", whole_slide.DATA)
        return
    folder = Path(tempfile.mkdtemp(prefix="napari-comir-slides-"))
    whole_slide.make_pair(size, folder)

    def add(viewer):
        viewer.open(str(folder / "fixed.ome.tif"), plugin="napari-comir", name="SHG mosaic")
        viewer.open(str(folder / "moving.ome.tif"), plugin="napari-comir", name="H&E slide")

    guided_shot(add, "guided_whole_slide")


if __name__ == "__main__":
    sys.exit(main())
