"""The guided dock "CoMIR registration": the steps in order, each saying its state and what next.

1 model → 2 register (the pair, pixel sizes from the layers' ``scale``, transform model,
rotation range; landmarks when the search fails) → 3 review → 4 keep (accept = resample,
export, apply to other layers) → 5 teach (for a tissue or modality the model does not know:
fine-tune it on the accepted pair, then register the others with it). It composes the same
panels as the expert docks over the viewer's registration session.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container
from napari.utils.notifications import show_error

from .. import api
from ..core.errors import ComirError
from ._connections import connect_while_alive
from ._docking import ScrollingDock, tabify_with_siblings
from ._keep_panel import KeepPanel
from ._landmarks_panel import LandmarksPanel
from ._layers import StatusLine, is_multiscale, layer_pixel_sizes, layer_shape
from ._review_panel import ReviewPanel
from ._run_panel import RunPanel
from ._state import library
from ._teach_panel import TeachPanel
from ._worker import JobState
from .session import session_for

STEPS = ("model", "register", "review", "keep", "teach")


class GuidedDock(ScrollingDock, Container):
    """One dock that walks a registration from two layers to a kept result."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.session = session = session_for(napari_viewer)
        models = session.models
        names = list(api.list_models())
        loaded = models.source if models.model is not None else models.default_name()
        self.model_name = ComboBox(label="model", choices=lambda _widget: list(api.list_models()),
                                   nullable=True, value=loaded if loaded in names else None,
                                   tooltip="Bundled and saved user models; the CoMIR model dock "
                                   "(menu) shows their cards and loads files")
        self.status = {step: StatusLine() for step in STEPS}
        for number, (step, label) in enumerate(self.status.items(), start=1):
            label.native.setStyleSheet("font-weight: bold")
            label.tooltip = f"step {number}: {step}"
        self.run_panel = RunPanel(session)
        self.review_panel = ReviewPanel(session)
        self.keep_panel = KeepPanel(session)
        self.landmarks_panel = LandmarksPanel(session, self.run_panel)
        self.teach_panel = TeachPanel(session)
        super().__init__(scrollable=True, labels=False, widgets=[
            self.status["model"], self.model_name,
            self.status["register"], self.run_panel, self.landmarks_panel,
            self.status["review"], self.review_panel,
            self.status["keep"], self.keep_panel,
            self.status["teach"], self.teach_panel])
        self.model_name.changed.connect(self._choose_model)
        connect_while_alive(session.changed, self.update_steps, self)
        connect_while_alive(models.changed, self.update_steps, self)
        connect_while_alive(library.models_saved, self._models_saved, self)
        self.stretch_below()
        tabify_with_siblings(self, self.viewer, tab_title="Guided")
        self.update_steps()

    def _models_saved(self, _name: str) -> None:
        self.model_name.reset_choices()

    def _choose_model(self, name: str | None) -> None:
        if name is None or name == self.session.models.source:
            return
        try:
            self.session.models.load(name)  # the user's own choice: remembered
        except ComirError as exc:
            show_error(f"CoMIR registration: {exc}")

    def update_steps(self, *_) -> None:
        """Say, for each step, what is done and what to do next."""
        session = self.session
        model = session.models.model
        if model is not None:
            source = session.models.source
            with self.model_name.changed.blocked():  # the picker shows the model in use
                self.model_name.value = source if source in self.model_name.choices else None
        texts = {"model": f"1 · model: ✓ {model.card.name} ({model.card.moving_modality} → "
                          f"{model.card.fixed_modality})" if model is not None
                 else "1 · model: pick one (bf-shg is bundled)"}
        texts["register"] = "2 · register: " + self._register_status()
        result = session.result
        # Steps 3 and 4 act on the last result, which may be of another pair than the one chosen
        other_pair = result is not None and session.result_pair != (session.fixed, session.moving)
        of = (f" (of the last result: {session.result_pair[1].name} onto "
              f"{session.result_pair[0].name})" if other_pair else "")
        texts["review"] = "3 · review: " + ("after registering" if result is None else
                                            "compare the images; untick 'after' for before" + of)
        if result is None:
            keep = "after reviewing"
        elif session.accepted_matches_result():
            keep = f"✓ kept as {session.accepted.name!r}" + of
        else:
            keep = f"{self.keep_panel.accept_button.text} or Export the transform" + of
        texts["keep"] = "4 · keep: " + keep
        teach = "after Accept, if the model does not know this tissue"
        job = session.job if session.job_kind == "teach" else None
        if job is not None and job.state is JobState.FINISHED:
            _, saved = job.result
            teach = (f"✓ now using {session.models.source}" if saved else
                     f"⚠ nothing saved, still using {session.models.source} (why: below)")
        elif job is not None:
            teach = {JobState.RUNNING: "teaching… (progress and Stop below)",
                     JobState.STOPPING: "stopping…",
                     JobState.STOPPED: f"stopped: nothing saved, still using {session.models.source}",
                     JobState.FAILED: f"⚠ failed, still using {session.models.source} (why: below)",
                     }[job.state]
        elif session.accepted is not None:
            teach = "fine-tune the model on the kept pair"
        texts["teach"] = "5 · teach: " + teach
        for step, text in texts.items():
            self.status[step].value = text

    def _register_status(self) -> str:
        session = self.session
        fixed, moving = session.fixed, session.moving
        if fixed is None or moving is None or fixed is moving:
            return "choose the fixed and the moving image"
        for layer in (fixed, moving):  # said before Register refuses it
            dimensions = len(layer_shape(layer)) - (1 if layer.rgb else 0)
            if dimensions != 2:
                return f"⚠ {layer.name!r} is {dimensions}-D: take a 2-D slice of it first"
        if session.busy and session.job_kind == "register":
            return "running…"
        # The last attempt at this pair, if it failed or was refused, is newer than its result
        job = session.job
        if session.job_kind in ("register", "fit") and job is not None and \
                job.state is JobState.FAILED and session.job_layers == (fixed, moving):
            return "⚠ failed — see below"
        if session.failed_pair == (fixed, moving):
            return "⚠ cannot register this pair — see below"
        result = session.result
        if result is not None and session.result_pair == (fixed, moving):
            return self._result_status(result) + (
                "" if session.result_sizes == layer_pixel_sizes(fixed, moving) else
                " with other pixel sizes: Register to check it with these")
        if is_multiscale(fixed) or is_multiscale(moving):
            return "whole slides (coarse to fine): press Register"
        sizes = layer_pixel_sizes(fixed, moving)
        known = (f"fixed {sizes[0]:g}, moving {sizes[1]:g} µm/px" if sizes[0] else
                 "scale searched (no pixel sizes)")
        return f"{known}; press Register"

    def _result_status(self, result) -> str:
        """The chosen pair's result in step 2's heading: its model and the verdict."""
        if result.method == "landmarks":
            return "fitted to landmarks (not yet checked)" + (
                "" if result.success_likely else ": ⚠ they cover little — see below")
        model = result.transform.model
        asked = self.run_panel.transform.value
        if result.deformable is not None and not result.deformable.get("kept"):
            model += " (no field kept)"
        elif asked not in (model, "deformable"):
            model += " (the simplest that fits)"
        return (f"✓ {model}, likely right" if result.success_likely
                else f"{model}: ⚠ probably wrong — see below")
