"""Register widget: CoMIR-based registration (rigid, similarity, affine) with an interactive overlay."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
    Select,
    Slider,
)
from napari.layers import Image, Layer
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from .. import api
from ..core.defaults import DEFAULT_TRANSFORM, TRANSFORM_MODELS, TRUE_TRANSFORM_KEY
from ..core.errors import ComirError, InputError
from ..core.registration import RegistrationResult
from ..core.registration.landmarks import fit_landmarks
from ..core.registration.levels import to_level
from ..core.tiled_resample import check_resampled_path, resample_to_file
from ..core.transforms import AffineTransform, corner_error, resample
from . import _export, _slide_output, _worker
from ._apply import DIRECTIONS, apply_to_layer
from ._landmarks import landmark_layers, landmark_name, landmark_pairs, residual_text
from ._layers import (
    coarse_view,
    guess_pair,
    is_multiscale,
    layer_choices,
    layer_pixel_size,
    layer_pixel_sizes,
    layer_shape,
    registration_data,
    upsert_image,
    world_affine,
    wrap,
)
from ._review import AGREEMENT, checkerboard, show_agreement, show_review
from ._settings import restore
from ._state import state_for
from .representations import comir_layer_name, find_comir, show_comir

CHECKERBOARD = "Checkerboard (fixed | moving)"
FLICKER_MS = 500  # twice a second: fast enough to see a jump, slow enough to follow


class RegisterWidget(Container):
    """Register a moving layer onto a fixed layer of another modality through their CoMIRs."""

    def __init__(self, napari_viewer):
        self.state = state_for(napari_viewer)  # this viewer's model
        self.viewer = napari_viewer
        images = layer_choices(napari_viewer, Image)
        self._fixed = ComboBox(label="fixed", choices=images, nullable=True)
        self._moving = ComboBox(label="moving", choices=images, nullable=True)
        self._method = ComboBox(label="method", value="search",
                                choices=[("global search", "search"), ("SIFT", "sift")],
                                tooltip="Global search handles any rotation and weak structure; "
                                "SIFT is faster on large, textured images")
        self._transform = ComboBox(label="transform", value=DEFAULT_TRANSFORM, choices=TRANSFORM_MODELS,
                                   tooltip="rigid: rotation + shift; similarity: + one scale; affine: "
                                   "any linear map + shift (two microscopes' grids differ by a scale "
                                   "and a little stretch). The scale comes from the layers' pixel "
                                   "sizes (scale) when set, else it is searched (0.8-1.25)")
        self._rotation = FloatSlider(label="rotation ±°", min=0, max=180, value=180, step=5,
                                     tooltip="Angles searched: ±value (180 = any rotation)")
        self._reuse = CheckBox(text="reuse CoMIRs from Representations", value=True)
        self._run = PushButton(text="Register")
        self._progress = ProgressBar(value=0, max=1)
        self._score = wrap(Label(value=""))
        self._warning = wrap(Label(value=""))
        self._warning.native.setStyleSheet("color: #ff6060; font-weight: bold")
        self._after = CheckBox(text="show found transform (after)", value=True, enabled=False)
        self._review = CheckBox(text="review overlay: fixed green, moving magenta", value=True,
                                enabled=False, tooltip="Where the images agree the tissue turns "
                                "white; green beside magenta is a misregistration. The moving "
                                "image is shown grey, inverted when its background is bright "
                                "(H&E). Your own layers are not changed")
        self._checker = CheckBox(text="checkerboard", value=False, enabled=False)
        self._flicker = CheckBox(text="flicker", value=False, enabled=False,
                                 tooltip="Alternate the fixed and the moving image twice a second: "
                                 "a misregistration jumps, a good one stays still")
        self._agreement = CheckBox(text="agreement", value=False, enabled=False,
                                   tooltip="The CoMIRs' local correlation under the transform: "
                                   "green where they agree, pink where they do not")
        self._compare_row = Container(layout="horizontal", labels=False,
                                      widgets=[self._checker, self._flicker, self._agreement])
        self._compare_row.margins = (0, 0, 0, 0)
        self._flicker_timer = QTimer()
        self._flicker_timer.setInterval(FLICKER_MS)
        self._flicker_timer.timeout.connect(self._flicker_step)
        self._square = Slider(label="square px", min=4, max=512, value=32, enabled=False)
        self._accept = PushButton(text="Accept (resample)", enabled=False,
                                  tooltip="Resample the moving image onto the fixed grid as a new layer")
        self._export = PushButton(text="Export transform…", enabled=False)
        self._keep_row = Container(layout="horizontal", labels=False,
                                   widgets=[self._accept, self._export])
        self._keep_row.margins = (0, 0, 0, 0)
        self._add_landmarks = PushButton(text="add", tooltip="Two Points layers: click a structure "
                                         "in the fixed image, then the same in the moving one")
        self._fit_landmarks = PushButton(text="fit", tooltip="The transform from the landmarks "
                                         "alone (not checked against the images)")
        self._from_landmarks = PushButton(text="register from", tooltip="Refine from the landmarks' "
                                          "transform instead of searching, and judge the result")
        landmarks = Container(layout="horizontal", label="landmarks", labels=False,
                              widgets=[self._add_landmarks, self._fit_landmarks, self._from_landmarks])
        landmarks.margins = (0, 0, 0, 0)
        self._residuals = wrap(Label(value=""))
        self._targets = wrap(Select(label="apply to", choices=layer_choices(napari_viewer)),
                             max_height=64)
        self._direction = ComboBox(label="direction", choices=list(DIRECTIONS),
                                   value=next(iter(DIRECTIONS)),
                                   tooltip="moving → fixed: the selected layers belong to the "
                                   "moving image and go onto the fixed grid; fixed → moving: they "
                                   "belong to the fixed image (e.g. annotations drawn on it) and go "
                                   "onto the moving grid")
        self._apply = PushButton(text="Apply to selected layers", enabled=False)
        super().__init__(widgets=[
            self._fixed, self._moving, self._method, self._transform, self._rotation, self._reuse,
            self._run,
            self._progress, self._score, self._warning, self._after, self._review,
            self._compare_row, self._square, self._keep_row, landmarks, self._residuals, self._targets,
            self._direction, self._apply])
        self.result: RegistrationResult | None = None
        #: Where Accept writes the resampled copy of a whole slide; None: ask (a file dialog).
        self.output_path: str | Path | None = None
        self.accepted: Layer | None = None  # the last layer Accept made
        self._review_layers: tuple[Layer, Layer] | tuple[None, None] = (None, None)
        self.job: _worker.Job | None = None
        self._pair: tuple[Layer, Layer] | None = None
        self._run.clicked.connect(self.run)
        for label in (self._warning, self._residuals):  # no empty rows in a full dock
            label.visible = False
            label.changed.connect(lambda value, label=label: setattr(label, "visible", bool(value)))
        self._after.changed.connect(self.show_after)
        self._review.changed.connect(self._show_review)
        self._flicker.changed.connect(self.flicker)
        self._agreement.changed.connect(self.show_agreement)
        self.native.destroyed.connect(self._flicker_timer.stop)
        self._checker.changed.connect(self._update_checkerboard)
        self._square.changed.connect(self._update_checkerboard)
        self._accept.clicked.connect(self.accept)
        self._export.clicked.connect(self._export_dialog)
        self._apply.clicked.connect(lambda: self.apply_to(self._targets.value or []))
        self._add_landmarks.clicked.connect(self.add_landmarks)
        self._fit_landmarks.clicked.connect(self.fit_landmarks)
        self._from_landmarks.clicked.connect(lambda: self.run(from_landmarks=True))
        for event in ("inserted", "removed", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self.reset_choices)
        for key, widget in (("transform", self._transform), ("rotation_range", self._rotation),
                            ("method", self._method)):
            restore(widget, key)  # the last session's choices
        self._guess_layers()

    # ------------------------------------------------------------------ choosing and running
    def _guess_layers(self):
        """Default: a raw grey layer is fixed (SHG), a raw RGB one moving (BF)."""
        fixed, moving = guess_pair(self.viewer, self.state.model)
        if self._fixed.value is None and fixed is not None:
            self._fixed.value = fixed
        if self._moving.value is None and moving is not None and moving is not self._fixed.value:
            self._moving.value = moving

    def reset_choices(self, *_):
        super().reset_choices()
        self._guess_layers()

    def _chosen(self) -> tuple[Layer, Layer]:
        fixed, moving = self._fixed.value, self._moving.value
        if fixed is None or moving is None or fixed is moving:
            raise InputError("choose two different image layers, fixed and moving")
        return fixed, moving

    def add_landmarks(self) -> None:
        """Two Points layers: click a structure in the fixed image, then the same in the moving."""
        try:
            landmark_layers(self.viewer, *self._chosen())
        except ComirError as exc:
            show_error(f"Register: {exc}")
            return
        self._residuals.value = ("Add points alternately: one on the fixed image's layer, the "
                                 "same structure on the moving one's (3 or more for affine).")

    def _landmark_transform(self):
        fixed, moving = self._chosen()
        fixed_xy, moving_xy = landmark_pairs(self.viewer, fixed, moving)
        return fit_landmarks(fixed_xy, moving_xy, self._transform.value)[0]

    def fit_landmarks(self) -> RegistrationResult | None:
        """The transform from the landmarks alone, shown like a registration (not yet checked
        against the images: "Register from landmarks" refines and judges it)."""
        try:
            fixed, moving = self._chosen()
            transform = self._landmark_transform()
        except ComirError as exc:
            show_error(f"Register: {exc}")
            return None
        result = RegistrationResult(
            transform, float("nan"), 0.0, "landmarks", reasons=[
                "fitted to the landmarks only, not checked against the images: press "
                "Register from landmarks to refine and judge it"],
            moving_shape=layer_shape(moving)[:2])
        self.show_result(result, fixed, moving)
        return result

    def run(self, from_landmarks: bool = False) -> _worker.Job | None:
        """Register the chosen layers in a worker; the overlay appears when it finishes.

        ``from_landmarks``: start the refinement at the landmarks' transform instead of searching.
        """
        try:
            fixed, moving = self._chosen()
            initial = self._landmark_transform() if from_landmarks else None
            model = self.state.get()
            # A whole slide (multiscale layer) is read lazily, coarse to fine: never all at once.
            fixed_data, moving_data = registration_data(fixed), registration_data(moving)
            comirs = {}
            if self._reuse.value and not (is_multiscale(fixed) or is_multiscale(moving)):
                comirs = {"fixed_comir": find_comir(self.viewer, fixed, model),
                          "moving_comir": find_comir(self.viewer, moving, model)}
            fixed_size, moving_size = layer_pixel_sizes(fixed, moving)
            events = api.registration_events(
                fixed_data, moving_data, model, method=self._method.value,
                transform=self._transform.value, rotation_range=float(self._rotation.value),
                fixed_pixel_size=fixed_size, moving_pixel_size=moving_size,
                initial_transform=initial, **comirs)
        except ComirError as exc:
            show_error(f"Register: {exc}")
            return None
        self._run.enabled = False
        self._score.value, self._warning.value = "running…", ""

        def done(job):
            self._run.enabled = True
            if job.failed or job.stopped or job.result is None:
                self._score.value = "registration failed" if job.failed else "stopped"
                return
            outcome = job.result
            card = model.card
            for layer, comir, modality in ((fixed, outcome.fixed_comir, card.fixed_modality),
                                           (moving, outcome.moving_comir, card.moving_modality)):
                if comir is not None:
                    show_comir(self.viewer, layer, comir, model, modality)
            self.show_result(outcome.result, fixed, moving)

        self.job = _worker.Job()
        _worker.run_job(lambda: events, on_done=done, progress_bar=self._progress, job=self.job,
                        title="Register")
        return self.job

    # ------------------------------------------------------------------ interactive overlay
    def show_result(self, result: RegistrationResult, fixed: Layer, moving: Layer) -> None:
        """Show a registration result: lossless affine preview, colours, score and warning."""
        self.result, self._pair = result, (fixed, moving)
        t = result.transform
        parts = t.decompose(result.moving_centre_xy)
        size = layer_pixel_sizes(fixed, moving)[0]  # fixed µm per px, when the layers say
        shift = f"x {parts.shift_xy[0]:.1f}, y {parts.shift_xy[1]:.1f} px"
        if size:
            shift += f" ({parts.shift_xy[0] * size:.2f}, {parts.shift_xy[1] * size:.2f} µm)"
        head = ("from the landmarks only" if result.method == "landmarks" else
                f"score {result.score:.3f} · detail {result.detail_score:.1f} · {result.seconds:.1f} s")
        self._score.value = (f"{head}\n{t.model}: rotation {parts.angle_deg:.2f}° · scale "
                             f"{parts.scale_xy[0]:.3f} x {parts.scale_xy[1]:.3f}\n"
                             f"centre shifted by {shift}")
        self._residuals.value = self._landmark_residuals(result, fixed, moving)
        truth = moving.metadata.get(TRUE_TRANSFORM_KEY)  # the misaligned sample knows the answer
        if truth is not None:
            error = corner_error(AffineTransform.from_dict(truth), t, layer_shape(moving))
            self._score.value += f"\nerror vs. the known transform: {error:.1f} px"
        if not result.success_likely:
            why = "; ".join(result.reasons) or "the images do not agree"
            self._warning.value = (f"⚠ The registration has probably FAILED: {why}. Check the "
                                   "overlay; try another transform, a narrower rotation range, the "
                                   "pixel sizes, or a model fine-tuned on your images.")
            show_warning(f"Register: registration probably failed ({why})")
        else:
            self._warning.value = ""
        # The review overlay on top; the CoMIRs (shown while registering) would wash it out.
        for layer in (fixed, moving):
            comir = self._comir_layer(layer)
            if comir is not None:
                comir.visible = False
        # On whole slides the review layers are made from a coarse level, placed over the slide.
        (fixed_data, fixed_grid, _), (moving_data, moving_grid, _) = (
            coarse_view(fixed), coarse_view(moving))
        self._review_layers = show_review(self.viewer, fixed, moving, fixed_data, moving_data,
                                          result.transform, fixed_grid=fixed_grid,
                                          moving_grid=moving_grid)
        for layer in self._review_layers:
            layer.visible = self._review.value
        for widget in (self._after, self._review, self._checker, self._flicker, self._agreement,
                       self._square,
                       self._accept,
                       self._export, self._apply):
            widget.enabled = True
        # Whole slides: no CoMIRs are kept (they are computed window by window); Accept writes
        # the resampled slide to a file.
        slides = is_multiscale(fixed) or is_multiscale(moving)
        self._agreement.enabled = not slides
        self._accept.text = "Accept (save slide…)" if slides else "Accept (resample)"
        with self._after.changed.blocked():
            self._after.value = True
        self.show_after(True)
        self._update_checkerboard()

    def _landmark_residuals(self, result: RegistrationResult, fixed: Layer, moving: Layer) -> str:
        """Where the result puts each landmark pair, if there are any (else nothing)."""
        try:
            fixed_xy, moving_xy = landmark_pairs(self.viewer, fixed, moving)
        except ComirError:
            return ""
        if len(fixed_xy) == 0:
            return ""
        size = layer_pixel_sizes(fixed, moving)[0]
        return residual_text(result.transform, fixed_xy, moving_xy, size)

    def show_agreement(self, on: bool = True) -> None:
        """Show (or hide) the CoMIRs' local agreement under the found transform."""
        if not on or self.result is None or self._pair is None:
            if AGREEMENT in self.viewer.layers:
                self.viewer.layers[AGREEMENT].visible = False
            return
        fixed, moving = self._pair
        comirs = [self._comir_layer(layer) for layer in (fixed, moving)]
        if any(layer is None or "comir" not in layer.metadata for layer in comirs):
            show_error("Register: no CoMIRs to compare: register again with this model")
            return
        transform = self.result.transform if self._after.value else AffineTransform.rigid()
        show_agreement(self.viewer, fixed, comirs[0].metadata["comir"], comirs[1].metadata["comir"],
                       transform)

    def flicker(self, on: bool) -> None:
        """Alternate the two review layers (``on``), or show both again."""
        if on:
            self._review.value = True
            self._flicker_timer.start()
        else:
            self._flicker_timer.stop()
            self._show_review(self._review.value)

    def _flicker_step(self) -> None:
        fixed, moving = self._review_layers
        if fixed is None or fixed not in self.viewer.layers:
            self._flicker.value = False
            return
        fixed.visible = not fixed.visible
        moving.visible = not fixed.visible

    def _show_review(self, visible: bool) -> None:
        for layer in self._review_layers:
            if layer is not None and layer in self.viewer.layers:
                layer.visible = visible

    def _comir_layer(self, source: Layer) -> Layer | None:
        name = comir_layer_name(source)
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def show_after(self, after: bool = True) -> None:
        """Before/after: the moving layer (and its CoMIR) with identity or the found affine."""
        if self.result is None or self._pair is None:
            return
        fixed, moving = self._pair
        transform = self.result.transform if after else AffineTransform.rigid()
        landmarks = landmark_name(moving)
        landmarks = self.viewer.layers[landmarks] if landmarks in self.viewer.layers else None
        for lay in (moving, self._comir_layer(moving), landmarks):
            if lay is not None and lay in self.viewer.layers:
                lay.affine = world_affine(fixed, lay, transform)
        review = self._review_layers[1]  # maybe a coarse level: placed through the moving's grid
        if review is not None and review in self.viewer.layers:
            review.affine = world_affine(fixed, moving, transform)
        self._update_checkerboard()

    def _update_checkerboard(self, *_):
        if self.result is None or self._pair is None:
            return
        if not self._checker.value:
            if CHECKERBOARD in self.viewer.layers:
                self.viewer.layers[CHECKERBOARD].visible = False
            return
        fixed, moving = self._pair
        transform = self.result.transform if self._after.value else AffineTransform.rigid()
        # Whole slides: on coarse levels (the fixed one's grid placed over the fixed slide).
        (fixed_data, fixed_grid, fixed_down), (moving_data, _, moving_down) = (
            coarse_view(fixed), coarse_view(moving))
        warped = resample(moving_data, to_level(transform, fixed_down, moving_down),
                          fixed_data.shape[:2])
        board = checkerboard(fixed_data, warped, max(1, int(self._square.value) // fixed_down))
        layer = upsert_image(self.viewer, CHECKERBOARD, board, rgb=board.ndim == 3, **fixed_grid,
                             contrast_limits=(0.0, 1.0), blending="translucent", visible=True)
        if board.ndim == 2:
            layer.colormap = "gray"
        self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))

    # ------------------------------------------------------------------ results
    def _require_result(self) -> tuple[AffineTransform, Layer, Layer]:
        if self.result is None or self._pair is None:
            raise InputError("register first")
        return (self.result.transform, *self._pair)

    def accept(self) -> Image | None:
        """Resample the moving image onto the fixed grid as a new layer (transform in metadata).

        Whole slides (a multiscale layer) are resampled tile by tile into a file instead
        (:meth:`accept_to_file`); the written pyramid opens as a new multiscale layer.
        """
        try:
            _, fixed, moving = self._require_result()
            if is_multiscale(fixed) or is_multiscale(moving):
                job = self.accept_to_file()
                return None if job is None or job.running else self.accepted
            layer = self.apply_to([moving], inverse=False)[0]
        except (ComirError, IndexError) as exc:
            show_error(f"Register: {exc}")
            return None
        moving.visible = False
        self._accepted_layer(layer)
        return layer

    def _accepted_layer(self, layer: Layer) -> None:
        """Called with the layer Accept made (at once, or when a slide's file is written)."""
        self.accepted = layer

    def accept_to_file(self, path: str | Path | None = None) -> _worker.Job | None:
        """Resample the moving slide onto the fixed grid tile by tile into ``path`` (default
        :attr:`output_path`, else asked), with progress; then open the file as a new multiscale
        layer over the fixed one. Full resolution is never in memory; no layer is replaced."""
        try:
            transform, fixed, moving = self._require_result()
            path = path or self.output_path or _slide_output.ask_output_path(self.native, moving)
            if not path:
                return None
            path = check_resampled_path(path)
            events = resample_to_file(registration_data(moving), transform,
                                      layer_shape(fixed)[:2], path,
                                      pixel_size_um=layer_pixel_size(fixed))
        except ComirError as exc:
            show_error(f"Register: {exc}")
            return None
        self._accept.enabled = False

        def done(job):
            self._accept.enabled = True
            if job.failed or job.stopped or job.result is None:
                self._progress.native.setFormat("accept failed" if job.failed else "stopped")
                return
            layer = _slide_output.open_written(self.viewer, Path(job.result), fixed, moving, transform)
            show_info(f"Register: saved {job.result} (layer {layer.name!r})")
            moving.visible = False
            self._accepted_layer(layer)

        self.job = _worker.Job()
        _worker.run_job(lambda: events, on_done=done, progress_bar=self._progress, job=self.job,
                        title="Accept")
        return self.job

    def export_transform(self, path: str | Path) -> Path:
        """Write the transform in the format the name asks for (see ``_export.FILTERS``: JSON,
        ITK, OME-NGFF, QuPath, CSV), with the layers' scale as their pixel sizes."""
        _, fixed, moving = self._require_result()
        path = _export.export_result(self.result, fixed, moving, path)
        show_info(f"transform saved to {path}")
        return path

    def _export_dialog(self):
        path = _export.ask_export_path(self.native)
        if path:
            try:
                self.export_transform(path)
            except (ComirError, OSError) as exc:
                show_error(f"Register: cannot export: {exc}")

    def apply_to(self, layers: list[Layer], inverse: bool | None = None) -> list[Layer]:
        """Carry layers onto the other image's grid as new layers: of the moving image's frame
        onto the fixed grid, or with ``inverse`` of the fixed image's frame onto the moving grid
        (default: the "direction" choice; see :func:`napari_comir.widgets._apply.apply_to_layer`)."""
        if inverse is None:
            inverse = DIRECTIONS[self._direction.value]
        try:
            transform, fixed, moving = self._require_result()
        except ComirError as exc:
            show_error(f"Register: {exc}")
            return []
        added = []
        for layer in layers:
            try:
                added.append(apply_to_layer(self.viewer, layer, transform, fixed, moving,
                                            inverse=inverse))
            except ComirError as exc:
                show_error(f"Register: {layer.name}: {exc}")
        return added
