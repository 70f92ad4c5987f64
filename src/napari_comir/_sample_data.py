"""napari sample data: a synthetic bright-field (H&E) / SHG pair, aligned or with a known motion."""

from __future__ import annotations

from .core.defaults import TRUE_TRANSFORM_KEY
from .core.synthetic import misaligned_pair, synthetic_pair

#: Layer metadata key holding the known moving -> fixed transform of the misaligned sample
#: (``AffineTransform.to_dict()``). Distinct from ``"comir_transform"``, the registration result.


def _shg_layer(shg):
    # Additive blending over the H&E layer shows at a glance whether fibres sit on pink stroma.
    return shg, {"name": "SHG (sample)", "colormap": "gray", "blending": "additive"}, "image"


def sample_pair() -> list[tuple]:
    """Return napari layer data of a pixel-aligned synthetic BF/SHG pair.

    Returns
    -------
    list of tuple
        ``[(bf, kwargs, "image"), (shg, kwargs, "image")]``: ``bf`` is uint8 (rows, cols, 3) RGB,
        ``shg`` is uint8 (rows, cols), both 512 x 512 and on the same pixel grid.
    """
    bf, shg = synthetic_pair()
    return [(bf, {"name": "BF (sample)", "rgb": True}, "image"), _shg_layer(shg)]


def sample_pair_misaligned() -> list[tuple]:
    """Return napari layer data of a synthetic BF/SHG pair whose BF image is rigidly moved.

    Returns
    -------
    list of tuple
        The moving BF layer "BF (sample, misaligned)" and the fixed SHG layer. The BF layer's
        ``metadata[TRUE_TRANSFORM_KEY]`` is the true moving -> fixed transform as a dict with
        ``angle_deg``, ``translation_xy`` and ``matrix_xy`` (acting on (x, y) = (col, row)) and
        ``matrix_rc`` (acting on (row, col)).
    """
    bf_moved, shg, true_transform = misaligned_pair()
    bf_kwargs = {"name": "BF (sample, misaligned)", "rgb": True,
                 "metadata": {TRUE_TRANSFORM_KEY: true_transform.to_dict()}}
    return [(bf_moved, bf_kwargs, "image"), _shg_layer(shg)]
