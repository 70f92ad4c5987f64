"""One registration session per viewer: what the panels of the docks observe and act through.

The session owns the state of a registration in a viewer — the chosen pair, the result and the
pair it belongs to, the accepted layer, the review view, the running job — and runs every long
step (register, accept a slide, teach) in a worker thread. Panels (``_run_panel``,
``_review_panel``, ``_keep_panel``, ``_landmarks_panel``, ``_teach_panel``) hold controls only:
they call the session and refresh on :attr:`RegistrationSession.changed`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from napari.layers import Layer, Points, Shapes
from napari.utils.notifications import show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from .. import api
from ..core.errors import ComirError, InputError
from ..core.io.files import check_outputs_apart
from ..core.progress import Progress
from ..core.registration import RegistrationResult
from ..core.registration.landmarks import coverage_warning, fit_landmarks
from ..core.tiled_resample import check_resampled_path, resample_to_file
from ..core.transforms import AffineTransform
from . import _export, _review, _slide_output
from ._apply import apply_to_layer, carried_onto, carried_pixels, shown_matrix
from ._landmarks import landmark_names, landmark_pairs
from ._layers import (
    image_data,
    is_multiscale,
    layer_files,
    layer_pixel_size,
    layer_pixel_sizes,
    layer_shape,
    made_by_plugin,
    raw_images,
    registration_data,
)
from ._state import ModelState, library, real_viewer, state_for
from ._verdict import BAD, verdict_text
from ._worker import Job, JobState, run_job
from .inspect import AGREEMENT_LAYER
from .representations import comir_layer_name, find_comir


class RegistrationSession:
    """The registration state of one viewer.

    Attributes
    ----------
    models : ModelState
        The viewer's CoMIR model.
    fixed, moving : Layer or None
        The pair chosen for the next registration.
    result : RegistrationResult or None
        The last result, of the layers in :attr:`result_pair`.
    accepted : Layer or None
        The layer the last Accept made (or opened from a written slide).
    accepted_result : RegistrationResult or None
        The result :attr:`accepted` was made from.
    accepted_pair : (Layer, Layer) or None
        Its (fixed, moving) layers: the kept pair teaching learns from.
    review_view : str
        What the review shows (one of ``_review.VIEWS``).
    after : bool
        Whether the moving image is shown under the found transform (else as it was).
    job, job_kind : Job or None, str
        The job running or last run, and what it does ("register", "accept", "teach").
    """

    #: What changed: "pair", "sizes" (a chosen image's pixel size), "result", "accepted",
    #: "review", "job", "event" (a job's progress).
    changed = Signal(str)

    def __init__(self, viewer):
        # Weakly: the registry below holds the session, which must not keep a closed viewer
        # (its layers and their data) alive.
        self._viewer = weakref.ref(viewer)
        self.models: ModelState = state_for(viewer)
        self.fixed: Layer | None = None
        self.moving: Layer | None = None
        self.result: RegistrationResult | None = None
        self.result_pair: tuple[Layer, Layer] | None = None
        #: The pair's (fixed, moving) pixel sizes (µm, None unknown) when the result was found.
        self.result_sizes: tuple[float | None, float | None] | None = None
        self.accepted: Layer | None = None
        self.accepted_result: RegistrationResult | None = None
        self.accepted_pair: tuple[Layer, Layer] | None = None
        self.review_view: str = _review.DEFAULT_VIEW
        self.after = True
        self.review_layers: tuple[Layer, ...] = ()
        #: The pair whose last Register was refused (bad input) or failed, until another pair is
        #: chosen, a size of it changes or it registers: newer than its result, if it has one.
        self.failed_pair: tuple[Layer | None, Layer | None] | None = None
        #: The user's layers hidden while the review shows the images (see _hide_under_review).
        self._covered: list[Layer] = []
        self.review_images: dict = {}  # the overlay's images of the result, made in the worker
        self.job: Job | None = None
        self.job_kind = ""
        self.job_layers: tuple[Layer, ...] = ()  # the layers the running job reads
        self.stop_reason = ""  # why the job was stopped, when not by Stop
        self.presenting = False
        self.last_event: Progress | None = None
        #: The CoMIRs of the last registered pair, by layer: the review's "CoMIRs" and
        #: "agreement" views show them, the next registration of the same images reuses them.
        self.comirs: dict[Layer, tuple[str, int, np.ndarray]] = {}
        #: Points and shapes layers made empty while the moving image was shown registered,
        #: with how it was shown then (its data -> world matrix): drawn over the preview.
        self.drawn_over_preview: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: Those made while a deformable result showed the moving image warped onto the fixed
        #: grid: drawn where they belong on it.
        self.drawn_over_field: weakref.WeakSet = weakref.WeakSet()
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.events.inserted.connect(self._on_inserted)

    # ------------------------------------------------------------------ state
    @property
    def viewer(self):
        """The session's viewer (None once it is gone)."""
        return self._viewer()

    @property
    def busy(self) -> bool:
        """A job runs, or its result is being shown."""
        return self.presenting or (self.job is not None and self.job.running)

    def choose(self, fixed: Layer | None, moving: Layer | None) -> None:
        if (fixed, moving) != (self.fixed, self.moving):
            for layer in (self.fixed, self.moving):
                if layer is not None:
                    layer.events.scale.disconnect(self._on_scale)
            self.fixed, self.moving, self.failed_pair = fixed, moving, None
            for layer in (fixed, moving):
                if layer is not None:
                    layer.events.scale.connect(self._on_scale)
            self.changed.emit("pair")

    def _on_scale(self, event=None) -> None:
        """A chosen image's pixel size (its layer's scale) changed: what the docks say follows.
        A result of that image still maps its pixels (exports now carry the new sizes); its
        review is laid out again on the images' new grids."""
        if self.result_pair is not None and event is not None and event.source in self.result_pair \
                and not self.busy:
            fixed, moving = self.result_pair
            self.review_images = _review.review_images(fixed, moving, self.result.transform)
            shown = self.result.transform if self.after else AffineTransform.rigid()
            self.review_layers = _review.show_review(self.viewer, fixed, moving, self.review_images,
                                                     shown)
            self.set_review_view(self.review_view)  # its layers shown or hidden again
            self.place_moving()
        if event is not None and event.source in (self.fixed, self.moving):
            self.failed_pair = None  # refused or failed for the sizes it had, maybe
        self.changed.emit("sizes")

    def chosen_pair(self) -> tuple[Layer, Layer]:
        if self.fixed is None or self.moving is None or self.fixed is self.moving:
            raise InputError("choose two different image layers, fixed and moving")
        return self.fixed, self.moving

    def require_result(self) -> tuple[AffineTransform, Layer, Layer]:
        if self.result is None or self.result_pair is None:
            raise InputError("register first")
        return (self.result.transform, *self.result_pair)

    def stop(self, *, reason: str = "") -> None:
        """Stop the running job; ``reason``: why, when the user did not press Stop."""
        if self.busy:
            self.stop_reason = reason
            self.job.quit()
            self.changed.emit("job")

    def _on_inserted(self, event) -> None:
        """Remember a points or shapes layer made empty while the moving image is shown
        registered: what is drawn in it lies on the preview. A layer opened with data (a second
        channel, annotations read from a file) lies on its image's pixels."""
        layer = event.value
        if self.result is None or not self.after or self.presenting or \
                not isinstance(layer, (Points, Shapes)) or len(layer.data):
            return
        if _review.is_deformable(self.result.transform) and self.review_view in _review.WARPED_VIEWS:
            self.drawn_over_field.add(layer)  # a layer's affine cannot show the field's warp
        else:
            self.drawn_over_preview[layer] = shown_matrix(self.result_pair[1])

    def _on_removed(self, event) -> None:
        """A layer the session refers to is gone: forget what depended on it."""
        layer = event.value
        if self.busy and layer in self.job_layers:
            # The panel of the job says why it stopped. No notification: napari (0.9, Mesa's
            # software OpenGL) crashed drawing the canvas once a toast followed a removal.
            self.stop(reason=f"{layer.name!r} was removed while it ran")
        self.comirs.pop(layer, None)
        if layer in self._covered:
            self._covered.remove(layer)
        if layer is self.accepted or layer in (self.accepted_pair or ()):
            self.accepted = self.accepted_result = self.accepted_pair = None
            self.changed.emit("accepted")
        if self.result_pair is not None and layer in self.result_pair:
            fixed, moving = self.result_pair
            self.result, self.result_pair = None, None
            self._hide_under_review()  # shown again, if a field's review hid it
            if layer is fixed:  # nothing left to be placed over
                _review.unplace_moving(self.viewer, fixed, moving)
            self._remove_review_layers(later=True)
            self.changed.emit("result")
        if layer in (self.fixed, self.moving):
            self.choose(None if layer is self.fixed else self.fixed,
                        None if layer is self.moving else self.moving)

    def _start(self, kind: str, events, on_done, layers: tuple[Layer, ...] = ()) -> Job:
        """Run ``events`` in a worker; removing one of ``layers`` (those it reads) stops it."""
        if self.busy:
            raise InputError(f"wait for the running {self.job_kind} to end, or press Stop")
        self.job_kind, self.last_event = kind, None
        self.job_layers, self.stop_reason = layers, ""

        def event(progress: Progress) -> None:
            self.last_event = progress
            self.changed.emit("event")

        def done(job: Job) -> None:
            if kind in ("register", "fit") and job.state is JobState.FAILED:
                self.failed_pair = layers
            on_done(job)
            self.changed.emit("job")

        self.job = run_job(events, on_event=event, on_done=done, title=kind.capitalize())
        self.changed.emit("job")
        return self.job

    # ------------------------------------------------------------------ register
    def register(self, **options) -> Job:
        """Register the chosen pair in a worker (ComirError at once for bad input; the pair is
        then :attr:`failed_pair`, which step 2 names)."""
        try:
            job = self._register(**options)
        except ComirError:
            self.failed_pair = (self.fixed, self.moving)
            self.changed.emit("job")
            raise
        self.failed_pair = None
        return job

    def _register(self, *, transform: str, rotation_range: float, method: str = "search",
                  reuse_comirs: bool = True, from_landmarks: bool = False) -> Job:
        fixed, moving = self.chosen_pair()
        initial = self.landmark_transform(transform) if from_landmarks else None
        model = self.models.get()
        # A whole slide (multiscale layer) is read lazily, coarse to fine: never all at once.
        fixed_data, moving_data = registration_data(fixed), registration_data(moving)
        slides = is_multiscale(fixed) or is_multiscale(moving)
        comirs = {}
        if reuse_comirs and not slides:
            comirs = {"fixed_comir": self.known_comir(fixed, model),
                      "moving_comir": self.known_comir(moving, model)}
        fixed_size, moving_size = layer_pixel_sizes(fixed, moving)

        def events() -> Iterator[Progress]:
            outcome = None
            for event in api.registration_events(
                    fixed_data, moving_data, model, method=method, transform=transform,
                    rotation_range=rotation_range, fixed_pixel_size=fixed_size,
                    moving_pixel_size=moving_size, initial_transform=initial, **comirs):
                outcome = event.result if event.result is not None else outcome
                yield event
            if outcome is not None:  # the review's images, off the GUI thread too
                yield Progress("review", 0, 1, "preparing the review")
                images = _review.review_images(fixed, moving, outcome.result.transform)
                yield Progress("review", 1, 1, "done", result=(outcome, images))

        def done(job: Job) -> None:
            if job.state is not JobState.FINISHED or not isinstance(job.result, tuple):
                return
            outcome, images = job.result
            self.comirs = {layer: (model.card.name, id(layer.data), comir) for layer, comir in
                           ((fixed, outcome.fixed_comir), (moving, outcome.moving_comir))
                           if comir is not None}
            self.show_result(outcome.result, fixed, moving, images)

        return self._start("register", events, done, (fixed, moving))

    def known_comir(self, layer: Layer, model) -> np.ndarray | None:
        """The CoMIR of ``layer`` by ``model``: from the last registration, or shown by the
        Representations dock; None if neither has it for the layer's current data."""
        name, data_id, comir = self.comirs.get(layer, (None, None, None))
        if name == model.card.name and data_id == id(layer.data):
            return comir
        return find_comir(self.viewer, layer, model)

    def _result_comirs(self, model) -> list[np.ndarray | None]:
        return [self.known_comir(layer, model) for layer in self.result_pair or ()]

    def comir_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """The CoMIRs of the result's pair (InputError, saying why, when there are none)."""
        model = self.models.get()
        comirs = self._result_comirs(model)
        if len(comirs) != 2 or any(comir is None for comir in comirs):
            if self.result is not None and self.result.method == "landmarks":
                why = "a fit to landmarks computes none ('refine from' them does)"
            elif any(self.comirs.get(layer, (model.card.name,))[0] != model.card.name
                     for layer in self.result_pair or ()):
                why = f"they were computed by another model than {model.card.name}"
            else:
                why = ("this pair was registered coarse to fine (whole slides and images over "
                       "1536 px keep no full-size CoMIRs)")
            raise InputError(f"no CoMIRs to compare: {why}; compute them in the Representations "
                             "dock, or choose another review view")
        return comirs[0], comirs[1]

    def landmark_transform(self, transform: str) -> AffineTransform:
        fixed, moving = self.chosen_pair()
        fixed_xy, moving_xy = landmark_pairs(self.viewer, fixed, moving)
        return fit_landmarks(fixed_xy, moving_xy, transform)[0]

    def fit_landmarks(self, transform: str) -> Job:
        """The transform from the landmarks alone, shown like a result but marked as such; its
        review images are made in a worker like a registration's (ComirError at once when the
        landmarks do not pair up)."""
        fixed, moving = self.chosen_pair()
        _, moving_xy = landmark_pairs(self.viewer, fixed, moving)
        warning = coverage_warning(moving_xy, layer_shape(moving)[:2])
        result = RegistrationResult(
            self.landmark_transform(transform), float("nan"), 0.0, "landmarks",
            success_likely=warning is None, reasons=[warning] if warning else [],
            moving_shape=layer_shape(moving)[:2])

        def events() -> Iterator[Progress]:
            yield Progress("review", 0, 1, "preparing the review")
            yield Progress("review", 1, 1, "done", result=_review.review_images(fixed, moving))

        def done(job: Job) -> None:
            if job.state is JobState.FINISHED and job.result is not None:
                self.show_result(result, fixed, moving, job.result)

        return self._start("fit", events, done, (fixed, moving))

    def landmark_fit_error(self) -> float:
        """Mean distance (fixed px) of the landmarks under their own fit, in the result's model."""
        fixed_xy, moving_xy = landmark_pairs(self.viewer, *self.result_pair)
        return float(np.mean(fit_landmarks(fixed_xy, moving_xy, self.result.transform.model)[1]))

    def landmark_residuals(self) -> tuple[np.ndarray, float | None] | None:
        """Each landmark pair's distance (px) under the result, and the fixed pixel size."""
        if self.result is None or self.result_pair is None:
            return None
        fixed, moving = self.result_pair
        try:
            fixed_xy, moving_xy = landmark_pairs(self.viewer, fixed, moving)
        except InputError:
            return None
        if len(fixed_xy) == 0:
            return None
        residuals = np.linalg.norm(self.result.transform.apply_xy(moving_xy) - fixed_xy, axis=1)
        return residuals, layer_pixel_sizes(fixed, moving)[0]

    def show_result(self, result: RegistrationResult, fixed: Layer, moving: Layer,
                    images: dict) -> None:
        """Make ``result`` the session's, with one set of review layers (an earlier pair's go).

        Each new layer costs napari ~0.15 s of the GUI thread (its controls), so the layers
        are added one per event-loop turn: the GUI never freezes for their sum."""
        if fixed not in self.viewer.layers or moving not in self.viewer.layers:
            return  # removed while it ran
        if self.review_layers and [layer.name for layer in self.review_layers] != \
                list(_review.review_names(fixed, moving)):
            self._remove_review_layers()  # another pair's
        # The earlier result's checkerboard, agreement and deformation views (made again when
        # chosen): a deformation view stayed, hidden, under an affine result.
        self._remove_layers(_review.extra_review_layers(self.viewer), one_per_turn=True)
        self._hide_comir_views(fixed, moving)
        self.presenting = True
        layers = {}

        def add(role: str) -> None:
            layers[role] = _review.show_review_layer(self.viewer, fixed, moving, images, role,
                                                     result.transform)

        def finish() -> None:
            self.presenting = False
            if self.result_pair is not None and self.result_pair[1] is not moving:
                # Another image's result is gone: its preview with it (an accepted one lives on
                # in the layer Accept made). A wrong result left it shown out of place.
                _review.unplace_moving(self.viewer, *self.result_pair)
            self.result, self.result_pair = result, (fixed, moving)
            self.result_sizes = layer_pixel_sizes(fixed, moving)
            self.review_layers, self.review_images = (layers["fixed"], layers["moving"]), images
            self.after = True
            self.place_moving()
            self.changed.emit("result")
            text, tone = verdict_text(result)
            if tone == BAD:  # once, whichever docks show it
                show_warning(f"Register: {text}")
            view = self.review_view if self.review_view != "off" else _review.DEFAULT_VIEW
            if view == _review.DEFAULT_VIEW and images.get("best_view") == "CoMIRs" and \
                    all(layer in self.comirs for layer in (fixed, moving)):
                view = "CoMIRs"  # a grey bright field has no stain to show
            try:
                self.set_review_view(view)
            except InputError:  # e.g. no CoMIRs on whole slides
                self.set_review_view(_review.DEFAULT_VIEW)
            self.changed.emit("job")

        _in_turns(lambda: add("moving"), lambda: add("fixed"), finish)

    def _hide_comir_views(self, fixed: Layer, moving: Layer) -> None:
        """Hide the pair's CoMIRs (shown by Representations) and Inspect's agreement map: over
        a result's review or an accepted layer they washed it out (additive)."""
        for name in (*map(comir_layer_name, (fixed, moving)), AGREEMENT_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False

    def _remove_review_layers(self, later: bool = False) -> None:
        """Remove the review layers; ``later``: once napari has finished removing layers (a
        selection deleted at once holds them too, and napari removes each in turn)."""
        layers = [*self.review_layers, *_review.extra_review_layers(self.viewer)]
        self.review_layers = ()
        self._remove_layers(layers, one_per_turn=later)

    def _remove_layers(self, layers: list[Layer], one_per_turn: bool) -> None:
        """Remove ``layers`` now, or one per turn of the event loop from the next: napari (0.9,
        Mesa's software OpenGL) crashed drawing the canvas after a user's layer and others were
        removed in one turn."""
        layers = list(layers)

        def remove() -> None:
            while layers:
                layer = layers.pop(0)
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
                    if one_per_turn:
                        QTimer.singleShot(NEXT_TURN_MS, remove)
                        return

        if one_per_turn:
            QTimer.singleShot(NEXT_TURN_MS, remove)
        else:
            remove()

    def _landmarks_on_top(self) -> None:
        if self.result_pair is None:
            return
        for name in landmark_names(*self.result_pair):
            if name in self.viewer.layers:
                layers = self.viewer.layers
                layers.move(layers.index(layers[name]), len(layers))

    def place_moving(self) -> None:
        """Show the moving image (its CoMIR, landmarks, review layer) before or after."""
        if self.result is None or self.result_pair is None:
            return
        fixed, moving = self.result_pair
        transform = self.result.transform if self.after else AffineTransform.rigid()
        _review.place_moving(self.viewer, fixed, moving, transform, self.review_layers)

    def set_after(self, after: bool) -> None:
        self.after = bool(after)
        self.place_moving()
        # Views whose pixels depend on "after": the agreement map (computed through the result or
        # not), and a field's overlays (warped onto the fixed grid or not).
        if self.result is not None and (self.review_view == "agreement" or (
                _review.is_deformable(self.result.transform) and self.review_view in _review.OVERLAY_VIEWS)):
            self.set_review_view(self.review_view)
        else:
            self._hide_under_review()
            self.changed.emit("review")

    def _hide_under_review(self) -> None:
        """The user's layers hidden while the review shows the images itself, shown again
        after: a field's review shows the moving image warped onto the fixed grid (placed by the
        affine part, the image stuck out beyond it and the layers carried onto it lay off the
        tissue they mark); flicker shows each image alone, grey (the user's colour images showed
        around the moving one's frame, flashing with it); the layer an earlier result's Accept
        made lies over the images, its fill showing around the new result's frame; another open
        image lies over the pair, or under a map in its place."""
        result, pair = self.result, self.result_pair
        wanted = []
        if result is not None and pair is not None:
            if self.review_view != "off":  # "off" shows the user's layers as they set them
                wanted += [layer for layer in raw_images(self.viewer) if layer not in pair]
            field = self.after and _review.is_deformable(result.transform) and \
                self.review_view in _review.WARPED_VIEWS
            flicker = self.review_view == "flicker"
            if field or flicker:
                wanted += [pair[1], *carried_onto(self.viewer, pair[1])] + ([pair[0]] if flicker else [])
            earlier = self.accepted  # an earlier result's, on the fixed grid: it showed through
            if earlier is not None and not self.accepted_matches_result() and \
                    self.review_view != "off" and earlier in self.viewer.layers:
                wanted.append(earlier)
        for layer in [layer for layer in self._covered if layer not in wanted]:
            layer.visible = True
            self._covered.remove(layer)
        for layer in wanted:
            if layer.visible and layer not in self._covered:
                layer.visible = False
                self._covered.append(layer)
        _review.select_shown(self.viewer)

    @property
    def hidden_by_review(self) -> list[Layer]:
        """The user's layers hidden while the review shows the images (see
        :meth:`_hide_under_review`)."""
        return list(self._covered)

    def review_views(self) -> tuple[str, ...]:
        """The review views the result can show: the deformation only with a field kept, the
        CoMIRs and their agreement only with both CoMIRs at hand."""
        deformable = self.result is not None and _review.is_deformable(self.result.transform)
        model = self.models.model
        comirs = model is not None and all(comir is not None for comir in self._result_comirs(model))
        return tuple(view for view in _review.VIEWS if (deformable or view != "deformation")
                     and (comirs or view not in _review.COMIR_VIEWS))

    def set_review_view(self, view: str) -> None:
        """Show the review as ``view`` (see ``_review.VIEWS``)."""
        if view not in _review.VIEWS:
            raise InputError(f"unknown review view {view!r}; expected one of {_review.VIEWS}")
        has_result = self.result is not None and self.result_pair is not None
        if view not in self.review_views():
            if view in _review.COMIR_VIEWS:
                self.comir_pair()  # says why there are none
            raise InputError("no deformation to show: register with the 'deformable' transform "
                             "(its field kept)")
        comirs = self.comir_pair() if has_result and view in _review.COMIR_VIEWS else None
        self.review_view = view  # only once it can be shown
        if has_result:
            fixed, moving = self.result_pair
            self.review_layers = _review.switch_view(self.viewer, fixed, moving, self.result,
                                                     self.review_layers, view, self.after,
                                                     self.review_images, comirs)
            self._landmarks_on_top()
        self._hide_under_review()
        self.changed.emit("review")

    # ------------------------------------------------------------------ keep
    def accept(self, output_path: str | Path | None = None) -> Job:
        """Resample the moving image onto the fixed grid in a worker and add it as a new layer;
        a whole slide is written tile by tile to ``output_path`` and opened when done."""
        transform, fixed, moving = self.require_result()
        result = self.result
        if is_multiscale(fixed) or is_multiscale(moving):
            if not output_path:
                raise InputError("choose where to write the registered slide")
            path = check_resampled_path(output_path)
            # the file an open layer shows (the slide itself, an earlier Accept's) is never
            # replaced: the save dialog's "replace?" does not say it is one of them
            check_outputs_apart({"the registered slide": path}, layer_files(self.viewer))
            events = resample_to_file(registration_data(moving), transform,
                                      layer_shape(fixed)[:2], path,
                                      pixel_size_um=layer_pixel_size(fixed))

            def done(job: Job) -> None:
                if job.state is JobState.FINISHED and job.result is not None:
                    self._accepted(_slide_output.open_written(self.viewer, Path(job.result), fixed,
                                                              moving, transform), result)

            return self._start("accept", lambda: events, done, (fixed, moving))

        def resampled() -> Iterator[Progress]:  # off the GUI thread, like a slide's
            yield Progress("accept", 0, 1, f"resampling {moving.name}")
            yield Progress("accept", 1, 1, "resampled",
                           result=carried_pixels(moving, transform, fixed, moving))

        def done(job: Job) -> None:
            if job.state is JobState.FINISHED and job.result is not None:
                self._accepted(apply_to_layer(self.viewer, moving, transform, fixed, moving,
                                              data=job.result), result)

        return self._start("accept", resampled, done, (fixed, moving))

    def _accepted(self, layer: Layer, result: RegistrationResult) -> None:
        """Show the accepted layer plainly: over the fixed image, the review overlay off (in
        a later event-loop turn: adding the layer cost napari this one)."""
        fixed, moving = self.result_pair
        self.presenting = True

        def finish() -> None:
            self.presenting = False
            for covered in self._covered:  # shown again, but for the moving image
                covered.visible = True
            moving.visible, self._covered = False, []  # hidden under the accepted layer
            self._hide_comir_views(fixed, moving)
            layers = self.viewer.layers
            layers.move(layers.index(layer), layers.index(fixed) + 1)
            self.accepted, self.accepted_result, self.accepted_pair = layer, result, (fixed, moving)
            self.set_review_view("off")
            self.changed.emit("accepted")
            self.changed.emit("job")

        _in_turns(finish)

    def accepted_matches_result(self) -> bool:
        """Whether the accepted layer holds the current result (not an earlier one): by
        identity, as every panel asks on every change (a field's ``to_dict`` takes a while)."""
        return self.accepted is not None and self.result is not None and \
            self.accepted_result is self.result

    def export(self, path: str | Path) -> Path:
        """Write the transform (format from the name: JSON, ITK, OME-NGFF, QuPath, CSV)."""
        _, fixed, moving = self.require_result()
        return _export.export_result(self.result, fixed, moving, path)

    def apply_targets(self) -> list[Layer]:
        """Layers the result may be applied to: the user's, not the plugin's derived ones."""
        pair = (*(self.result_pair or ()), self.fixed, self.moving)
        return [layer for layer in self.viewer.layers if layer not in pair and not made_by_plugin(layer)]

    def apply_to(self, layers: list[Layer], inverse: bool) -> list[Layer]:
        """New layers: each carried onto the other image's grid (see ``_apply``)."""
        transform, fixed, moving = self.require_result()
        added = [apply_to_layer(self.viewer, layer, transform, fixed, moving, inverse=inverse,
                                source_shown=None if inverse else self.drawn_over_preview.get(layer),
                                drawn_on_target=not inverse and layer in self.drawn_over_field)
                 for layer in layers]
        self._hide_under_review()  # one carried onto the moving image goes with it
        self.changed.emit("review")  # the review line names what it hides
        return added

    # ------------------------------------------------------------------ teach
    def teaches_from_model(self, model) -> bool:
        """Whether teaching the kept pair starts from ``model``: its networks take the pair's
        images (their channel counts); else a new model is taught."""
        if self.accepted_pair is None:
            return False
        try:
            api.check_pair_images(model, *map(image_data, self.accepted_pair))
        except InputError:
            return False
        return True

    def teach(self, seconds: float, name: str, modalities: tuple[str, str] | None = None) -> Job:
        """Teach the model the kept pair (the images and the accepted transform) in a worker
        (:func:`napari_comir.api.teach`): a copy of this viewer's model when its networks take
        these images, else a new model for their channel counts (a new modality pair, its
        ``(fixed, moving)`` modalities so named; default "fixed" and "moving"). The
        taught model is checked, saved as the user model ``name`` and used in this viewer; the
        default of later sessions is unchanged (a taught model can be worse on other pairs)."""
        if self.accepted is None or self.accepted_pair is None:
            raise InputError("accept a registration first: the model learns from the kept pair")
        fixed, moving = self.accepted_pair  # not a later result's, which was not kept
        if is_multiscale(fixed) or is_multiscale(moving):
            raise InputError("teaching on whole slides is not supported; crop a region first")
        api.check_user_model_name(name)
        pair = api.TeachingPair(image_data(fixed), image_data(moving), self.accepted_result.transform,
                                name=f"{moving.name} on {fixed.name}")
        model = self.models.get()
        start = model if self.teaches_from_model(model) else None  # None: a new modality pair
        names = {} if start is not None or modalities is None else \
            dict(zip(("fixed_modality", "moving_modality"), modalities, strict=True))
        events = api.teach([pair], start=start, max_seconds=seconds, device=self.models.device, **names)

        def teach_and_save() -> Iterator[Progress]:
            outcome = None
            for event in events:
                outcome = event.result if event.result is not None else outcome
                yield event
            if outcome is not None:
                saved = api.save_taught_model(outcome, name) is not None
                yield Progress("save", 1, 1, f"saved {name}" if saved else outcome.reason,
                               result=(outcome, saved))

        def done(job: Job) -> None:
            if job.state is JobState.FINISHED and isinstance(job.result, tuple) and job.result[1]:
                library.models_saved.emit(name)
                self.models.set(job.result[0].model, name)

        return self._start("teach", teach_and_save, done)


#: Delay (ms) of work put off to a later turn of the event loop. Not 0: Qt delivers zero-delay
#: single shots as posted events, one after another in the same pass, timers (and the paints
#: they drive) waiting behind them — two review layers added "in turns" froze the GUI for
#: their sum (measured: three 0.23 s steps, 0.46 s without a tick; 0.23 s with 1 ms).
NEXT_TURN_MS = 1


def _in_turns(*steps) -> None:
    """Run ``steps`` in order, one per later turn of the event loop: none in the caller's turn,
    whose own work (a finished job's callbacks) would add up with the first."""

    def run_first() -> None:
        steps[0]()
        _in_turns(*steps[1:])

    if steps:
        QTimer.singleShot(NEXT_TURN_MS, run_first)


_SESSIONS: dict[int, RegistrationSession] = {}


def session_for(viewer) -> RegistrationSession:
    """The registration session of ``viewer``, made on first use and dropped with the viewer."""
    viewer = real_viewer(viewer)
    key = id(viewer)
    if key not in _SESSIONS:
        _SESSIONS[key] = RegistrationSession(viewer)
        weakref.finalize(viewer, _SESSIONS.pop, key, None)
    return _SESSIONS[key]

