"""Screenshots of every napari-comir dock widget in a meaningful state, for the user guide.

Run under a display (``xvfb-run -a python docs/screenshots.py``); writes docs/images/*.png.
Every job runs as a person runs it: the script clicks the buttons, the work runs in its worker
thread, and the picture is taken once the result shows (the event loop running meanwhile).
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

from napari_comir import _sample_data, api  # noqa: E402
from napari_comir.demo import settle  # noqa: E402
from napari_comir.widgets import fine_tune  # noqa: E402
from napari_comir.widgets._landmarks import landmark_names  # noqa: E402
from napari_comir.widgets.fine_tune import FineTuneWidget  # noqa: E402
from napari_comir.widgets.inspect import InspectWidget  # noqa: E402
from napari_comir.widgets.model import ModelWidget  # noqa: E402
from napari_comir.widgets.register import RegisterWidget  # noqa: E402
from napari_comir.widgets.representations import RepresentationsWidget  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
WIDTH = 1000  # px of the saved PNGs: readable, small files


def shot(viewer, name: str):
    settle()
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


def wait_until(condition, timeout_s: float = 300.0) -> None:
    """Run the event loop until ``condition()`` holds (a job ended, a result shows)."""
    import time

    end = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the job did not end in time")
        settle(0.05)


def click(button) -> None:
    """Click a magicgui PushButton as a person does."""
    from qtpy.QtTest import QTest

    QTest.mouseClick(button.native, Qt.MouseButton.LeftButton)


def add_layers(viewer, layer_data):
    for data, kwargs, _kind in layer_data:
        viewer.add_image(data, **kwargs)


def dock(viewer, widget, title):
    return viewer.window.add_dock_widget(widget, name=title, area="right")


def main():
    IMAGES.mkdir(exist_ok=True)
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
    click(tune._start)
    viewer.layers["SHG (sample)"].visible = False
    wait_until(lambda: len(tune.loss_plot.values) >= 45)
    shot(viewer, "fine_tune")  # while it trains: the live curve, s/step and time left
    wait_until(lambda: not tune.job.running)
    click(tune._save)
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
    click(reps._run)
    wait_until(lambda: not reps.job.running)
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    shot(viewer, "representations")
    viewer.canvas.grid.enabled = False
    viewer.window.remove_dock_widget(dock_reps)
    viewer.reset_view()

    # Registration: overlay (fixed magenta, moving green), then the checkerboard.
    register = RegisterWidget(viewer)
    dock_register = dock(viewer, register, "Register (CoMIR)")
    click(register.run_panel.register_button)
    wait_until(lambda: register.session.result is not None and not register.session.busy)
    shot(viewer, "register")  # the default review overlay, nothing hidden
    register.review_panel.view.value = "checkerboard"
    shot(viewer, "register_checkerboard")
    register.review_panel.view.value = "overlay"
    viewer.window.remove_dock_widget(dock_register)

    # Inspect: agreement map of the registered CoMIRs and the equivariance check.
    inspect = InspectWidget(viewer)
    dock(viewer, inspect, "Inspect CoMIRs")
    inspect._fixed.value = viewer.layers["CoMIR (SHG (sample))"]
    inspect._moving.value = viewer.layers["CoMIR (BF (sample, misaligned))"]
    click(inspect._agree)
    inspect._image.value = viewer.layers["SHG (sample)"]
    inspect._modality.value = "shg"
    click(inspect._check)
    wait_until(lambda: not inspect.job.running)
    for layer in viewer.layers:
        layer.visible = layer.name.startswith("CoMIR agreement")
    shot(viewer, "inspect")
    viewer.close()
    guided_on_a_real_pair()
    guided_on_a_wrong_pair()
    guided_on_serial_sections()
    guided_on_whole_slides()
    return 0


RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "bf_shg_raw"


def raw_case(name: str):
    """A real case of ../shared beside the checkout (None without it)."""
    from napari_comir.core.evaluation import raw_cases

    if not (RAW / "pairs.csv").is_file():
        print("skipped a real-pair picture: no", RAW)
        return None
    return {c.name: c for c in raw_cases(RAW)}[name]


def guided_on_a_real_pair(name: str = "sa_stroma_pancreas_2000_95"):
    """The guided dock at 1280 x 800 on a real case: the H&E as scanned against its SHG,
    registered with the bundled model, then kept (Accept)."""
    case = raw_case(name)
    if case is None:
        return

    def add(viewer):
        viewer.add_image(case.fixed, name=f"{name} SHG")
        viewer.add_image(case.moving, name=f"{name} H&E (as scanned)", rgb=True)

    guided_shot(add, "guided_real_pair", accept_as="guided_accepted")


def guided_on_a_wrong_pair(fixed_name: str = "X02Y08", moving_name: str = "1B_B7"):
    """The verdict on screen: one case's SHG against another case's H&E (nothing to find)."""
    fixed, moving = raw_case(fixed_name), raw_case(moving_name)
    if fixed is None:
        return

    def add(viewer):
        viewer.add_image(fixed.fixed, name=f"{fixed_name} SHG")
        viewer.add_image(moving.moving, name=f"{moving_name} H&E (another core)", rgb=True)

    guided_shot(add, "guided_wrong_pair")


def guided_shot(add_pair, name: str, accept_as: str | None = None, model: str = "bf-shg",
                transform: str | None = None, then=None):
    """A 1280 x 800 viewer with the pair ``add_pair(viewer)`` adds, the guided dock (opened as
    the menu opens it) registering it with ``model`` (and ``transform``) when Register is
    clicked, saved as ``name``; ``then(viewer, guided)`` runs next; with ``accept_as``, Accept
    clicked too and that picture saved."""
    viewer = napari.Viewer(title="napari-comir")
    viewer.window._qt_window.resize(1280, 800)
    add_pair(viewer)
    _, guided = viewer.window.add_plugin_dock_widget("napari-comir", "CoMIR registration")
    guided.model_name.value = model
    if transform is not None:
        guided.run_panel.transform.value = transform
    session = guided.session
    click(guided.run_panel.register_button)
    wait_until(lambda: session.result is not None and not session.busy)
    viewer.reset_view()
    shot(viewer, name)
    if then is not None:
        then(viewer, guided)
    if accept_as:
        guided.keep_panel.output_path = Path(tempfile.mkdtemp()) / "registered.ome.tif"
        click(guided.keep_panel.accept_button)
        wait_until(lambda: session.accepted is not None and not session.busy)
        shot(viewer, accept_as)
    viewer.close()


HE_IHC = Path(__file__).resolve().parents[2] / "shared" / "data" / "he_ihc"


def guided_on_serial_sections(stain: str = "CD31-3"):
    """The guided dock on H&E against an IHC serial section (both bright field) with the bundled
    he-ihc model and the deformable transform; then the deformation view, and landmarks placed in
    turn on the next pair (``../shared`` beside the checkout, else skipped)."""
    from napari_comir.core.io.landmarks import read_landmarks

    if not (HE_IHC / "pairs.csv").is_file():
        print("skipped the serial-section pictures: no", HE_IHC)
        return
    he, ihc = (HE_IHC / "images" / f"lung-lesion_3_{name}-les3.jpg" for name in ("He", stain))

    def add(viewer):
        viewer.open(str(he))
        viewer.open(str(ihc))

    def deformation_then_landmarks(viewer, guided):
        if "deformation" in guided.review_panel.view.choices:
            guided.review_panel.view.value = "deformation"
            shot(viewer, "guided_deformation")
        click(guided.landmarks_panel.add_button)
        points = [read_landmarks(HE_IHC / "landmarks" / f"lung-lesion_3_{name}-les3.csv")[:3]
                  for name in ("He", stain)]
        pair = guided.run_panel.fixed.value, guided.run_panel.moving.value
        layers = [viewer.layers[name] for name in landmark_names(*pair)]
        for number in range(3):  # as clicks in "add" mode place them: fixed, then moving
            layers[0].add(points[0][number, ::-1])
            if number < 2:
                layers[1].add(points[1][number, ::-1])
        viewer.reset_view()
        shot(viewer, "guided_landmarks")

    guided_shot(add, "guided_serial_sections", model="he-ihc", transform="deformable",
                then=deformation_then_landmarks)


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

    guided_shot(add, "guided_whole_slide", accept_as="guided_whole_slide_accepted")


if __name__ == "__main__":
    sys.exit(main())
