"""Register (CoMIR): the expert dock — run (with the method and CoMIR reuse), review, keep and
landmarks panels over the viewer's registration session."""

from __future__ import annotations

from magicgui.widgets import Container

from ._docking import ScrollingDock, tabify_with_siblings
from ._keep_panel import KeepPanel
from ._landmarks_panel import LandmarksPanel
from ._review_panel import ReviewPanel
from ._run_panel import RunPanel
from .session import session_for


class RegisterWidget(ScrollingDock, Container):
    """Register a moving layer onto a fixed layer of another modality through their CoMIRs."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.run_panel = RunPanel(self.session, expert=True)
        self.review_panel = ReviewPanel(self.session)
        self.keep_panel = KeepPanel(self.session)
        self.landmarks_panel = LandmarksPanel(self.session, self.run_panel)
        super().__init__(scrollable=True, labels=False, widgets=[
            self.run_panel, self.review_panel, self.keep_panel, self.landmarks_panel])
        self.stretch_below()
        tabify_with_siblings(self, self.viewer, tab_title="Register")
