"""What a resampled image holds where its source has no pixels: its own background.

A bright field (H&E, IHC: tissue on a white slide) filled with 0 gets black corners and wedges
wherever a registration turns or shifts it, which read as tissue-free black glass that no slide
has; a dark-field image (SHG, fluorescence) and a label image are filled with 0, their
background.
"""

from __future__ import annotations

import math

import numpy as np

from .review import is_bright_field

#: Most pixels measured for the background; a lazily read slide is measured on its coarsest
#: level when that level is no larger (a single huge level is not read whole for this: 0).
BACKGROUND_SAMPLE_PX = 4096**2
#: The background of a bright field: this percentile of its grey. On the shared H&E/IHC and
#: raw H&E images the 90th lies within 1-6 grey levels of the glass at their corners (the 99th,
#: 3-12 above it, left a bright seam); it lies on glass wherever glass is over a tenth of the
#: image. One grey for all channels: a tinted glass (lavender) keeps a faint seam.
BACKGROUND_PERCENTILE = 90.0
#: A bright field (:func:`~napari_comir.core.review.is_bright_field`): its median grey lies this
#: far up its 1-99 % range (glass is most of a slide, and bright). Stricter than half way: noise
#: or a dark-field image with much signal, filled with white by mistake, would glow where a
#: black fill is merely dull.
BRIGHT_MEDIAN = 0.65


def background_value(image) -> float:
    """The value to fill a resampled ``image`` with outside its own pixels: for a bright field
    the :data:`BACKGROUND_PERCENTILE` of its grey (channel mean, in its own units), else 0.

    Parameters
    ----------
    image : array-like
        (rows, cols[, channels]); numpy, or a lazily read slide (its ``levels``, finest first);
        any other lazy array is not read (0).
    """
    levels = getattr(image, "levels", None)
    if not (levels or isinstance(image, np.ndarray)):
        return 0.0  # another lazy array: not read for this
    level = levels[-1] if levels else image
    rows, cols = level.shape[:2]
    if not isinstance(level, np.ndarray):
        if rows * cols > BACKGROUND_SAMPLE_PX:
            return 0.0
        level = np.asarray(level)
    step = max(1, math.ceil(max(rows, cols) / 512))  # about 512 px a side: percentiles, fast
    sample = level[::step, ::step]
    if sample.size == 0 or not is_bright_field(sample, BRIGHT_MEDIAN):
        return 0.0
    grey = sample.mean(axis=-1) if sample.ndim == 3 else sample  # in the image's own units
    return float(np.percentile(grey, BACKGROUND_PERCENTILE))
