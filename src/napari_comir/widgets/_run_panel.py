"""The run panel: choose the pair and the transform model, Register / Stop, progress, verdict."""

from __future__ import annotations

import weakref

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    ProgressBar,
    PushButton,
)
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QAbstractSpinBox

from ..core.defaults import DEFAULT_TRANSFORM, TRANSFORM_CHOICES, TRUE_TRANSFORM_KEY
from ..core.errors import ComirError
from ..core.registration import RegistrationResult
from ..core.registration.deformable import displacement_text
from ..core.transforms import AffineTransform, corner_error
from ._connections import connect_while_alive
from ._layers import (
    StatusLine,
    fits_modality,
    guess_pair,
    layer_pixel_sizes,
    layer_shape,
    raw_images,
    set_layer_pixel_size,
    swap_fits_hint,
    swapped_hint,
    unfit_pair_hint,
)
from ._settings import restore
from ._verdict import BAD, GOOD, UNCHECKED, verdict_text
from ._worker import JobState, eta_text, show_progress
from .session import RegistrationSession

_GOOD, _BAD = "color: #5fd35f; font-weight: bold", "color: #ff6060; font-weight: bold"
#: The verdict line's style by its tone (see :func:`verdict_text`): amber for a fit not judged.
_TONE_STYLES = {GOOD: _GOOD, UNCHECKED: "color: #f0b030; font-weight: bold", BAD: _BAD}


def row(*widgets, label: str | None = None) -> Container:
    """Widgets side by side, without margins."""
    container = Container(layout="horizontal", labels=False, widgets=widgets,
                          **({"label": label} if label else {}))
    container.margins = (0, 0, 0, 0)
    return container


def result_text(result: RegistrationResult, fixed, moving) -> str:
    """The found transform in numbers, the pixel sizes when known."""
    transform = result.transform
    affine = getattr(transform, "affine", transform)  # a deformable result: its affine part
    parts = affine.decompose(result.moving_centre_xy)
    size = layer_pixel_sizes(fixed, moving)[0]
    shift = f"x {parts.shift_xy[0]:.1f}, y {parts.shift_xy[1]:.1f} px"
    if size:
        shift += f" ({parts.shift_xy[0] * size:.2f}, {parts.shift_xy[1] * size:.2f} µm)"
    model = affine.model if affine is transform else f"{affine.model} part"  # then the field
    lines = [f"{model}: rotation {parts.angle_deg:.2f}° · scale "
             f"{parts.scale_xy[0]:.3f} x {parts.scale_xy[1]:.3f} · centre moved {shift}"]
    stage = result.deformable
    if stage is not None:  # the reasons' numbers are the details' tooltip (:func:`details_tooltip`)
        headline = "; ".join(reason.split(" (")[0].removesuffix("; the affine result stands")
                             for reason in stage["reasons"])
        lines.append(f"deformable: kept, points moved {displacement_text(stage)} beyond the affine "
                     "part ('deformation' view)" if stage["kept"] else
                     f"deformable: not kept: {headline}; the affine result stands")
        if stage.get("matched_share") is not None:  # a field was fitted: what it did, what held it
            lines.append(field_text(stage))
    if result.method != "landmarks":
        lines.append(f"score {result.score:.3f} · detail {result.detail_score:.1f} · "
                     f"{result.seconds:.1f} s")
    truth = moving.metadata.get(TRUE_TRANSFORM_KEY)  # the misaligned sample knows the answer
    if truth is not None:
        error = corner_error(AffineTransform.from_dict(truth), affine, layer_shape(moving))
        lines.append(f"error vs. the known transform: {error:.1f} px")
    return "\n".join(lines)


#: What the numbers under the verdict mean (the details' tooltip).
NUMBERS_HELP = ("score: how well the CoMIRs correlate where the images overlap (-1 to 1); "
                "detail: how far beyond chance their fine details agree (about 1-2 is the "
                "model's threshold; noise scores near 0)")


def field_text(stage: dict) -> str:
    """The fitted field in one line: how many blocks found their counterpart against chance (the
    share alone, 22 %, read like a failure beside "likely right"), on what, and the details'
    agreement with and without it."""
    matched, chance = stage["matched_share"], stage["chance_share"]
    against = f"{matched / chance:.1f}x chance" if chance > 0 else "none by chance"
    compared = "; CoMIRs and tissue" if stage.get("image_detail") else ""
    return (f"field: {matched:.0%} of blocks matched ({against}{compared}); details agree "
            f"{stage['deformable_detail_score']:.1f} with it, {stage['affine_detail_score']:.1f} "
            "without")


def details_tooltip(result: RegistrationResult) -> str:
    """The numbers explained, the deformable stage's rule, and why its field was not kept."""
    stage = result.deformable
    if stage is None:
        return NUMBERS_HELP
    rule = ("\n\ndeformable stage: a field is kept when the images' blocks find their "
            "counterparts at least 1.5 times as often as by chance (against the moving image "
            "turned half a turn), and the details agree better with it than without by a margin "
            "of at least 1.5 (the difference of the two detail scores over √2), or by less but "
            "the same field is found again when fitted the other way round")
    return NUMBERS_HELP + rule + ("" if stage["kept"] else ": " + "; ".join(stage["reasons"]))


class RunPanel(Container):
    """Pair, transform model and rotation range; Register and Stop; progress; the verdict."""

    def __init__(self, session: RegistrationSession, expert: bool = False):
        self.session = session
        viewer = session.viewer
        images = lambda _widget=None: [(layer.name, layer) for layer in raw_images(viewer)]  # noqa: E731
        self._known_images: weakref.WeakSet = weakref.WeakSet()  # the images guessed from
        self.fixed = ComboBox(label="fixed", choices=images, nullable=True)
        self.moving = ComboBox(label="moving", choices=images, nullable=True)
        self.method = ComboBox(label="method", value="search", visible=expert,
                               choices=[("global search", "search"), ("SIFT", "sift")],
                               tooltip="Global search handles any rotation and weak structure; "
                               "SIFT is faster on large, textured images")
        self.transform = ComboBox(label="transform", value=DEFAULT_TRANSFORM, choices=TRANSFORM_CHOICES,
                                  tooltip="rigid: rotation + shift; similarity: + one scale; "
                                  "affine: any linear map + shift (the simplest that fits is kept); "
                                  "deformable: then a smooth field for sections that stretched, "
                                  "kept only where the CoMIRs agree better. "
                                  "The scale comes from the layers' pixel sizes (scale) when set, "
                                  "else it is searched (0.8-1.25)")
        self.rotation = FloatSlider(label="rotation ±°", min=0, max=180, value=180, step=5,
                                    tooltip="Angles searched: ±value (180 = any rotation)")
        self.sizes = {role: FloatSpinBox(min=0.0, max=1000.0, step=0.01, value=0.0,
                                         tooltip=f"The {role} image's pixel size (µm), recorded "
                                         "as its layer's scale; both unknown: the scale is "
                                         "searched (0.8-1.25)") for role in ("fixed", "moving")}
        for role, box in self.sizes.items():
            box.native.setDecimals(4)
            box.native.setPrefix(f"{role} ")
            box.native.setSpecialValueText(f"{role}: unknown")  # shown at 0
            # Typed, not stepped (µm differ by orders): the ± buttons cut "fixed: unknown" to
            # "ınknown" in a dock tabbed at 1280 x 800.
            box.native.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
            # Applied on Enter or leaving the box, not per keystroke: typing 0.4456 set 0, 4,
            # 44... in turn, each rescaling the layer and rewriting the box under the cursor.
            box.native.setKeyboardTracking(False)
            box.changed.connect(lambda size, role=role: self._set_size(role, size))
        self.reuse = CheckBox(text="reuse CoMIRs already shown", value=True, visible=expert)
        self.register_button = PushButton(text="Register")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, max=1, visible=False)  # shown once it has news
        self.verdict = StatusLine()
        self.details = StatusLine()
        options = Container(widgets=[self.fixed, self.moving, self.method, self.transform,
                                     self.rotation,
                                     row(*self.sizes.values(), label="µm / px"), self.reuse])
        options.margins = (0, 0, 0, 0)
        # The verdict and the numbers below the labelled options, at the dock's full width.
        super().__init__(labels=False, widgets=[
            options, row(self.register_button, self.stop_button), self.progress, self.verdict,
            self.details])
        self.margins = (0, 0, 0, 0)
        for key, widget in (("transform", self.transform), ("rotation_range", self.rotation),
                            ("method", self.method)):
            restore(widget, key)  # the last session's choices
        self.register_button.clicked.connect(self.register)
        self.stop_button.clicked.connect(session.stop)
        for picker in (self.fixed, self.moving):
            picker.changed.connect(self._choose)
        for event in ("inserted", "removed", "reordered"):
            getattr(viewer.layers.events, event).connect(self.reset_choices)
        connect_while_alive(session.changed, self.refresh, self)
        connect_while_alive(session.models.changed, self._guess_for_model, self)
        self.reset_choices()
        self.refresh("result")  # a dock opened later shows what the session already holds
        self._show_sizes()

    def reset_choices(self, *_):
        viewer = self.session.viewer
        # A picker whose image was removed stays empty: one more click would otherwise register
        # whatever image the choice list fell to (a pair nobody chose). Guesses are for images
        # opened, not for images taken away.
        gone = [picker for picker in (self.fixed, self.moving)
                if picker.value is not None and picker.value not in viewer.layers]
        super().reset_choices()
        for picker in gone:
            picker.value = None
        images = raw_images(viewer)
        opened = any(layer not in self._known_images for layer in images)
        self._known_images = weakref.WeakSet(images)
        fixed, moving = guess_pair(viewer, self.session.models.model) if opened else (None, None)
        chosen = (self.fixed.value, self.moving.value)
        if None in chosen and None not in (fixed, moving) and \
                all(layer in (None, fixed, moving) for layer in chosen):
            # a picker empty: the whole guess (the image opened first may have taken the place
            # the second one fits better: IHC before H&E)
            self.fixed.value, self.moving.value = fixed, moving
        else:
            if self.fixed.value is None and fixed is not None and fixed is not self.moving.value:
                self.fixed.value = fixed
            if self.moving.value is None and moving is not None and moving is not self.fixed.value:
                self.moving.value = moving
        pair = (self.session.fixed, self.session.moving)
        self._choose()
        if (self.session.fixed, self.session.moving) == pair and \
                None in (self.fixed.value, self.moving.value) and not self.session.busy:
            self._show_unfit_hint()  # what fits may change with the images (a new pair says it)

    def _guess_for_model(self, model) -> None:
        """A model whose networks do not take the chosen images (colour or grey): guess again."""
        card = model.card
        chosen = ((self.fixed.value, card.fixed_modality), (self.moving.value, card.moving_modality))
        if all(layer is not None and fits_modality(layer, card, modality)
               for layer, modality in chosen):
            return
        self.fixed.value, self.moving.value = guess_pair(self.session.viewer, model)

    def _show_pair(self) -> None:
        """The pickers at the session's pair: another dock of this viewer may have chosen it."""
        for picker, layer in ((self.fixed, self.session.fixed), (self.moving, self.session.moving)):
            if picker.value is not layer and (layer is None or layer in self.session.viewer.layers):
                with picker.changed.blocked():
                    if layer is not None and layer not in picker.choices:
                        picker.reset_choices()  # a layer just added: this dock may hear of it last
                    picker.value = layer

    def _choose(self, *_):
        self.session.choose(self.fixed.value, self.moving.value)

    def _set_size(self, role: str, size_um: float) -> None:
        layer = getattr(self.session, role)
        if layer is not None:
            set_layer_pixel_size(layer, size_um or None)
            self.session.viewer.reset_view()  # the images' extent in µm changed

    def _show_sizes(self) -> None:
        """The pixel sizes the chosen images' layers record (unknown: both napari's default)."""
        session = self.session
        pair = (session.fixed, session.moving)
        sizes = layer_pixel_sizes(*pair) if None not in pair else (None, None)
        for box, layer, size in zip(self.sizes.values(), pair, sizes, strict=True):
            with box.changed.blocked():
                box.value = size or 0.0
            box.enabled = layer is not None and not session.busy

    def options(self) -> dict:
        return {"transform": self.transform.value, "rotation_range": float(self.rotation.value),
                "method": self.method.value, "reuse_comirs": bool(self.reuse.value)}

    def register(self, from_landmarks: bool = False):
        """Start a registration of the chosen pair (in a worker); None with the reason shown."""
        try:
            return self.session.register(**self.options(), from_landmarks=from_landmarks)
        except ComirError as exc:
            self.show_problem(self._unfit_hint() or str(exc))
            return None

    def show_problem(self, message: str) -> None:
        """A problem in the dock (in red, where the verdict goes) and as a notification."""
        self.verdict.value, self.details.value = f"⚠ {message}", ""
        self.verdict.native.setStyleSheet(_BAD)
        show_error(f"Register: {message}")

    def refresh(self, what: str) -> None:
        session, job = self.session, self.session.job
        busy = session.busy
        self.register_button.enabled = not busy
        # Teaching has its own Stop, beside its progress; this one stops the rest (a slide written)
        ours = session.job_kind != "teach"
        self.stop_button.enabled = busy and ours and job.state is JobState.RUNNING
        if what in ("pair", "sizes", "job"):
            self._show_sizes()
        if what == "event" and job is not None and session.last_event is not None:
            if session.job_kind == "register":
                self.progress.visible = True
                show_progress(self.progress, session.last_event)
                eta = eta_text(job)
                self.details.value = session.last_event.message + (f" · {eta}" if eta else "")
            return
        if what == "job" and job is not None and session.job_kind == "register":
            if job.state is JobState.RUNNING:
                self.progress.visible = True
                self.verdict.value, self.details.value = "registering…", ""
                self.verdict.native.setStyleSheet("")
            elif job.state is JobState.STOPPING:
                self.verdict.value = "stopping…"
            elif job.state is JobState.STOPPED:
                reason = session.stop_reason  # not by Stop: an image removed
                self.verdict.value = f"⚠ stopped: {reason}" if reason else "stopped"
                self.verdict.native.setStyleSheet(_BAD if reason else "")
                self.details.value = ""
                self.progress.max, self.progress.value = 1, 0  # not a busy bar
                self.progress.native.setFormat("stopped")
                if session.result is not None and session.result_pair:  # it still stands
                    text, tone = verdict_text(session.result)
                    self.verdict.value = f"stopped; the earlier result stands: {text}"
                    self.verdict.native.setStyleSheet(_TONE_STYLES[tone])
                    self.details.value = result_text(session.result, *session.result_pair)
                    self.details.tooltip = details_tooltip(session.result)
            elif job.state is JobState.FAILED:
                model, pair = session.models.model, session.job_layers
                hint = swap_fits_hint(model.card, *pair) if model is not None and len(pair) == 2 else None
                self.verdict.value = f"⚠ failed: {job.error}" + (f" ({hint})" if hint else "")
                self.details.value = ""
                self.progress.max, self.progress.value = 1, 0  # not a busy bar
                self.progress.native.setFormat("failed")
                self.verdict.native.setStyleSheet(_BAD)
            if job.state is not JobState.FINISHED:
                return
        chosen = (session.fixed, session.moving)
        shown = session.result is not None and session.result_pair == chosen
        # ... but a failed or refused attempt at the pair, newer than its result, stays said
        again = shown and not session.presenting and session.failed_pair != chosen
        if what == "result" or (what in ("job", "sizes") and again):
            self._show_result()  # a new result is being presented: not the earlier one meanwhile
        if what == "pair":
            self._show_pair()
            if not busy:  # a new pair: nothing done for it yet
                self.progress.value = 0
                self.progress.native.setFormat("")
                self.progress.visible = False
                if not shown:  # nor a result or problem of another pair
                    self._show_unfit_hint()

    def _unfit_hint(self) -> str | None:
        """With a picker empty, why no open image fits the model, and what to do."""
        model = self.session.models.model
        if model is None or (self.fixed.value is not None and self.moving.value is not None):
            return None
        return unfit_pair_hint(self.session.viewer, model)

    def _show_unfit_hint(self) -> None:
        """The verdict line says what to do when no open image fits the model (else blank)."""
        hint = self._unfit_hint()
        self.verdict.value, self.details.value = f"⚠ {hint}" if hint else "", ""
        self.verdict.native.setStyleSheet(_BAD if hint else "")

    def _show_result(self) -> None:
        """The session's result, if any, in the verdict and details lines; else blank."""
        session = self.session
        if session.result is not None and session.result_pair:
            text, tone = verdict_text(session.result)
            model = session.models.model
            hint = None if tone != BAD or model is None else swapped_hint(model.card,
                                                                         *session.result_pair)
            self.verdict.value = f"{text} ({hint})" if hint else text
            self.verdict.native.setStyleSheet(_TONE_STYLES[tone])
            self.details.value = result_text(session.result, *session.result_pair)
            self.details.tooltip = details_tooltip(session.result)
            self.progress.max = max(self.progress.max, 1)
            self.progress.value = self.progress.max
            self.progress.native.setFormat("done")  # not what a stopped run left
            self.progress.visible = True
        else:
            self.verdict.value = self.details.value = ""
