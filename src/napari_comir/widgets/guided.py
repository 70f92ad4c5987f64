"""The guided dock "CoMIR registration": the steps in order, each saying its state and what next.

1 images (fixed SHG, moving bright field; pixel sizes from the layers' ``scale``) → 2 model →
3 register (transform model, rotation range; landmarks when the search fails) → 4 review (the
overlay, before/after, checkerboard) → 5 keep (accept = resample, export, apply to other layers)
→ 6 teach: for a tissue the model does not know, fine-tune it on the accepted pair and register
the others with it (the new-tissue loop).
It is the Register widget with the model choice and a status line per step; the expert widgets
stay in the menu.
"""

from __future__ import annotations

import re

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton
from napari.utils.notifications import show_error

from .. import api
from ..core.data import AlignedPair
from ..core.defaults import TRANSFORM_KEY
from ..core.errors import ComirError, InputError
from ..core.training import FINE_TUNE_LR, TrainConfig
from . import _worker
from ._layers import image_data, is_multiscale, layer_pixel_sizes, wrap
from ._state import library, state_for
from .register import RegisterWidget

STEPS = ("images", "model", "register", "review", "keep", "teach")
#: Default fine-tuning time (s) of the teach step: one pair, on a 2-core CPU (benchmarks/new_tissue_loop.py).
TEACH_SECONDS = 60.0


class GuidedDock(RegisterWidget):
    """One dock that walks a registration from two layers to a kept result."""

    def __init__(self, napari_viewer):
        self.state = state_for(napari_viewer)  # this viewer's model
        names = list(api.list_models())
        loaded = self.state.source if self.state.model is not None else self.state.default_name()
        self._model_name = ComboBox(label="model", choices=lambda _widget: list(api.list_models()),
                                    nullable=True, value=loaded if loaded in names else None,
                                    tooltip="Bundled and saved user models; the CoMIR model widget "
                                    "(menu) shows their cards and loads files")
        self._status = {step: wrap(Label(label=f"{number} · {step}", value=""))
                        for number, step in enumerate(STEPS, start=1)}
        super().__init__(napari_viewer)
        # Step headers with their status, before the controls of each step.
        self.insert(self.index(self._method), self._model_name)
        firsts = {"images": self._fixed, "model": self._model_name, "register": self._method,
                  "review": self._after, "keep": self._keep_row}
        for step, first in firsts.items():
            self.insert(self.index(first), self._status[step])
        self._teach_seconds = FloatSpinBox(value=TEACH_SECONDS, min=5, max=3600, step=5,
                                           tooltip="Fine-tuning time in seconds")
        self._teach = PushButton(text="fine-tune (s)", enabled=False,
                                 tooltip="Fine-tune the model on the accepted pair for this many "
                                 "seconds, save it as a user model and use it for the next pairs")
        self._teach_row = Container(layout="horizontal", labels=False,
                                    widgets=[self._teach_seconds, self._teach])
        self._teach_row.margins = (0, 0, 0, 0)
        self.append(self._status["teach"])
        self.append(self._teach_row)
        self._teach.clicked.connect(self.teach)
        self._accepted = None
        self._reuse.visible = False  # an expert's choice: the dock reuses CoMIRs it showed
        self._method.visible = False  # SIFT is for experts (the Register widget); search here
        self._square.visible = False  # shown with the checkerboard
        self._checker.changed.connect(lambda on: setattr(self._square, "visible", on))
        self._model_name.changed.connect(self._choose_model)
        for picker in (self._fixed, self._moving):
            picker.changed.connect(self.update_steps)
        self.state.changed.connect(self.update_steps)
        # the wrapper's attributes may be gone when Qt destroys the widget: keep what is needed
        state, slot = self.state, self.update_steps
        self.native.destroyed.connect(lambda *_: state.changed.disconnect(slot))
        self.update_steps()

    def _choose_model(self, name: str | None) -> None:
        if name is None:
            return
        try:
            self.state.load(name)
        except ComirError as exc:
            show_error(f"CoMIR registration: {exc}")

    def update_steps(self, *_) -> None:
        """Say, for each step, what is done and what to do next."""
        fixed, moving = self._fixed.value, self._moving.value
        if fixed is None or moving is None or fixed is moving:
            images = "choose fixed (SHG), moving (BF)"
        else:
            sizes = layer_pixel_sizes(fixed, moving)
            images = f"✓ {sizes[0]:g} / {sizes[1]:g} µm/px" if sizes[0] else "✓ scale searched"
            if is_multiscale(fixed) or is_multiscale(moving):  # read lazily, coarse to fine
                images = "✓ whole slides"  # one line; the µm/px are in the Register widget
        model = self.state.model
        models = (f"✓ {model.card.name} {model.card.version}" if model is not None
                  else "pick one (bf-shg is bundled)")
        teach = "new tissue? fine-tune on it" if self._accepted is not None else "after Accept"
        if self._accepted is not None and any(is_multiscale(layer) for layer in self._accepted):
            teach = "crop to fine-tune"  # one line: the tooltip says why
        if model is not None and self.state.source in self._model_name.choices:
            with self._model_name.changed.blocked():  # the picker shows the model in use
                self._model_name.value = self.state.source
        result = self.result
        written = self._accepted[1].metadata.get("comir_file") if self._accepted else None
        if result is None:
            register = "press Register"
            review, keep = "after registering", "after reviewing"
        else:
            verdict = "likely right" if result.success_likely else "PROBABLY WRONG"
            register = f"✓ {result.transform.model}, {verdict}"
            review = "white = they agree"
            keep = "Accept or Export"
            if written and self._accepted[1].metadata.get(TRANSFORM_KEY) == \
                    result.transform.to_dict():  # this result's, not an earlier one's
                keep = "✓ saved as a layer"
        texts = (images, models, register, review, keep, teach)
        for step, text in zip(STEPS, texts, strict=True):
            self._status[step].value = text
        self._status["keep"].tooltip = f"written to {written}" if written else None
        self._status["teach"].tooltip = (
            "fine-tuning on whole slides is not supported: crop a region first"
            if teach.startswith("crop") else None)

    def show_result(self, result, fixed, moving) -> None:
        super().show_result(result, fixed, moving)
        self.update_steps()

    def _accepted_layer(self, layer) -> None:
        super()._accepted_layer(layer)
        self._accepted = (self._pair[0], layer)
        self._teach.enabled = not any(is_multiscale(lay) for lay in self._accepted)
        self.update_steps()

    def teach(self) -> _worker.Job | None:
        """Fine-tune a copy of the model on the accepted pair (fixed image + the moving image
        resampled onto it), save it as a user model and make it this viewer's model."""
        if self._accepted is None:
            show_error("CoMIR registration: accept a registration first")
            return None
        fixed, registered = self._accepted
        base = self.state.get()
        card = base.card
        try:
            if is_multiscale(fixed) or is_multiscale(registered):
                raise InputError("fine-tuning on whole slides is not supported; crop a region "
                                 "first")
            pair = AlignedPair({card.fixed_modality: image_data(fixed),
                                card.moving_modality: image_data(registered)}, name=registered.name)
            side = min(image_data(registered).shape[:2])
            config = TrainConfig(steps=1_000_000, max_seconds=float(self._teach_seconds.value),
                                 lr=FINE_TUNE_LR, freeze_batchnorm=True, device=self.state.device,
                                 patch_size=min(TrainConfig.patch_size, side // 16 * 16))
            events = api.fine_tune(base, [pair], config)
        except ComirError as exc:
            show_error(f"CoMIR registration: {exc}")
            return None
        name = _safe_model_name(f"{card.name}-{fixed.name}")
        self._teach.enabled = False
        self._status["teach"].value = "fine-tuning…"

        def done(job):
            self._teach.enabled = True
            if job.failed or job.result is None:
                self._status["teach"].value = "fine-tuning failed" if job.failed else "stopped"
                return
            try:
                api.save_user_model(job.result, name)
            except ComirError as exc:
                show_error(f"CoMIR registration: cannot save the model: {exc}")
                return
            library.models_saved.emit(name)
            self._model_name.reset_choices()
            self.state.load(name)
            self._status["teach"].value = f"✓ now using {name}; check it on another pair"

        self.job = _worker.Job()
        _worker.run_job(lambda: events, on_done=done, progress_bar=self._progress, job=self.job,
                        title="Fine-tune")
        return self.job


def _safe_model_name(text: str) -> str:
    """A user-model name from free text (letters, digits, '.', '_', '-'; at most 64)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "tuned"
    return cleaned[:64]
