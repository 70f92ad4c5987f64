"""The landmarks panel: place point pairs, fit them, or start the registration from them."""

from __future__ import annotations

import weakref

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_error

from ..core.errors import ComirError
from ._connections import connect_while_alive
from ._landmarks import landmark_layers, landmark_names, residual_lines, show_pair_landmarks
from ._layers import StatusLine
from ._run_panel import RunPanel, row
from .session import RegistrationSession

HINT = "3 or more pairs for affine; then fit, or refine from them"


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
        self.residuals = StatusLine()
        super().__init__(widgets=[row(self.add_button, self.fit_button, self.register_button,
                                      label="landmarks"), self.residuals])
        self.margins = (0, 0, 0, 0)
        self.add_button.clicked.connect(self.add)
        self.fit_button.clicked.connect(self.fit)
        self.register_button.clicked.connect(self._refine_from)
        #: The landmark layers whose points this panel follows, and their counts last seen.
        self._watched: weakref.WeakSet = weakref.WeakSet()
        self._counts: tuple[int, int] | None = None
        connect_while_alive(session.changed, self.refresh, self)
        self.refresh("result")  # a dock opened later shows what the session already holds

    def add(self) -> None:
        """The landmark layers, and the next point to place: on the fixed image, then the same
        structure on the moving one, in turn (each image shown alone, its layer adding points),
        as the two layers' point counts say."""
        try:
            layers = landmark_layers(self.session.viewer, *self.session.chosen_pair())
        except ComirError as exc:
            show_error(f"Landmarks: {exc}")
            return
        for layer in layers:
            if layer not in self._watched:
                connect_while_alive(layer.events.data, self._on_points, self)
                self._watched.add(layer)
        if self.session.result is not None:
            self.session.set_review_view("off")  # the images themselves, to click on
        self._counts = None
        self._on_points()

    def _landmark_layers(self):
        viewer, pair = self.session.viewer, (self.session.fixed, self.session.moving)
        if None in pair or not all(name in viewer.layers for name in landmark_names(*pair)):
            return pair, None
        return pair, tuple(viewer.layers[name] for name in landmark_names(*pair))

    def _on_points(self, *_) -> None:
        """A point added or removed: show the image whose landmark comes next, alone, with its
        landmark layer adding points (a point dragged changes nothing)."""
        pair, layers = self._landmark_layers()
        counts = None if layers is None else tuple(len(layer.data) for layer in layers)
        if counts is None or counts == self._counts:
            return
        self._counts = counts
        on_fixed = counts[0] <= counts[1]
        image, other = pair if on_fixed else pair[::-1]
        target, other_points = layers if on_fixed else layers[::-1]
        # the other image's points would lie over this one where nothing corresponds to them
        image.visible, other.visible, target.visible, other_points.visible = True, False, True, False
        self.session.viewer.layers.selection.active = target
        target.mode = "add"
        number = len(target.data) + 1
        self.residuals.value = (f"pair {number}: click a structure on {image.name}" if on_fixed else
                                f"pair {number}: click the same structure on {image.name}") + \
            f" ({HINT})"

    def _show_both(self) -> None:
        """Placing ends: both images shown, the landmark layers no longer adding points."""
        pair, layers = self._landmark_layers()
        for image in pair:
            if image is not None:
                image.visible = True
        for layer in layers or ():
            layer.visible, layer.mode = True, "pan_zoom"  # napari restores a mode on showing

    def fit(self):
        self._show_both()
        try:
            return self.session.fit_landmarks(self.run_panel.transform.value)
        except ComirError as exc:
            self.residuals.value = f"⚠ {exc}"
            show_error(f"Landmarks: {exc}")
            return None

    def _refine_from(self):
        self._show_both()
        return self.run_panel.register(from_landmarks=True)

    def refresh(self, what: str) -> None:
        session = self.session
        if what == "pair":
            show_pair_landmarks(session.viewer, session.fixed, session.moving)
            if session.result_pair != (session.fixed, session.moving):
                self.residuals.value = ""  # another pair's result's residuals, or its turn to click
        if what in ("result", "job"):
            # a fit during a registration would be replaced by its result: one job at a time
            self.register_button.enabled = self.fit_button.enabled = not self.session.busy
            # the result's residuals only while its pair is the chosen one (a new pair registering)
            current = session.result_pair == (session.fixed, session.moving)
            found = self.session.landmark_residuals() if current else None
            if found is not None:
                lines = residual_lines(*found)
                if self.session.result.method == "initial":  # refined from them on the images
                    lines.append(f"refined on the images from the landmarks' own fit (mean "
                                 f"{self.session.landmark_fit_error():.1f} px on them): clicks "
                                 "are seldom exact, so the landmarks may now agree less")
                self.residuals.value = "\n".join(lines)
            elif what == "result":  # none placed on this result's pair: not another pair's
                self.residuals.value = ""
