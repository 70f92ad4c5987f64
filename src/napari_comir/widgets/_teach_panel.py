"""The teach panel: fine-tune the model on the accepted pair, save it, use it in this viewer."""

from __future__ import annotations

import re

from magicgui.widgets import Container, FloatSpinBox, LineEdit, ProgressBar, PushButton
from napari.utils.notifications import show_error

from ..core.errors import ComirError
from ._connections import connect_while_alive
from ._layers import StatusLine, is_multiscale
from ._run_panel import row
from ._worker import JobState, eta_text, show_progress
from .session import RegistrationSession

#: Default teaching time (s): one pair on a 2-core CPU (benchmarks/new_tissue_loop.py).
TEACH_SECONDS = 60.0


def safe_model_name(text: str) -> str:
    """A user-model name from free text (letters, digits, '.', '_', '-'; at most 64)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "tuned"
    return cleaned[:64]


class TeachPanel(Container):
    """Teach the model the accepted pair; the taught model is named and used in this viewer."""

    def __init__(self, session: RegistrationSession):
        self.session = session
        self.seconds = FloatSpinBox(value=TEACH_SECONDS, min=5, max=3600, step=5,
                                    tooltip="Teaching time in seconds; checking the taught "
                                    "model on the pair (and calibrating its verdict) takes some "
                                    "seconds more")
        self.save_as = LineEdit(label="save as", value="", tooltip="Name of the taught model (a user model)")
        self.teach_button = PushButton(text="teach (s)", enabled=False,
                                       tooltip="Fine-tune a copy of the model on the accepted pair "
                                       "for this many seconds, check it, save it under the name "
                                       "if it registers the pair, and use it in this viewer (your "
                                       "default model does not change)")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, max=1, visible=False)
        self.status = StatusLine()
        self._named_for = ""  # the name last filled in for a kept pair
        super().__init__(widgets=[row(self.seconds, self.teach_button, self.stop_button),
                                  self.save_as, self.progress, self.status])
        self.margins = (0, 0, 0, 0)
        self.teach_button.clicked.connect(self.teach)
        self.stop_button.clicked.connect(session.stop)
        connect_while_alive(session.changed, self.refresh, self)
        self.refresh("accepted")  # a dock opened later shows what the session already holds

    def teach(self):
        session = self.session
        name = self.save_as.value or self._default_name()
        try:
            return session.teach(float(self.seconds.value), name)
        except ComirError as exc:
            self.status.value = f"⚠ {exc}"
            show_error(f"Teach: {exc}")
            return None

    def _default_name(self) -> str:
        """The name of the model taught from (a new modality pair: "taught") and the kept
        moving image's, which names what is new (a stain, a microscope) more often than the
        fixed one (the H&E of every serial-section pair)."""
        session = self.session
        model, pair = session.models.model, session.accepted_pair
        base = model.card.name if model is not None and session.teaches_from_model(model) else "taught"
        return safe_model_name(f"{base}-{pair[1].name}" if pair else base)

    def _outcome_text(self, result) -> str:
        outcome, saved = result
        if not saved:
            return f"⚠ not saved, the model in use is unchanged: {outcome.reason}"
        name = self.session.models.source
        return (f"✓ saved {name!r} and used in this viewer (your default model is unchanged): "
                f"{outcome.reason}")

    def refresh(self, what: str) -> None:
        session, job = self.session, self.session.job
        teaching = session.job_kind == "teach" and job is not None
        if what == "event" and teaching and session.last_event is not None:
            show_progress(self.progress, session.last_event)
            eta = eta_text(job)
            self.status.value = session.last_event.message + (f" · {eta}" if eta else "")
            return
        accepted = session.accepted
        slides = accepted is not None and is_multiscale(accepted)
        self.teach_button.enabled = accepted is not None and not slides and not session.busy
        self.stop_button.enabled = teaching and job.state is JobState.RUNNING
        self.progress.visible = teaching and job.running
        if what == "accepted" and accepted is not None and \
                self.save_as.value in ("", self._named_for):  # not a name the user typed
            self.save_as.value = self._named_for = self._default_name()
        if teaching and what == "job" and job.state is JobState.RUNNING:
            self.progress.max = 0  # busy until the steps that fit are known, not the last run's
            self.progress.native.setFormat("starting…")
        if teaching and what == "job":
            self.status.value = self._outcome_text(job.result) \
                if job.state is JobState.FINISHED else {
                    JobState.RUNNING: "teaching…", JobState.STOPPING: "stopping…",
                    JobState.STOPPED: "stopped: nothing saved",
                    JobState.FAILED: f"⚠ failed: {job.error}"}[job.state]
        elif slides:
            self.status.value = "teaching on whole slides is not supported: crop a region first"
        elif accepted is None and not teaching:
            self.status.value = "after Accept: teach the model this pair if it is new tissue"
        elif not teaching:
            self.status.value = f"ready to teach on the kept pair ({accepted.name!r})"
