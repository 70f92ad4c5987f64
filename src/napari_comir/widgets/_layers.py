"""Small layer helpers shared by the widgets: choices, image data, pixel <-> world matrices."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Label
from napari.layers import Image, Labels, Layer

from ..core.defaults import TRANSFORM_KEY
from ..core.errors import InputError
from ..core.transforms import AffineTransform
from ._connections import connect_while_alive
from ._state import state_for


def layer_choices(viewer, *types: type[Layer]):
    """A magicgui ``choices`` callable listing the viewer's layers of ``types`` (all if none)."""
    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers
                if not types or isinstance(layer, types)]
    return choices


#: Metadata keys marking layers the plugin made (CoMIRs, registered copies, review overlays,
#: landmarks, Inspect's maps): never offered as the images to register or train on by default,
#: nor to carry with a result.
DERIVED_KEYS = ("comir_source", TRANSFORM_KEY, "comir_review_of", "comir_landmarks_of",
                "comir_inspection")


def made_by_plugin(layer: Layer) -> bool:
    """Whether the plugin made the layer (see :data:`DERIVED_KEYS`)."""
    return any(key in layer.metadata for key in DERIVED_KEYS) or \
        layer.name.startswith(("Checkerboard", "CoMIR preview"))


def raw_images(viewer) -> list[Image]:
    """The viewer's image layers that the plugin did not make."""
    return [layer for layer in viewer.layers if isinstance(layer, Image) and not made_by_plugin(layer)]


def beside_source(layer: Layer, file_name: str) -> Path:
    """``file_name`` in the folder of the file the layer was opened from (the working folder
    when it was not opened from a file, or its folder cannot be written: a shared data folder)."""
    source = getattr(getattr(layer, "source", None), "path", None)
    folder = Path(source).parent if source else Path.cwd()
    return (folder if os.access(folder, os.W_OK) else Path.cwd()) / file_name


def layer_files(viewer) -> dict[str, str]:
    """The files the viewer's layers show (opened from, or written by an Accept), by
    "layer '<name>'"."""
    files = {f"layer {layer.name!r}": getattr(layer.source, "path", None)
             or layer.metadata.get("comir_file") for layer in viewer.layers}
    return {name: path for name, path in files.items() if path}


def fits_modality(layer: Layer, card, modality: str) -> bool:
    """Whether the network for ``modality`` of the model whose card is ``card`` takes the image
    layer: of its colour (RGB or grey), or grey for an RGB network with a grey palette (bf-shg's
    bright field)."""
    spec = card.modalities[modality]
    return bool(layer.rgb) == (spec.channels >= 3) or (not layer.rgb and bool(spec.grey_palette))


def takes_two_of(card, layers: list[Layer]) -> bool:
    """Whether the model's fixed network takes one of ``layers`` and its moving network another."""
    return any(fits_modality(fixed, card, card.fixed_modality) and
               any(fits_modality(moving, card, card.moving_modality)
                   for moving in layers if moving is not fixed) for fixed in layers)


def unfit_pair_hint(viewer, model) -> str | None:
    """Why a picker of ``model``'s pair stays empty (no open image fits one of its networks), and
    what to do: a model whose networks take two open images, or landmarks and teaching; else
    ``None``."""
    from ..core.errors import ComirError
    from ..core.zoo import list_models, read_card

    raw, card = raw_images(viewer), model.card
    if len(raw) < 2 or takes_two_of(card, raw):
        return None
    unfit = [(role, modality) for role, modality in (("fixed", card.fixed_modality),
                                                      ("moving", card.moving_modality))
             if not any(fits_modality(layer, card, modality) for layer in raw)]
    # else each network takes an image, but only the same one
    role, modality = unfit[0] if unfit else ("moving", card.moving_modality)
    kind = "RGB" if card.modalities[modality].channels >= 3 else "grey"
    others = []
    for name, card_path in list_models().items():
        try:
            if name != card.name and takes_two_of(read_card(card_path), raw):
                others.append(name)
        except ComirError:  # an unusable user card is the model dock's to report
            continue
    takes = "it takes" if len(others) == 1 else "each takes"
    choose = f"pick {' or '.join(others)} ({takes} them) under model, or " if others else ""
    return (f"no open image pair fits {card.name} (its {role} network '{modality}' takes {kind} "
            f"images): {choose}choose the images, place landmarks, fit, Accept and teach a model "
            "for them (step 5)")


def _mentions(layer: Layer, modality: str) -> bool:
    """Whether the layer's name holds the modality's name as a word ("lung_HE-les3": he)."""
    return modality.lower() in re.split(r"[^a-z0-9]+", layer.name.lower())


def swapped_hint(card, fixed: Layer, moving: Layer) -> str | None:
    """A hint that the pair may be the wrong way round: the moving image's name holds the fixed
    network's modality, or the fixed image's the moving one's (and not its own); else None."""
    for layer, own, other, role in ((moving, card.moving_modality, card.fixed_modality, "moving"),
                                    (fixed, card.fixed_modality, card.moving_modality, "fixed")):
        if _mentions(layer, other) and not _mentions(layer, own):
            return (f"the {role} image's name mentions {other!r}, the other network's: are fixed "
                    "and moving swapped?")
    return None


def swap_fits_hint(card, fixed: Layer, moving: Layer) -> str | None:
    """"swap fixed and moving" when the model's networks take the pair only the other way round
    (an RGB bright field chosen as bf-shg's fixed SHG); else None."""
    def fits(fixed_layer, moving_layer) -> bool:
        return fits_modality(fixed_layer, card, card.fixed_modality) and \
            fits_modality(moving_layer, card, card.moving_modality)

    if fits(fixed, moving) or not fits(moving, fixed):
        return None
    return (f"{card.name} takes {moving.name!r} as fixed ({card.fixed_modality}) and "
            f"{fixed.name!r} as moving ({card.moving_modality}): swap them")


def guess_pair(viewer, model=None) -> tuple[Image | None, Image | None]:
    """(fixed, moving) defaults: a raw layer of the colour of the model's fixed modality (grey for
    bf-shg's SHG) and another of the moving one's (RGB for its BF); between layers of one colour
    (H&E and IHC, both RGB) the one whose name holds the modality's name. Without a model: a grey
    fixed and an RGB moving image."""
    raw = raw_images(viewer)
    if model is None:
        fixed = next((layer for layer in raw if not layer.rgb), None)
        others = [layer for layer in raw if layer is not fixed]
        return fixed, next((layer for layer in others if layer.rgb), others[0] if others else None)
    card = model.card

    def rank(layer, modality):
        return not fits_modality(layer, card, modality), not _mentions(layer, modality)

    fixed = min(raw, key=lambda layer: rank(layer, card.fixed_modality), default=None)
    if fixed is not None and not fits_modality(fixed, card, card.fixed_modality):
        fixed = None  # nothing the fixed network takes
    others = [layer for layer in raw if layer is not fixed]
    moving = min(others, key=lambda layer: rank(layer, card.moving_modality), default=None)
    if moving is not None and not fits_modality(moving, card, card.moving_modality):
        moving = None  # nothing the moving network takes
    return fixed, moving


def modality_pickers(viewer) -> tuple[ComboBox, ComboBox]:
    """Moving and fixed image-layer pickers, labelled with the viewer's model's modalities."""
    state = state_for(viewer)
    choices = layer_choices(viewer, Image)
    moving = ComboBox(label="moving", choices=choices, nullable=True)
    fixed = ComboBox(label="fixed", choices=choices, nullable=True)

    def relabel(model) -> None:
        moving.label = f"moving ({model.card.moving_modality})"
        fixed.label = f"fixed ({model.card.fixed_modality})"

    if state.model is not None:
        relabel(state.model)
    fixed.value, moving.value = guess_pair(viewer, state.model)
    connect_while_alive(state.changed, relabel, moving)
    return moving, fixed


#: Long side (px) of the level of a whole slide that review layers and previews are made from.
REVIEW_SIDE = 2048


def is_multiscale(layer: Layer) -> bool:
    """Whether the layer is a multiscale (whole-slide) image, read lazily level by level."""
    return bool(getattr(layer, "multiscale", False))


def layer_shape(layer: Layer) -> tuple[int, ...]:
    """The full-resolution shape of an image/labels layer, without reading any pixels."""
    return tuple((layer.data[0] if is_multiscale(layer) else layer.data).shape)


def image_data(layer: Layer, action: str = "this step") -> np.ndarray:
    """The 2-D (rows, cols) or RGB (rows, cols, 3|4) array of an image/labels layer.

    A multiscale (whole-slide) layer is refused: its full resolution may not fit in memory
    (see :func:`registration_data` and :func:`coarse_view` for what works on slides).
    """
    if is_multiscale(layer):
        raise InputError(f"layer {layer.name!r} is a whole slide (multiscale, "
                         f"{'x'.join(map(str, layer_shape(layer)[:2]))} px): {action} needs the "
                         "image in memory; crop a region first (e.g. save a region as a TIFF)")
    data = np.asarray(layer.data)
    rgb = isinstance(layer, Image) and layer.rgb
    if data.ndim != (3 if rgb else 2):
        raise InputError(f"layer {layer.name!r} has shape {data.shape}: napari-comir works on 2-D "
                         "grey or RGB images (take a single slice/channel first)")
    return data


def layer_scale_x(layer: Layer) -> float:
    """The layer's ``scale`` along x: its pixel size (µm) when set, napari's default 1 if not."""
    return float(np.asarray(layer.scale)[-1])


def layer_pixel_size(layer: Layer) -> float | None:
    """µm per pixel from the layer's ``scale`` (x), or None for napari's default 1."""
    size = layer_scale_x(layer)
    return None if size == 1.0 else size


def set_layer_pixel_size(layer: Layer, size_um: float | None) -> None:
    """Record a pixel size (µm) as the layer's ``scale`` along y and x (``None``: napari's
    default 1, unknown), as the plugin's reader does from a file's metadata."""
    scale = list(layer.scale)
    scale[-2:] = [size_um or 1.0] * 2
    layer.scale = scale


def layer_pixel_sizes(fixed: Layer, moving: Layer) -> tuple[float | None, float | None]:
    """The layers' pixel sizes from their ``scale`` (x), or (None, None) when both are napari's
    default 1: then nothing is known and the registration searches the scale."""
    sizes = layer_scale_x(fixed), layer_scale_x(moving)
    return (None, None) if sizes == (1.0, 1.0) else sizes


def registration_data(layer: Layer):
    """What the registration reads of a layer: a lazily read
    :class:`~napari_comir.core.io.slides.Slide` over a multiscale layer's levels (never the
    whole full resolution at once), else the layer's array (:func:`image_data`)."""
    if not is_multiscale(layer):
        return image_data(layer)
    from ..core.io.slides import slide_from_levels

    rgb = isinstance(layer, Image) and layer.rgb
    if len(layer_shape(layer)) != (3 if rgb else 2):
        raise InputError(f"layer {layer.name!r} has shape {layer_shape(layer)}: napari-comir "
                         "works on 2-D grey or RGB images")
    return slide_from_levels(list(layer.data), layer_pixel_size(layer), layer.name)


def coarse_view(layer: Layer, max_side: int | None = None) -> tuple[np.ndarray, dict, int]:
    """A level of the layer small enough to hold (long side ≤ ``max_side``, default
    :data:`REVIEW_SIDE`; the coarsest if none is), with the ``scale`` and ``translate`` that
    put it exactly over the layer, and its downsampling ``d``.

    Level pixel ``i`` is the mean of full-resolution pixels ``d*i .. d*i + d-1``: its centre
    lies at ``d*i + (d-1)/2``. A single-scale layer is returned as it is (``d`` = 1).
    """
    scale, translate = np.asarray(layer.scale)[-2:], np.asarray(layer.translate)[-2:]
    if not is_multiscale(layer):
        return image_data(layer), {"scale": tuple(scale), "translate": tuple(translate)}, 1
    max_side = REVIEW_SIDE if max_side is None else max_side
    levels = list(layer.data)
    fitting = [level for level in levels if max(level.shape[:2]) <= max_side]
    level = fitting[0] if fitting else levels[-1]
    d = max(1, round(levels[0].shape[0] / level.shape[0]))
    data = np.asarray(level)
    grid = {"scale": tuple(scale * d), "translate": tuple(translate + scale * (d - 1) / 2)}
    return data, grid, d


def grid_matrix(layer: Layer) -> np.ndarray:
    """3x3 (row, col) matrix from the layer's pixel grid to world (its scale and translate)."""
    scale, translate = np.asarray(layer.scale)[-2:], np.asarray(layer.translate)[-2:]
    return np.array([[scale[0], 0.0, translate[0]], [0.0, scale[1], translate[1]], [0, 0, 1.0]])


def world_affine(fixed: Layer, moving: Layer, transform) -> np.ndarray:
    """``affine`` for the moving layer that overlays it on the fixed layer per ``transform``.

    The transform maps moving pixels to fixed pixels; the layers' own scale/translate are
    applied before napari's affine, so undo the moving grid and redo the fixed one. A
    deformable transform previews through its affine part (an affine is all a layer can take;
    the review layers show the field itself).
    """
    affine = getattr(transform, "affine", transform)
    return grid_matrix(fixed) @ affine.matrix_rc @ np.linalg.inv(grid_matrix(moving))


def pixel_transform(fixed: Layer, moving: Layer) -> AffineTransform:
    """The moving -> fixed pixel transform currently shown by the moving layer's affine."""
    affine = np.asarray(moving.affine.affine_matrix)[-3:, -3:]
    return AffineTransform.from_matrix_rc(
        np.linalg.inv(grid_matrix(fixed)) @ affine @ grid_matrix(moving))


def percentile_limits(data: np.ndarray, low: float = 1.0,
                      high: float = 99.0) -> tuple[float, float]:
    """Robust contrast limits; never an empty range (napari rejects it)."""
    sample = np.asarray(data, dtype=np.float32)[:: max(1, data.shape[0] // 512),
                                                :: max(1, data.shape[1] // 512)]
    lo, hi = (float(v) for v in np.nanpercentile(sample, [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def upsert_image(viewer, name: str, data: np.ndarray, like: Layer | None = None, **kwargs) -> Image:
    """Update the image layer ``name`` in place (re-runs replace, not pile up) or add it.

    ``like`` gives scale and translate (the grid the data lives on).
    """
    if like is not None:
        kwargs.setdefault("scale", tuple(like.scale)[-2:])
        kwargs.setdefault("translate", tuple(like.translate)[-2:])
    if name in viewer.layers and isinstance(viewer.layers[name], Image) and \
            viewer.layers[name].rgb == bool(kwargs.get("rgb", False)):
        layer = viewer.layers[name]
        layer.data = data
        for key, value in kwargs.items():
            if key not in ("rgb", "name"):
                setattr(layer, key, value)
        return layer
    if name in viewer.layers:
        viewer.layers.remove(name)
    return viewer.add_image(data, name=name, **kwargs)


def is_labels(layer: Layer) -> bool:
    return isinstance(layer, Labels)


def grid(viewer):
    """The viewer's grid settings (``viewer.canvas.grid`` in napari ≥ 0.9, else ``viewer.grid``)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def cap_height(widget, max_height: int):
    """Cap a widget's height (a list of layers must not push the dock's steps apart)."""
    widget.native.setMaximumHeight(max_height)
    return widget


class StatusLine(Label):
    """A status line that wraps (a long one must not widen the dock) and is hidden while it
    says nothing (an empty line still took a row of the dock)."""

    def __init__(self, **kwargs):
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QSizePolicy

        super().__init__(**{"value": "", **kwargs})
        self.native.setWordWrap(True)
        self.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        # The width the dock gives, not the text's own: wrapped lines fill the dock's width
        # and never widen it.
        self.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.set_value(self.value)

    def set_value(self, value) -> None:
        super().set_value(value)
        if self.native.parent() is not None or not value:  # shown alone, it would be a window
            self.visible = bool(value)
