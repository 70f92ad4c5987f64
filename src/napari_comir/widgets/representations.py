"""Representations widget: compute the CoMIRs of a moving and a fixed image layer."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container, ProgressBar, PushButton
from napari.layers import Image, Layer
from napari.utils.notifications import show_error

from .. import api
from ..core.errors import ComirError
from ..core.zoo import ComirModel
from . import _worker
from ._docking import tabify_with_siblings
from ._layers import (
    StatusLine,
    image_data,
    layer_shape,
    modality_pickers,
    percentile_limits,
    upsert_image,
)
from ._state import state_for


def comir_layer_name(source: Layer) -> str:
    return f"CoMIR ({source.name})"


def find_comir(viewer, source: Layer, model: ComirModel) -> np.ndarray | None:
    """A CoMIR already shown for ``source`` with ``model`` (None if absent or stale)."""
    name = comir_layer_name(source)
    if name not in viewer.layers:
        return None
    meta = viewer.layers[name].metadata
    comir = meta.get("comir")
    if (meta.get("comir_source") != source.name or meta.get("comir_model") != model.card.name
            or meta.get("comir_source_id") != id(source.data) or comir is None
            or comir.shape[:2] != layer_shape(source)[:2]):
        return None
    return comir


def show_comir(viewer, source: Layer, comir: np.ndarray, model: ComirModel, modality: str) -> Image:
    """Add or update the layer "CoMIR (<source>)" on the source's grid.

    One channel is shown as is; 2-3 channels as RGB stretched to [0, 1]. The raw CoMIR is
    kept in metadata["comir"] so registration can reuse it.
    """
    meta = {"comir": comir, "comir_source": source.name, "comir_source_id": id(source.data),
            "comir_model": model.card.name, "comir_modality": modality}
    if comir.shape[-1] == 1:
        data, kwargs = comir[..., 0], {"contrast_limits": percentile_limits(comir[..., 0])}
    else:
        channels = [np.clip((c - lo) / (hi - lo), 0, 1) for c in np.moveaxis(comir, -1, 0)
                    for lo, hi in [percentile_limits(c)]]
        channels += [np.zeros_like(channels[0])] * (3 - len(channels))
        data, kwargs = np.stack(channels, -1).astype(np.float32), {"rgb": True}
    return upsert_image(viewer, comir_layer_name(source), data, like=source, metadata=meta,
                        affine=np.asarray(source.affine.affine_matrix)[-3:, -3:], **kwargs)


class RepresentationsWidget(Container):
    """Compute both CoMIRs (moving and fixed modality of the current model) in a worker."""

    def __init__(self, napari_viewer):
        self.state = state_for(napari_viewer)  # this viewer's model
        self.viewer = napari_viewer
        self._moving, self._fixed = modality_pickers(napari_viewer)
        self._run = PushButton(text="Compute CoMIRs")
        self._stop = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(value=0, max=1)
        self._status = StatusLine()
        super().__init__(widgets=[self._moving, self._fixed, self._run, self._stop,
                                  self._progress, self._status])
        tabify_with_siblings(self, self.viewer, tab_title="CoMIRs")
        self._run.clicked.connect(self.run)
        self._stop.clicked.connect(lambda: self.job and self.job.quit())
        self.job: _worker.Job | None = None
        for event in ("inserted", "removed", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self.reset_choices)
        self._guess_layers()

    def _guess_layers(self):
        """Default: an RGB layer as moving (BF) and a grey non-CoMIR layer as fixed (SHG)."""
        images = [lay for lay in self.viewer.layers
                  if isinstance(lay, Image) and "comir_source" not in lay.metadata]
        rgb = [lay for lay in images if lay.rgb]
        grey = [lay for lay in images if not lay.rgb]
        if rgb and self._moving.value is None:
            self._moving.value = rgb[0]
        if grey and self._fixed.value is None:
            self._fixed.value = grey[0]

    def reset_choices(self, *_):
        super().reset_choices()
        self._guess_layers()

    def run(self) -> _worker.Job | None:
        """Compute (or recompute) the CoMIRs of the chosen layers; layers update in place."""
        try:
            model = self.state.get()
            card = model.card
            sources = {"moving": self._moving.value, "fixed": self._fixed.value}
            jobs = []
            for role, layer in sources.items():
                if layer is not None:
                    modality = card.moving_modality if role == "moving" else card.fixed_modality
                    jobs.append((layer.name, image_data(layer, "showing its CoMIR"), modality))
            if not jobs:
                show_error("CoMIR representations: choose at least one image layer")
                return None
        except ComirError as exc:
            show_error(f"CoMIR representations: {exc}")
            return None
        modality_of = {name: modality for name, _, modality in jobs}
        layers = {layer.name: layer for layer in sources.values() if layer is not None}

        def done(job):
            self._run.enabled, self._stop.enabled = True, False
            if job.failed or job.stopped or not isinstance(job.result, dict):
                self._status.value = "stopped" if job.stopped else "failed"
                return
            for name, comir in job.result.items():
                show_comir(self.viewer, layers[name], comir, model, modality_of[name])
            self._status.value = f"CoMIRs of {', '.join(job.result)} ({card.name})"

        self._run.enabled, self._stop.enabled = False, True
        self._status.value = f"computing the CoMIRs of {', '.join(layers)}…"  # not the last run's
        self.job = _worker.Job()
        _worker.run_job(api.comir_events, model, jobs, on_done=done, progress_bar=self._progress,
                        job=self.job, title="CoMIR representations")
        return self.job
