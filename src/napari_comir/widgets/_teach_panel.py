"""The teach panel: fine-tune the model on the accepted pair, save it, use it in this viewer."""

from __future__ import annotations

import math
import re
import time

from magicgui.widgets import Container, FloatSpinBox, Label, LineEdit, ProgressBar, PushButton
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QScrollArea

from ..core.errors import ComirError
from ._connections import connect_while_alive, widget_deleted
from ._layers import StatusLine, is_multiscale
from ._loss_plot import LossPlot
from ._run_panel import row
from ._worker import JobState, duration_text, rate_text, show_progress
from .session import RegistrationSession

#: Default teaching time (s): one pair on a 2-core CPU (benchmarks/new_tissue_loop.py).
TEACH_SECONDS = 60.0
#: Resolution of the teaching progress bar, which counts seconds of the time given: the steps
#: that fit are an estimate that grows as the first steps are timed (a bar of steps went back).
PROGRESS_TICKS = 1000
#: Room (px) left below the panel when the dock is scrolled to it: its status may gain a line.
VIEW_MARGIN_PX = 24


def safe_model_name(text: str) -> str:
    """A user-model name from free text (letters, digits, '.', '_', '-'; at most 64)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "tuned"
    return cleaned[:64]


def modality_names(fixed_name: str, moving_name: str) -> tuple[str, str]:
    """Names for the modalities of a new pair from its layers' names: the words of each that the
    other lacks ("lung_He-les3", "lung_CD31-3-les3": "he", "cd31"; single letters run together:
    "H&E" gives "he"); "fixed" and "moving" where that leaves nothing or the same. The dock's
    pair guess finds later images by these words in their names."""
    words = [re.split(r"[^a-z0-9]+", name.lower()) for name in (fixed_name, moving_name)]
    names = []
    for own, other in ((words[0], words[1]), (words[1], words[0])):
        distinct = [word for word in own if word and not word.isdigit() and word not in other]
        name = re.sub(r"(?<=\b\w)-(?=\w\b)", "", "-".join(distinct))  # h-e -> he
        names.append(name[:32].strip("-"))
    if not all(names) or names[0] == names[1]:
        return "fixed", "moving"
    return names[0], names[1]


class TeachPanel(Container):
    """Teach the model the accepted pair; the taught model is named and used in this viewer."""

    def __init__(self, session: RegistrationSession):
        self.session = session
        self.seconds = FloatSpinBox(value=TEACH_SECONDS, min=5, max=3600, step=5,
                                    tooltip="Teaching time in seconds; checking the taught "
                                    "model on the pair (and calibrating its verdict) takes some "
                                    "seconds more")
        self.save_as = LineEdit(label="save as", value="", tooltip="Name of the taught model (a user model)")
        modality_tip = ("Name of the {} images' modality in the new model (a stain, a "
                        "microscope): the dock picks later images by it in their names")
        self.fixed_modality = LineEdit(label="fixed", tooltip=modality_tip.format("fixed"))
        self.moving_modality = LineEdit(label="moving", tooltip=modality_tip.format("moving"))
        # Only for a new modality pair (a model taught further keeps its own), in the order of
        # step 1's heading: "(moving → fixed)".
        self.modalities = row(self.moving_modality, Label(value="→"), self.fixed_modality,
                              label="modalities")
        self.modalities.visible = False
        self._modalities_for: tuple[str, str] = ("", "")  # the names last filled in
        self.teach_button = PushButton(text="teach (s)", enabled=False,
                                       tooltip="Fine-tune a copy of the model on the accepted pair "
                                       "for this many seconds, check it, save it under the name "
                                       "if it registers the pair, and use it in this viewer (your "
                                       "default model does not change)")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, max=1, visible=False)
        self.status = StatusLine()
        # The loss alone jumps from step to step (a batch of a few patches): its trend says
        # whether the model learns.
        self.loss_plot = LossPlot(hint="loss curve (press teach)")
        self.loss_plot.setVisible(False)
        self._named_for = ""  # the name last filled in for a kept pair
        self._budget_s = 0.0  # the teaching time of the running job
        self._training_since: float | None = None  # when its first step was reported
        super().__init__(widgets=[row(self.seconds, self.teach_button, self.stop_button),
                                  self.save_as, self.modalities, self.progress, self.status])
        self.native.layout().addWidget(self.loss_plot)  # under the status that reads it out
        self.margins = (0, 0, 0, 0)
        self.teach_button.clicked.connect(self.teach)
        self.stop_button.clicked.connect(session.stop)
        connect_while_alive(session.changed, self.refresh, self)
        # the model decides whether teaching starts a new pair, and the default name
        connect_while_alive(session.models.changed, lambda _model: self.refresh("model"), self)
        self.refresh("accepted")  # a dock opened later shows what the session already holds

    def teach(self):
        session = self.session
        name = self.save_as.value or self._default_name()
        try:
            modalities = (self.fixed_modality.value, self.moving_modality.value) \
                if self.modalities.visible else None
            job = session.teach(float(self.seconds.value), name, modalities)
        except ComirError as exc:
            self.status.value = f"⚠ {exc}"
            show_error(f"Teach: {exc}")
            return None
        # Before the worker's first event reaches the GUI thread: it waits for this call to end.
        self._budget_s, self._training_since = float(self.seconds.value), None
        self.loss_plot.clear()
        self.loss_plot.setVisible(True)
        QTimer.singleShot(0, self._bring_into_view)  # once the dock has laid out the curve
        return job

    def _bring_into_view(self) -> None:
        """Scroll the dock to this panel: its progress and Stop sat below the fold of a
        1280 x 800 window, the dock scrolled to the steps above."""
        scroll = self.native.parentWidget()
        while scroll is not None and not isinstance(scroll, QScrollArea):
            scroll = scroll.parentWidget()
        if scroll is not None and not widget_deleted(self.native):
            scroll.widget().layout().activate()  # the panel's new height, not the last one laid out
            scroll.ensureWidgetVisible(self.native, 0, VIEW_MARGIN_PX)

    def _show_training(self, event, job) -> None:
        """A teaching step: the loss curve, the seconds of the time given, the smoothed loss."""
        now = time.perf_counter()
        if self._training_since is None:
            self._training_since = now
        self.loss_plot.append(event.metrics.get("loss", math.nan))
        elapsed = now - self._training_since
        fraction = min(1.0, elapsed / self._budget_s) if self._budget_s > 0 else 0.0
        self.progress.max, self.progress.value = PROGRESS_TICKS, round(fraction * PROGRESS_TICKS)
        self.progress.native.setFormat("teaching  %p%")
        text = f"step {event.step}" + (f" of ~{event.total}" if event.total else "")
        smoothed = self.loss_plot.smoothed()
        if smoothed:
            window = min(self.loss_plot.smoothing, len(smoothed))
            text += f" · loss {smoothed[-1]:.3g}" + (f" (mean of the last {window})" if window > 1 else "")
        if job.seconds_per_step is not None:
            text += f" · {rate_text(job.seconds_per_step)}"
        left = max(0.0, self._budget_s - elapsed)
        self.status.value = text + f" · {duration_text(left)} left, then a check"
        visible = self.native.visibleRegion()
        if not visible.isEmpty() and visible.boundingRect() != self.native.rect():
            # in view but cut off: the status gained a line (not a dock scrolled elsewhere)
            QTimer.singleShot(0, self._bring_into_view)

    def _default_name(self) -> str:
        """The name of the model taught from (a new modality pair: "taught") and the kept
        moving image's, which names what is new (a stain, a microscope) more often than the
        fixed one (the H&E of every serial-section pair)."""
        session = self.session
        model, pair = session.models.model, session.accepted_pair
        base = model.card.name if model is not None and session.teaches_from_model(model) else "taught"
        return safe_model_name(f"{base}-{pair[1].name}" if pair else base)

    def _show_what_teaching_makes(self, can_teach: bool) -> None:
        """The default name (unless one was typed), and for a new modality pair its modalities'
        names (unless typed): only when the pair kept or the model changes, since whether the
        model's networks take the kept images is checked on them."""
        session = self.session
        if session.accepted is not None and self.save_as.value in ("", self._named_for):
            self.save_as.value = self._named_for = self._default_name()
        model = session.models.model
        self.modalities.visible = can_teach and not (model is not None and session.teaches_from_model(model))
        typed = (self.fixed_modality.value, self.moving_modality.value)
        if self.modalities.visible and typed in (("", ""), self._modalities_for):
            fixed, moving = session.accepted_pair
            self._modalities_for = modality_names(fixed.name, moving.name)
            self.fixed_modality.value, self.moving_modality.value = self._modalities_for

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
            event = session.last_event
            if event.stage == "train":
                self._show_training(event, job)
            else:  # preparing, calibrating, checking: no steps timed for these
                show_progress(self.progress, event)
                self.status.value = event.message
            return
        accepted = session.accepted
        slides = accepted is not None and is_multiscale(accepted)
        self.teach_button.enabled = accepted is not None and not slides and not session.busy
        self.stop_button.enabled = teaching and job.state is JobState.RUNNING
        self.progress.visible = teaching and job.running
        if what in ("accepted", "model"):  # what teaching starts from and names, as it changes
            self._show_what_teaching_makes(accepted is not None and not slides)
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
