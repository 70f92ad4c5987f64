"""The review panel: before/after and what the review shows (overlay, CoMIRs, checkerboard…)."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ..core.errors import ComirError
from ._apply import carried_onto
from ._connections import connect_while_alive
from ._layers import StatusLine
from ._review import WARPED_VIEWS, is_deformable
from ._run_panel import row
from .session import RegistrationSession

FLICKER_MS = 500  # twice a second: fast enough to see a jump, slow enough to follow
#: What each view means, shown under the choice.
VIEW_HELP = {
    "overlay": "fixed green over moving magenta: white where they agree, green beside magenta "
               "where they do not",
    "CoMIRs": "the two CoMIRs, green over magenta: they are made to agree where the tissue does",
    "checkerboard": "squares of the fixed and the moving image in turn: edges must continue",
    "flicker": "the two images in turn, twice a second: a misregistration jumps",
    "agreement": "the CoMIRs' local correlation: green agree, pink disagree",
    "deformation": "how far the deformable stage moved each point beyond the affine result (px)",
    "off": "your layers only",
}


class ReviewPanel(Container):
    """Before/after and the review view of the session's result."""

    def __init__(self, session: RegistrationSession):
        self.session = session
        self.after = CheckBox(text="after", value=True, enabled=False,
                              tooltip="The moving image under the found transform; untick to "
                              "see it where it was (before)")
        self.view = ComboBox(label="show", choices=lambda _widget: session.review_views(),
                             value=session.review_view, enabled=False)
        self.subject = StatusLine()
        super().__init__(widgets=[row(self.view, self.after, label="review"), self.subject])
        self.margins = (0, 0, 0, 0)
        self._timer = QTimer(self.native)  # stops with the panel
        self._timer.setInterval(FLICKER_MS)
        self._timer.timeout.connect(self._flicker_step)
        self.after.changed.connect(session.set_after)
        self.view.changed.connect(self._choose_view)
        connect_while_alive(session.changed, self.refresh, self)
        self.refresh("result")  # a dock opened later shows what the session already holds

    def _choose_view(self, view: str) -> None:
        try:
            self.session.set_review_view(view)
        except ComirError as exc:
            show_error(f"Review: {exc}")
            with self.view.changed.blocked():
                self.view.value = self.session.review_view

    def _flicker_step(self) -> None:
        layers = [layer for layer in self.session.review_layers if layer in self.session.viewer.layers]
        if len(layers) != 2 or self.session.review_view != "flicker":
            self._timer.stop()
            return
        layers[0].visible = not layers[0].visible
        layers[1].visible = not layers[0].visible

    def refresh(self, what: str) -> None:
        if what not in ("result", "review", "accepted"):
            return
        session = self.session
        has_result = session.result is not None and session.result_pair is not None
        self.after.enabled = self.view.enabled = has_result
        with self.view.changed.blocked():
            if tuple(self.view.choices) != session.review_views():
                self.view.native.clear()  # magicgui appends new choices after the old ones
            self.view.reset_choices()
            if session.review_view in self.view.choices:  # else a new result's view is on its way
                self.view.value = session.review_view
        with self.after.changed.blocked():
            self.after.value = session.after
        if session.review_view == "flicker" and has_result:
            self._timer.start()
        else:
            self._timer.stop()
        if not has_result:
            self.subject.value = ""
            return
        fixed, moving = session.result_pair
        text = f"{fixed.name} (fixed) and {moving.name} (moving): {VIEW_HELP[session.review_view]}"
        if session.after and is_deformable(session.result.transform) and \
                session.review_view not in WARPED_VIEWS:
            text += (f". {moving.name} itself is placed by the field's affine part (a layer "
                     "cannot bend): overlay, flicker and checkerboard show the field, Accept "
                     "resamples through it")
        hidden = session.hidden_by_review
        if hidden:
            text += (f". Hidden while this view shows: "
                     f"{', '.join(repr(layer.name) for layer in hidden)} ('off' shows them)")
        if session.review_view == "off" and session.accepted_matches_result():
            text = (f"accepted: {session.accepted.name!r} over {fixed.name!r}; choose a view to "
                    "compare again")
            carried = carried_onto(session.viewer, moving)
            if carried and is_deformable(session.result.transform):
                text += (f". {', '.join(repr(layer.name) for layer in carried)} lie on {moving.name} "
                         "as placed by the field's affine part, not on the accepted layer")
        self.subject.value = text
