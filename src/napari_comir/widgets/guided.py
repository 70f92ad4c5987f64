"""The guided dock "CoMIR registration": the steps in order, each saying its state and what next.

1 images (fixed SHG, moving bright field; pixel sizes from the layers' ``scale``) → 2 model →
3 register (transform model, rotation range; landmarks when the search fails) → 4 review (the
overlay, before/after, checkerboard) → 5 keep (accept = resample, export, apply to other layers).
It is the Register widget with the model choice and a status line per step; the expert widgets
stay in the menu.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Label
from napari.utils.notifications import show_error

from .. import api
from ..core.errors import ComirError
from ._layers import wrap
from ._state import state_for
from .register import RegisterWidget, layer_pixel_sizes

STEPS = ("images", "model", "register", "review", "keep")


class GuidedDock(RegisterWidget):
    """One dock that walks a registration from two layers to a kept result."""

    def __init__(self, napari_viewer):
        self.state = state_for(napari_viewer)  # this viewer's model
        names = list(api.list_models())
        loaded = self.state.source if self.state.model is not None else self.state.default_name()
        self._model_name = ComboBox(label="model", choices=names, nullable=True,
                                    value=loaded if loaded in names else None,
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
            images = "choose the fixed (SHG) and moving (bright-field) layers"
        else:
            sizes = layer_pixel_sizes(fixed, moving)
            images = (f"✓ {sizes[0]:g} / {sizes[1]:g} µm per px" if sizes[0] else
                      "✓ pixel sizes unknown: scale searched")
        model = self.state.model
        models = (f"✓ {model.card.name} {model.card.version}" if model is not None
                  else "pick one (bf-shg is bundled)")
        if model is not None and self.state.source in self._model_name.choices:
            with self._model_name.changed.blocked():  # the picker shows the model in use
                self._model_name.value = self.state.source
        result = self.result
        if result is None:
            register = "press Register (landmarks if it fails)"
            review, keep = "after registering", "after reviewing"
        else:
            verdict = "likely right" if result.success_likely else "PROBABLY WRONG"
            register = f"✓ {result.transform.model}, {verdict}"
            review = "white: agree · green by magenta: off"
            keep = "Accept resamples · Export saves"
        for step, text in zip(STEPS, (images, models, register, review, keep), strict=True):
            self._status[step].value = text

    def show_result(self, result, fixed, moving) -> None:
        super().show_result(result, fixed, moving)
        self.update_steps()
