"""Landmark layers for the Register widget: point pairs a person places on both images.

Two Points layers per pair of images, "landmarks: <fixed> (↔ <moving>)" on the fixed image's
grid and "landmarks: <moving> (↔ <fixed>)" on the moving image's (following its preview
``affine``); the i-th point of each is a pair. Their data are therefore pixel coordinates (row,
col) of each image. An image shared by two pairs (one H&E, two stains) has a layer for each: the
structures both sections of one pair show are not those of the other.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Layer, Points

from ..core.errors import InputError


def landmark_name(image: Layer, partner: Layer) -> str:
    """The name of ``image``'s landmark layer in its pair with ``partner``."""
    return f"landmarks: {image.name} (↔ {partner.name})"


def landmark_names(fixed: Layer, moving: Layer) -> tuple[str, str]:
    """The names of a pair's (fixed, moving) landmark layers."""
    return landmark_name(fixed, moving), landmark_name(moving, fixed)


def show_pair_landmarks(viewer, fixed: Layer | None, moving: Layer | None) -> None:
    """Show the landmark layers of the chosen pair only: another pair's points on a shared
    image would read as this pair's."""
    names = landmark_names(fixed, moving) if fixed is not None and moving is not None else ()
    for layer in viewer.layers:
        if "comir_landmarks_of" in layer.metadata:
            layer.visible = layer.name in names


def landmark_layers(viewer, fixed: Layer, moving: Layer) -> tuple[Points, Points]:
    """The pair's landmark layers, added empty (fixed yellow, moving cyan) if missing."""
    layers = []
    for image, name, colour in zip((fixed, moving), landmark_names(fixed, moving),
                                   ("yellow", "cyan"), strict=True):
        if name not in viewer.layers:
            viewer.add_points(np.empty((0, 2)), name=name, face_color=colour, size=12,
                              scale=tuple(image.scale)[-2:], translate=tuple(image.translate)[-2:],
                              affine=image.affine.affine_matrix[-3:, -3:],
                              metadata={"comir_landmarks_of": image.name})
        layers.append(viewer.layers[name])
    return layers[0], layers[1]


def landmark_pairs(viewer, fixed: Layer, moving: Layer) -> tuple[np.ndarray, np.ndarray]:
    """(fixed, moving) landmarks as (N, 2) (x, y) pixel arrays; InputError if they do not pair up."""
    names = landmark_names(fixed, moving)
    if not all(name in viewer.layers for name in names):
        raise InputError("add the landmark layers first, then click matching structures in both")
    fixed_rc, moving_rc = (np.asarray(viewer.layers[name].data, float)[:, -2:] for name in names)
    if len(fixed_rc) != len(moving_rc):
        raise InputError(f"{len(fixed_rc)} fixed and {len(moving_rc)} moving landmarks: place "
                         "them in pairs, the i-th of each layer on the same structure")
    return fixed_rc[:, ::-1], moving_rc[:, ::-1]


#: Landmark pairs listed one by one; with more, the farthest ones.
MAX_LISTED = 6


def residual_lines(residuals: np.ndarray, pixel_size: float | None) -> list[str]:
    """One line per landmark pair (how far the result puts its moving point from its fixed
    one), then the mean, in px and µm when the pixel size is known."""
    def unit(r: float) -> str:
        return f"{r:.1f} px ({r * pixel_size:.2f} µm)" if pixel_size else f"{r:.1f} px"

    shown = np.argsort(residuals)[::-1][:MAX_LISTED] if len(residuals) > MAX_LISTED else \
        range(len(residuals))
    lines = [f"landmark {i + 1}: {unit(residuals[i])}" for i in shown]
    if len(residuals) > MAX_LISTED:
        lines.insert(0, f"{len(residuals)} pairs, the {MAX_LISTED} farthest:")
    return lines + [f"mean {unit(float(np.mean(residuals)))}"]
