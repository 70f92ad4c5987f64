"""Inspect widget: compare two CoMIRs, map their agreement, check rotation equivariance."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FloatSpinBox,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Layer
from napari.utils.notifications import show_error

from ..core.errors import ComirError, InputError
from ..core.evaluation import agreement_map, rotation_equivariance_events
from ..core.progress import Progress
from . import _worker
from ._connections import connect_while_alive
from ._docking import tabify_with_siblings
from ._layers import StatusLine, image_data, layer_choices, pixel_transform, raw_images, upsert_image
from ._layers import grid as _grid
from ._state import state_for

AGREEMENT_LAYER = "CoMIR agreement (local NCC)"
EQUIVARIANCE_LAYER = "CoMIR rotated back (equivariance)"
#: Share of the fixed CoMIR the moving one must cover for the agreement map to be read as a
#: pair's (two CoMIRs of different images or grids overlapped on a corner: "mean 0.04").
MIN_OVERLAP = 0.25


def _comir_array(layer: Layer) -> np.ndarray:
    """(rows, cols, channels) float CoMIR of a layer (raw values kept by Representations)."""
    data = layer.metadata.get("comir")
    data = image_data(layer) if data is None else data
    data = np.asarray(data, dtype=np.float32)
    return data[..., None] if data.ndim == 2 else data


class InspectWidget(Container):
    """Side-by-side / overlay views, an agreement map, and the rotation-equivariance check."""

    def __init__(self, napari_viewer):
        self.state = state_for(napari_viewer)  # this viewer's model
        self.viewer = napari_viewer
        images = layer_choices(napari_viewer, Image)
        self._fixed = ComboBox(label="fixed CoMIR", choices=images, nullable=True)
        self._moving = ComboBox(label="moving CoMIR", choices=images, nullable=True)
        self._side = PushButton(text="Side by side")
        self._overlay = PushButton(text="Overlay")
        self._window = SpinBox(label="window px", min=3, max=255, step=2, value=15)
        self._agree = PushButton(text="Agreement map")
        self._agree_label = StatusLine()
        self._image = ComboBox(label="image", choices=images, nullable=True)
        self._modality = ComboBox(label="modality", choices=self._modalities)
        self._image.changed.connect(self._match_modality)
        self._angle = FloatSpinBox(label="angle °", min=-180, max=180, value=90, step=5)
        self._check = PushButton(text="Check equivariance")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(value=0, max=1)
        self._equi_label = StatusLine()
        super().__init__(widgets=[
            self._fixed, self._moving, self._side, self._overlay, self._window, self._agree,
            self._agree_label, self._image, self._modality, self._angle, self._check, self._stop,
            self._progress, self._equi_label])
        tabify_with_siblings(self, self.viewer, tab_title="Inspect")
        self.agreement: float | None = None
        self.equivariance: float | None = None
        self.job: _worker.Job | None = None
        self._side.clicked.connect(self.side_by_side)
        self._overlay.clicked.connect(self.overlay)
        self._agree.clicked.connect(self.agreement_map)
        self._check.clicked.connect(self.check_equivariance)
        self._stop.clicked.connect(self.stop)
        for event in ("inserted", "removed", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self.reset_choices)
        connect_while_alive(self.state.changed, self._on_model, self)
        self._guess_layers()

    def _modalities(self, _widget=None) -> list[str]:
        return self.state.model.modalities if self.state.model is not None else ["bf", "shg"]

    def _on_model(self, _model):
        self._modality.reset_choices()

    def _guess_layers(self):
        """Default to the CoMIR layers made by the Representations/Register widgets."""
        comirs = [lay for lay in self.viewer.layers
                  if isinstance(lay, Image) and "comir_modality" in lay.metadata]
        model = self.state.model
        for combo, role in ((self._fixed, "fixed"), (self._moving, "moving")):
            taken = self._fixed.value if role == "moving" else None
            options = [lay for lay in comirs if lay is not taken]
            if combo.value is None and options:
                wanted = getattr(model.card, f"{role}_modality") if model else None
                match = [lay for lay in options if lay.metadata["comir_modality"] == wanted]
                if match or wanted is None:  # not another modality's CoMIR, come first
                    combo.value = (match or options)[0]
        if self._image.value is None:
            raw = raw_images(self.viewer)
            if raw:
                self._image.value = raw[0]
        self._match_modality()

    def _match_modality(self, *_):
        """The equivariance check's modality follows its image: RGB -> the 3-channel one."""
        layer, model = self._image.value, self.state.model
        if layer is None or model is None:
            return
        for name, spec in model.card.modalities.items():
            if (spec.channels >= 3) == bool(layer.rgb):
                self._modality.value = name
                return

    def reset_choices(self, *_):
        super().reset_choices()
        self._guess_layers()

    def _pair(self) -> tuple[Image, Image]:
        fixed, moving = self._fixed.value, self._moving.value
        if fixed is None or moving is None or fixed is moving:
            raise InputError("choose two different CoMIR layers "
                             "(compute them in 'CoMIR representations')")
        return fixed, moving

    def side_by_side(self) -> None:
        """Grid mode with only the two CoMIRs visible."""
        try:
            pair = self._pair()
        except ComirError as exc:
            show_error(f"Inspect: {exc}")
            return
        for layer in self.viewer.layers:
            layer.visible = layer in pair
        _grid(self.viewer).enabled = True

    def overlay(self) -> None:
        """One view: fixed magenta, moving green (with its registration affine), additive."""
        try:
            fixed, moving = self._pair()
        except ComirError as exc:
            show_error(f"Inspect: {exc}")
            return
        _grid(self.viewer).enabled = False
        for layer, colormap in ((fixed, "magenta"), (moving, "green")):
            layer.visible = True
            if not layer.rgb:
                layer.colormap, layer.blending = colormap, "additive"

    def agreement_map(self) -> _worker.Job | None:
        """Local NCC of the fixed CoMIR and the moving CoMIR as shown (affine), in a worker: a
        layer, and its mean in :attr:`agreement`."""
        try:
            fixed, moving = self._pair()
            transform = pixel_transform(fixed, moving)
            fixed_comir, moving_comir = _comir_array(fixed), _comir_array(moving)
        except ComirError as exc:
            show_error(f"Inspect: {exc}")
            return None
        window = int(self._window.value)

        def events():
            yield Progress("agreement", 0, 0, "comparing the CoMIRs window by window")
            yield Progress("agreement", 1, 1, "compared", result=agreement_map(
                fixed_comir, moving_comir, transform, window))

        def done(job):
            if job.state is not _worker.JobState.FINISHED or job.result is None:
                self._agree_label.value = "" if job.stopped else f"⚠ {job.error}"
                return
            ncc, overlap = job.result
            defined = np.isfinite(ncc)
            self.agreement = float(ncc[defined].mean()) if defined.any() else float("nan")
            # NaN where not compared: napari leaves it transparent over the CoMIRs
            layer = upsert_image(self.viewer, AGREEMENT_LAYER, ncc, like=fixed, colormap="PiYG",
                                 contrast_limits=(-1.0, 1.0), blending="translucent", visible=True,
                                 metadata={"comir_inspection": "agreement"})
            layer.colorbar.visible = True  # which colour is agreement: -1 to 1
            note = (f" ⚠ the CoMIRs overlap on {overlap:.0%} of {fixed.name!r} only: are they of "
                    "one pair, on one grid?" if overlap < MIN_OVERLAP else "")
            self._agree_label.value = (f"mean local NCC {self.agreement:.3f} on the overlap "
                                       f"(green = agree, pink = disagree){note}")

        self._agree_label.value = "comparing…"
        return self._run(events, done)

    def check_equivariance(self) -> _worker.Job | None:
        """Rotate the image, compute its CoMIR, rotate back; report the correlation r."""
        layer = self._image.value
        try:
            if layer is None:
                raise InputError("choose a raw image layer")
            model = self.state.get()
            image = image_data(layer, "the equivariance check")
        except ComirError as exc:
            show_error(f"Inspect: {exc}")
            return None
        angle, modality = float(self._angle.value), self._modality.value

        def done(job):
            if job.failed or job.stopped or job.result is None:
                self._equi_label.value = "stopped" if job.stopped else f"⚠ {job.error}"
                return
            self.equivariance, back = job.result
            upsert_image(self.viewer, EQUIVARIANCE_LAYER, back[..., 0] if back.shape[-1] == 1
                         else back, like=layer, visible=False,
                         metadata={"comir_inspection": "equivariance"})
            self._equi_label.value = (f"{layer.name!r} ({modality}) turned {angle:g}°: r = "
                                      f"{self.equivariance:.3f} between its CoMIR and the turned "
                                      "image's CoMIR turned back (1 = perfectly equivariant)")

        self._equi_label.value = ""
        return self._run(lambda: rotation_equivariance_events(model, image, modality, angle), done)

    def _run(self, events, done) -> _worker.Job:
        """One job at a time: the buttons that start one wait, Stop ends it."""
        self._agree.enabled = self._check.enabled = False
        self._stop.enabled = True

        def finished(job):
            self._agree.enabled = self._check.enabled = True
            self._stop.enabled = False
            done(job)

        self.job = _worker.Job()
        _worker.run_job(events, on_done=finished, progress_bar=self._progress, job=self.job,
                        title="Inspect")
        return self.job

    def stop(self) -> None:
        if self.job is not None:
            self.job.quit()
