"""Model widget: choose the CoMIR model (bundled, user-saved or a file) and the device."""

from __future__ import annotations

import json

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, TextEdit
from napari.utils.notifications import show_error

from .. import api
from ..core.defaults import DEFAULT_MODEL_NAME
from ..core.device import DEVICES
from ..core.errors import ComirError
from ..core.zoo import ComirModel
from ._connections import connect_while_alive
from ._docking import tabify_with_siblings
from ._state import library, state_for


def _checked_lines(metrics: dict) -> list[str]:
    """How the model was checked, in a line or two (the full record is under "details")."""
    lines = []
    registration = metrics.get("val_registration")
    if isinstance(registration, dict):  # a user's card may hold anything here: numbers only
        parts = [f"{'±' + name + '°' if name.isdigit() else name} {entry['success_pct']:g} % "
                 f"(median {entry['median_error_px']:g} px)" for name, entry in registration.items()
                 if isinstance(entry, dict) and all(isinstance(entry.get(key), (int, float))
                                                    for key in ("success_pct", "median_error_px"))]
        if parts:
            lines.append("checked on held-out pairs: " + ", ".join(parts))
    checks = metrics.get("checks")
    checks = [check for check in checks if isinstance(check, dict)] if isinstance(checks, list) else []
    if checks:
        registered = sum(bool(check.get("registered")) for check in checks)
        lines.append(f"checked on {metrics.get('checked_on', 'its pairs')}: {registered} of "
                     f"{len(checks)} registered")
    if not lines and "started_from_metrics" in metrics:
        lines.append("checked: not on pairs held out of its fine-tuning (the checks of the model "
                     "it started from are under details)")
    return lines


def _trained_lines(training: dict) -> list[str]:
    """What the model was trained on, in a line."""
    if not training:
        return ["trained: unknown"]
    pairs = training.get("pairs")
    number = lambda key: isinstance(training.get(key), (int, float))  # noqa: E731
    parts = [f"{len(pairs)} pair(s)" if isinstance(pairs, list) else None,
             f"{training['steps']:g} steps" if number("steps") else None,
             f"{training['minutes']:g} min" if number("minutes") else
             f"{training['seconds']:g} s" if number("seconds") else None]
    start = str(training.get("started_from") or "")
    origin = "" if not start else f"; {start}" if start.startswith("both networks") else f"; from {start}"
    return ["trained: " + ", ".join(str(part) for part in parts if part) + origin]


def card_text(model: ComirModel) -> str:
    """Plain-text model card: what a user needs to judge whether the model fits their images."""
    card = model.card
    lines = [f"{card.name}  (v{card.version}, device {model.device})"]
    if card.description:
        lines.append(card.description)
    for role, modality in (("moving", card.moving_modality), ("fixed", card.fixed_modality)):
        spec = card.modalities[modality]
        lines.append(f"{role}: {modality} — {spec.channels} channel(s)"
                     f"{', log1p' if spec.log1p else ''}, percentiles {tuple(spec.percentiles)}")
    lines.append(f"verdict: likely right from score {card.score_threshold:g} and detail score "
                 f"{card.detail_threshold:g}")
    lines += _checked_lines(card.metrics) + _trained_lines(card.training)
    lines.append("\ndetails")
    lines.append(f"CoMIR channels: {card.comir_channels}, tau {card.tau}, critic {card.critic}")
    lines.append(f"architecture: {json.dumps(card.architecture)}")
    lines.append("training: " + (json.dumps(card.training, indent=1) if card.training
                                 else "untrained / unknown"))
    lines.append("validation metrics: " + (json.dumps(card.metrics, indent=1) if card.metrics
                                           else "none recorded"))
    if card.sha256:
        lines.append(f"weights sha256: {card.sha256[:16]}…")
    return "\n".join(lines)


class ModelWidget(Container):
    """Pick the model all CoMIR widgets use; shows its model card read-only."""

    def __init__(self, napari_viewer):
        self.state = state_for(napari_viewer)  # this viewer's model
        self._model_name = ComboBox(label="model", choices=self._model_names, nullable=True,
                                    tooltip="Bundled and saved user models")
        self._file = FileEdit(label="or file", filter="*.json *.safetensors", value="",
                              tooltip="A model card (.json), or weights (.safetensors) beside it")
        self._load_file = PushButton(text="Load file")
        self._device = ComboBox(label="device", choices=list(DEVICES), value=self.state.device,
                                tooltip="auto = CUDA, then Apple MPS, then CPU")
        self._c4 = CheckBox(text="C4-averaged CoMIRs (4x slower)", value=False,
                            tooltip="Average each CoMIR over the 4 quarter-turns of the image: exactly "
                            "equivariant to quarter turns; with bf-shg a median registration error of "
                            "0.33-0.35 instead of 0.37-0.38 px on the val benchmark, for 4x the "
                            "inference time. Worth it for models trained without the equivariance term")
        self._refresh = PushButton(text="Refresh list")
        self._status = Label(value="")
        self._status.native.setWordWrap(True)
        self._card = TextEdit(tooltip="The model card: what the model is for, how it was checked "
                              "and trained, its verdict thresholds; the record under 'details'")
        self._card.read_only = True
        self._card.native.setMinimumHeight(260)
        choices = Container(widgets=[self._model_name, self._refresh, self._file, self._load_file,
                                     self._device, self._c4])
        choices.margins = (0, 0, 0, 0)
        # The status and the card span the dock: beside a label column the card's lines were
        # wrapped at a third of its width.
        super().__init__(labels=False, widgets=[choices, self._status, self._card])
        tabify_with_siblings(self, napari_viewer, tab_title="Model")
        self.viewer = napari_viewer
        self._model_name.changed.connect(self._on_name)
        self._load_file.clicked.connect(self._on_file)
        self._device.changed.connect(self._on_device)
        self._c4.changed.connect(self._on_c4)
        self._refresh.clicked.connect(self.refresh)
        connect_while_alive(self.state.changed, self._show, self)
        connect_while_alive(library.models_saved, self._on_saved, self)
        if self.state.model is not None:
            self._show(self.state.model)
        elif self._model_name.choices:
            with self._model_name.changed.blocked():
                self._model_name.value = self._initial_choice()
            self.load(self._model_name.value)

    @staticmethod
    def _model_names(_widget=None) -> list[str]:
        return list(api.list_models())

    def _initial_choice(self) -> str:
        names = self._model_name.choices
        return DEFAULT_MODEL_NAME if DEFAULT_MODEL_NAME in names else names[0]

    def refresh(self) -> None:
        """Re-read the bundled and user model folders."""
        self._model_name.reset_choices()

    def load(self, name_or_path: str) -> bool:
        """Load and make current; errors become notifications. Returns True on success."""
        try:
            self.state.load(str(name_or_path), self._device.value)
        except ComirError as exc:
            show_error(f"CoMIR model: {exc}")
            still = f"; still using {self.state.source}" if self.state.model is not None else ""
            self._status.value = f"⚠ load failed: {exc}{still}"
            return False
        return True

    def _on_name(self, name):
        if name and name != self.state.source:
            self.load(name)

    def _on_file(self):
        path = self._file.value
        if path and str(path) not in ("", "."):
            self.load(str(path))

    def _on_device(self, device):
        try:
            self.state.set_device(device)
        except ComirError as exc:
            show_error(f"CoMIR model: {exc}")
            self._device.value = "auto"

    def _on_c4(self, enabled: bool):
        if self.state.model is not None:
            self.state.model.card.c4_average = bool(enabled)

    def _on_saved(self, name: str):
        self.refresh()

    def _show(self, model: ComirModel):
        self._card.value = card_text(model)
        with self._c4.changed.blocked():
            self._c4.value = model.card.c4_average
        self._status.value = f"current: {self.state.source}"
        source = self.state.source
        listed = source if source in self._model_name.choices else None  # else a file's
        if self._model_name.value != listed:
            with self._model_name.changed.blocked():
                self._model_name.value = listed
