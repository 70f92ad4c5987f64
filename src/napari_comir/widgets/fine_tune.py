"""Fine-tune widget: train the current model further on aligned image pairs, live."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from magicgui.widgets import (
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info

from .. import api
from ..core.errors import ComirError, InputError
from ..core.progress import Progress
from ..core.training import FINE_TUNE_LR, TrainConfig
from ..core.zoo import ComirModel
from . import _worker
from ._docking import tabify_with_siblings
from ._layers import StatusLine, cap_height, image_data, modality_pickers, percentile_limits, upsert_image
from ._loss_plot import LossPlot
from ._state import library, state_for

PREVIEW_LAYER = "CoMIR preview (fine-tuning)"
#: Gap between the images and the preview beside them, as a fraction of the images' width.
PREVIEW_GAP = 0.05
#: Steps between two held-out measures (16 patch pairs through both networks: ~0.1 s on a CPU).
HOLDOUT_EVERY = 10


@dataclass
class PairEntry:
    """One training pair: two image layers, or images read from a pairs CSV."""

    label: str
    moving: Image | np.ndarray
    fixed: Image | np.ndarray

    def aligned_pair(self, model: ComirModel) -> api.AlignedPair:
        def data(item):
            return image_data(item, "fine-tuning") if isinstance(item, Image) else item
        card = model.card
        return api.AlignedPair({card.moving_modality: data(self.moving),
                                card.fixed_modality: data(self.fixed)}, name=self.label)


class FineTuneWidget(Container):
    """Choose aligned pairs, train with Start/Stop and a live loss curve, save as a user model."""

    def __init__(self, napari_viewer):
        self.state = state_for(napari_viewer)  # this viewer's model
        self.viewer = napari_viewer
        self._moving, self._fixed = modality_pickers(napari_viewer)
        self._add = PushButton(text="Add pair")
        self._pairs_list = cap_height(Select(label="aligned pairs", choices=self._pair_choices), 90)
        self._remove = PushButton(text="Remove selected pairs")
        self._csv = FileEdit(label="pairs CSV", filter="*.csv", value="",
                             tooltip="Columns name, <moving>_file, <fixed>_file (paths relative "
                             "to the CSV)")
        self._load_csv = PushButton(text="Add pairs from CSV")
        self._steps = SpinBox(label="steps", min=1, max=100_000, value=300)
        self._lr = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-4, value=FINE_TUNE_LR)
        self._patch = SpinBox(label="patch size", min=32, max=1024, step=16, value=128)
        self._batch = SpinBox(label="batch", min=2, max=256, value=8,
                              tooltip="Other patches of the batch are the negatives of InfoNCE")
        self._preview_every = SpinBox(label="preview every", min=0, max=100_000, value=0,
                                      tooltip="Show the CoMIR of the first pair every N steps "
                                      "(0 = off)")
        self._start = PushButton(text="Start")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(value=0, max=1)
        self._status = StatusLine()
        self._heldout: float | None = None
        self._name = LineEdit(label="save as", value="my-bf-shg")
        self._save = PushButton(text="Save user model", enabled=False)
        super().__init__(widgets=[
            self._moving, self._fixed, self._add, self._pairs_list, self._remove, self._csv,
            self._load_csv, self._steps, self._lr, self._patch, self._batch, self._preview_every,
            self._start, self._stop, self._progress, self._status, self._name, self._save])
        tabify_with_siblings(self, tab_title="Fine-tune")
        self.loss_plot = LossPlot()
        self.native.layout().insertWidget(self.native.layout().count() - 2, self.loss_plot)
        self.pairs: list[PairEntry] = []
        self.model: ComirModel | None = None  # the model being / last fine-tuned
        self.job: _worker.Job | None = None
        self._add.clicked.connect(self.add_pair)
        self._remove.clicked.connect(self._remove_selected)
        self._load_csv.clicked.connect(lambda: self.add_pairs_csv(self._csv.value))
        self._start.clicked.connect(self.start)
        self._stop.clicked.connect(self.stop)
        self._save.clicked.connect(lambda: self.save(self._name.value))
        for event in ("inserted", "removed", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self.reset_choices)

    # ------------------------------------------------------------------ pairs
    def _pair_choices(self, _widget=None):
        return [(entry.label, index) for index, entry in enumerate(getattr(self, "pairs", []))]

    def add_pair(self, moving: Image | None = None, fixed: Image | None = None) -> None:
        """Add an aligned pair of layers (default: the two chosen in the combo boxes)."""
        moving = moving if isinstance(moving, Image) else self._moving.value
        fixed = fixed if isinstance(fixed, Image) else self._fixed.value
        if moving is None or fixed is None or moving is fixed:
            show_error("Fine-tune: choose two different layers, moving and fixed modality")
            return
        self.pairs.append(PairEntry(f"{moving.name} ↔ {fixed.name}", moving, fixed))
        self._pairs_list.reset_choices()

    def add_pairs_csv(self, path) -> None:
        """Add the pairs listed in a CSV (columns name, <moving>_file, <fixed>_file)."""
        try:
            card = self.state.get().card
            pairs = api.read_pairs_csv(path, (card.moving_modality, card.fixed_modality))
        except ComirError as exc:
            show_error(f"Fine-tune: {exc}")
            return
        for pair in pairs:
            self.pairs.append(PairEntry(f"csv: {pair.name}", pair.images[card.moving_modality],
                                        pair.images[card.fixed_modality]))
        self._pairs_list.reset_choices()

    def _remove_selected(self):
        drop = set(self._pairs_list.value or [])
        self.pairs = [entry for index, entry in enumerate(self.pairs) if index not in drop]
        self._pairs_list.reset_choices()

    # ------------------------------------------------------------------ training
    def config(self) -> TrainConfig:
        return api.fine_tune_config(steps=int(self._steps.value), lr=float(self._lr.value),
                                    patch_size=int(self._patch.value),
                                    batch_size=int(self._batch.value), device=self.state.device)

    def start(self) -> _worker.Job | None:
        """Fine-tune a copy of the current model on the pairs (the bundled one never changes)."""
        try:
            if not self.pairs:
                raise InputError("add at least one aligned pair (moving + fixed layer)")
            base = self.state.get()
            pairs = [entry.aligned_pair(base) for entry in self.pairs]
            config = self.config()
            # A readable measure as it trains: held-out patches matched, when every pair has
            # room for a held-out band one patch wide beside the patches it trains on.
            if all(max(np.shape(next(iter(p.images.values())))[:2]) >= 2 * config.patch_size
                   for p in pairs):
                config.holdout_every = HOLDOUT_EVERY
            config.validate()
        except ComirError as exc:
            show_error(f"Fine-tune: {exc}")
            return None
        self.model = copy.deepcopy(base)
        self._started_from = base.card.name
        self._tuning = {"pairs": [entry.label for entry in self.pairs], "lr": config.lr,
                        "batch_size": config.batch_size, "patch_size": config.patch_size}
        self.loss_plot.clear()
        self._heldout = None
        self._start.enabled, self._stop.enabled, self._save.enabled = False, True, False
        self._status.value = "training…"
        self.job = _worker.Job()
        # copy_model=False: the widget already trains a copy and must keep it to survive Stop.
        events = api.fine_tune(self.model, pairs, config, copy_model=False,
                               preview_every=int(self._preview_every.value))
        _worker.run_job(lambda: events, on_event=self._on_event,
                        on_done=self._on_done, progress_bar=self._progress, job=self.job,
                        title="Fine-tune")
        return self.job

    def stop(self) -> None:
        """Stop after the current step; the model keeps the weights of the last finished step."""
        if self.job is not None:
            self.job.quit()
            self._status.value = "stopping…"

    def _on_event(self, event: Progress):
        if event.stage == "train":
            self.loss_plot.append(event.metrics.get("loss", float("nan")))
            if "heldout_match" in event.metrics:
                self._heldout = event.metrics["heldout_match"]
            matched = "" if self._heldout is None else (
                f" · held-out patches matched {self._heldout:.0%} (chance 3 %)")
            eta = _worker.eta_text(self.job)
            self._status.value = (f"step {event.step}/{event.total} · loss "
                                  f"{event.metrics['loss']:.3g}{matched}" + (f"\n{eta}" if eta else ""))
        elif event.stage == "preview" and event.result is not None:
            comir = event.result[..., 0] if event.result.shape[-1] == 1 else event.result[..., :3]
            first = PREVIEW_LAYER not in self.viewer.layers
            layer = upsert_image(self.viewer, PREVIEW_LAYER, comir, rgb=False,
                                 contrast_limits=percentile_limits(comir))
            if first:  # under the inputs it was never seen, over them it would hide them
                self._place_beside_images(layer)

    def _place_beside_images(self, preview) -> None:
        """Put the preview to the right of every other layer (on the first pair's moving
        image's scale, when a layer) and fit the view to both."""
        moving = self.pairs[0].moving if self.pairs else None
        if isinstance(moving, Image):
            preview.scale = tuple(moving.scale)[-2:]
        others = [layer for layer in self.viewer.layers if layer is not preview]
        if not others:
            return
        top = min(layer.extent.world[0][-2] for layer in others)
        right = max(layer.extent.world[1][-1] for layer in others)
        preview.translate = (top, right + PREVIEW_GAP * (right - min(
            layer.extent.world[0][-1] for layer in others)))
        self.viewer.reset_view()

    def _on_done(self, job: _worker.Job):
        self._start.enabled, self._stop.enabled = True, False
        self.model.eval()
        steps = len(self.loss_plot.values)
        if job.failed:
            self._status.value = f"failed after {steps} steps"
            return
        api.record_fine_tuning(self.model, self._started_from, {
            **self._tuning, "steps": steps, "recipe": "the Fine-tune dock",
            **({} if self._heldout is None else {"heldout_match": round(self._heldout, 3)})})
        matched = "" if self._heldout is None else f" · held-out patches matched {self._heldout:.0%}"
        self._status.value = (f"stopped at step {steps}" if job.stopped else f"done: {steps} steps") + \
            matched + _unaligned_warning(self.loss_plot.values, self._heldout)
        self._save.enabled = steps > 0

    def save(self, name: str):
        """Save the fine-tuned model as a user model; it appears in the Model widget's list."""
        if self.model is None:
            show_error("Fine-tune: nothing to save yet, train first")
            return None
        try:
            path = api.save_user_model(self.model, name)
        except ComirError as exc:
            show_error(f"Fine-tune: {exc}")
            return None
        show_info(f"saved model {name!r} to {path}")
        library.models_saved.emit(name)
        return path


#: Steps at least, and the factor by which the last quarter's mean loss must exceed the first's,
#: for the dock to say training made the model worse (an unaligned pair: 2.1 -> 2.5 in 20 steps).
#: Only when no held-out patches were matched: a model that already fits its pairs swings
#: between 1e-7 and 0.2 from step to step, and its mean "rose" 5x while held-out matches went
#: from 69 to 84 % (three aligned bf_shg pairs, 46 steps).
RISING_LOSS_STEPS, RISING_LOSS_FACTOR = 8, 1.05
#: Share of held-out patches matched below which the pairs look unaligned (chance is 3 %): a raw
#: H&E 39 px off its SHG matched 0 % after 40 steps while its loss fell; aligned, 72 %.
UNALIGNED_MATCH_SHARE = 0.1


def _unaligned_warning(losses: list[float], heldout_match: float | None) -> str:
    """A warning when the run says the pairs may not be aligned (held-out patches found their
    partners hardly more often than by chance; unmeasured, the loss rose), else ""."""
    if heldout_match is not None:  # what the model does on patches it was not taught, measured
        if heldout_match >= UNALIGNED_MATCH_SHARE:
            return ""
        sign = f"held-out patches matched only {heldout_match:.0%} (chance 3 %)"
    else:
        values = np.asarray(losses, float)
        values = values[np.isfinite(values)]
        if len(values) < RISING_LOSS_STEPS:
            return ""
        quarter = len(values) // 4
        early, late = values[:quarter].mean(), values[-quarter:].mean()
        if late <= early * RISING_LOSS_FACTOR:
            return ""
        sign = f"the loss rose ({early:.3g} -> {late:.3g})"
    return (f"\n⚠ {sign}: are the pairs aligned? This dock takes aligned pairs; register, Accept "
            "and teach a pair in the guided dock instead. Save only if you know why")
