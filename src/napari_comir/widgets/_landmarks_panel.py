"""The landmarks panel: place point pairs, fit them, or start the registration from them."""

from __future__ import annotations

from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error

from ..core.errors import ComirError
from ._landmarks import landmark_layers, residual_lines
from ._layers import wrap
from ._run_panel import RunPanel, row
from .session import RegistrationSession

HINT = ("Click a structure on the fixed image's landmark layer, then the same structure on the "
        "moving one's; 3 or more pairs for affine.")


class LandmarksPanel(Container):
    """Add / fit / refine from landmarks; each pair's residual under the result."""

    def __init__(self, session: RegistrationSession, run_panel: RunPanel):
        self.session, self.run_panel = session, run_panel
        self.add_button = PushButton(text="add", tooltip="Two Points layers, one on each image")
        self.fit_button = PushButton(text="fit", tooltip="The transform from the landmarks alone "
                                     "(not checked against the images)")
        self.register_button = PushButton(text="refine from",
                                          tooltip="Refine from the landmarks' transform instead "
                                          "of searching, and judge the result")
        self.residuals = wrap(Label(value=""))
        super().__init__(widgets=[row(self.add_button, self.fit_button, self.register_button,
                                      label="landmarks"), self.residuals])
        self.margins = (0, 0, 0, 0)
        self.add_button.clicked.connect(self.add)
        self.fit_button.clicked.connect(self.fit)
        self.register_button.clicked.connect(lambda: run_panel.register(from_landmarks=True))
        session.changed.connect(self.refresh)
        self.native.destroyed.connect(lambda *_: session.changed.disconnect(self.refresh))

    def add(self) -> None:
        try:
            landmark_layers(self.session.viewer, *self.session.chosen_pair())
        except ComirError as exc:
            show_error(f"Landmarks: {exc}")
            return
        self.residuals.value = HINT

    def fit(self):
        try:
            return self.session.fit_landmarks(self.run_panel.transform.value)
        except ComirError as exc:
            self.residuals.value = f"⚠ {exc}"
            show_error(f"Landmarks: {exc}")
            return None

    def refresh(self, what: str) -> None:
        if what in ("result", "job"):
            self.register_button.enabled = not self.session.busy
            found = self.session.landmark_residuals()
            if found is not None:
                self.residuals.value = "\n".join(residual_lines(*found))
