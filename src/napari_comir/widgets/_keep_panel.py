"""The keep panel: Accept (resample, or write a whole slide), Export, apply to other layers."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, PushButton, Select
from napari.utils.notifications import show_error, show_info

from ..core.errors import ComirError
from ..core.transforms import AffineTransform
from . import _export, _slide_output
from ._apply import DIRECTIONS
from ._connections import connect_while_alive
from ._layers import StatusLine, cap_height, is_multiscale, layer_pixel_sizes
from ._run_panel import row
from ._worker import JobState
from .session import RegistrationSession


class KeepPanel(Container):
    """Keep the session's result: a resampled layer, a transform file, other layers carried."""

    def __init__(self, session: RegistrationSession):
        self.session = session
        #: Where Accept writes a registered whole slide; None: ask (a file dialog).
        self.output_path = None
        self.accept_button = PushButton(text="Accept (resample)", enabled=False,
                                        tooltip="The moving image resampled onto the fixed grid, "
                                        "as a new layer (yours are never changed)")
        self.export_button = PushButton(text="Export transform…", enabled=False,
                                        tooltip="JSON, ITK/elastix, OME-NGFF, QuPath or CSV")
        self.status = StatusLine()
        self.targets = cap_height(Select(label="apply to", choices=self._targets), 64)
        self.direction = ComboBox(label="direction", choices=list(DIRECTIONS),
                                  value=next(iter(DIRECTIONS)),
                                  tooltip="moving → fixed: the selected layers belong to the moving "
                                  "image and go onto the fixed grid (a layer drawn over the "
                                  "registered preview: from where it was drawn); fixed → moving: "
                                  "they belong to the fixed image (e.g. annotations drawn on it)")
        self.apply_button = PushButton(text="Apply to selected layers", enabled=False)
        super().__init__(widgets=[row(self.accept_button, self.export_button), self.status,
                                  self.targets, self.direction, self.apply_button])
        self.margins = (0, 0, 0, 0)
        self.accept_button.clicked.connect(self.accept)
        self.export_button.clicked.connect(self._export_dialog)
        self.apply_button.clicked.connect(lambda: self.apply_to(self.targets.value or []))
        for event in ("inserted", "removed", "reordered"):
            getattr(session.viewer.layers.events, event).connect(self.reset_choices)
        connect_while_alive(session.changed, self.refresh, self)
        self._targets_pair = session.result_pair  # the pair 'apply to' was chosen for
        self.refresh("result")  # a dock opened later shows what the session already holds

    def _targets(self, _widget=None):
        return [(layer.name, layer) for layer in self.session.apply_targets()]

    def accept(self):
        """Accept: a new layer at once, or (whole slides) a Job writing the file."""
        session = self.session
        try:
            _, fixed, moving = session.require_result()
            path = None
            if is_multiscale(fixed) or is_multiscale(moving):
                path = self.output_path or _slide_output.ask_output_path(self.native, moving)
                if not path:
                    return None
            return session.accept(path)
        except (ComirError, OSError) as exc:
            self.status.value = f"⚠ {exc}"
            show_error(f"Accept: {exc}")
            return None

    def export_transform(self, path):
        path = self.session.export(path)
        transform, fixed, moving = self.session.require_result()
        unknown = _export.in_micrometres(path) and layer_pixel_sizes(fixed, moving) == (None, None)
        note = (" (pixel sizes unknown: its µm are pixels; type them under 'µm / px' and "
                "export again for physical units)" if unknown else "")
        companions = _export.companion_files(path, transform)
        if companions:
            note += (f", with {' and '.join(file.name for file in companions)} beside it, which "
                     "it names by their full path: keep the three together")
        self.status.value = f"✓ transform written to {path}{note}"
        show_info(f"transform saved to {path}{note}")
        return path

    def _export_dialog(self):
        transform, fixed, moving = self.session.require_result()
        path = _export.ask_export_path(self.native, fixed, moving,
                                       deformable=not isinstance(transform, AffineTransform))
        if path:
            try:
                self.export_transform(path)
            except (ComirError, OSError) as exc:
                self.status.value = f"⚠ cannot export: {exc}"
                show_error(f"Export: {exc}")

    def apply_to(self, layers):
        if not layers:
            self.status.value = "⚠ select the layers to carry in 'apply to' first"
            return []
        inverse = DIRECTIONS[self.direction.value]
        names_before = {layer.name for layer in self.session.viewer.layers}
        added = []
        for layer in layers:
            try:
                added += self.session.apply_to([layer], inverse)
            except ComirError as exc:
                show_error(f"Apply: {layer.name}: {exc}")
        if added:
            self.status.value = "✓ " + ", ".join(
                f"{'updated' if layer.name in names_before else 'added'} {layer.name!r}"
                for layer in added)
        return added

    def refresh(self, what: str) -> None:
        session = self.session
        if what == "event" and session.job_kind == "accept" and session.last_event is not None:
            self.status.value = session.last_event.message
            return
        has_result = session.result is not None and session.result_pair is not None
        self.accept_button.enabled = has_result and not session.busy
        # not while another job runs: the result they would act on is about to be replaced
        self.export_button.enabled = self.apply_button.enabled = has_result and not session.busy
        pair = session.result_pair or (session.fixed, session.moving)  # before a result: the chosen
        slides = any(layer is not None and is_multiscale(layer) for layer in pair)
        self.accept_button.text = "Accept (save slide…)" if slides else "Accept (resample)"
        self.targets.reset_choices()
        if what == "result" and session.result_pair != self._targets_pair:
            # chosen for another pair: one click would carry them through this pair's result
            self.targets.value, self._targets_pair = [], session.result_pair
        accept_job = session.job if session.job_kind == "accept" else None
        ended = _ended_text(session) if accept_job is not None else ""
        if what == "job" and accept_job is not None:
            self.status.value = ended or {JobState.RUNNING: "writing the registered slide…",
                                          JobState.STOPPING: "stopping…"}.get(accept_job.state, "")
        if session.accepted_matches_result():
            written = session.accepted.metadata.get("comir_file")
            kept = f"layer {session.accepted.name!r}" + (f", written to {written}" if written else "")
            # a later Accept that stopped or failed wrote nothing: say so, beside the copy kept
            self.status.value = (f"{ended}: nothing written; still kept as {kept}" if ended
                                 else f"✓ kept as {kept}")
        elif what in ("result", "accepted"):  # a new result, or the accepted layer deleted
            self.status.value = ""


def _ended_text(session) -> str:
    """How the last Accept ended when it did not finish (stopped or failed), else ``""``."""
    state = session.job.state
    if state is JobState.STOPPED:
        return f"⚠ stopped: {session.stop_reason}" if session.stop_reason else "stopped"
    return f"⚠ failed: {session.job.error}" if state is JobState.FAILED else ""
