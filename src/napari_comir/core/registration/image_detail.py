"""The images' own detail beside their CoMIRs for the deformable stage, where the images are alike.

Two colour bright fields (H&E against an immunostain of the next section) share a counterstain
(haematoxylin nuclei) and the tissue's outline, so their tissue density agrees at a finer scale
than a one-channel CoMIR taught from a few pairs does. Block-matched as one more channel beside
the CoMIRs (the NCC averaged over the channels), the field lands nearer the landmarks on the
H&E-vs-IHC serial sections with the bundled model and with models taught on one other stain
(docs/benchmarks.md, "Session 19"). Any other pair (bright field against SHG, fluorescence or NIR)
differs in its intensities by modality: the CoMIRs alone are matched there.
"""

from __future__ import annotations

import numpy as np

from .. import review


def with_image_detail(fixed_comir, moving_comir, fixed_image, moving_image
                      ) -> tuple[np.ndarray, np.ndarray, bool]:
    """The two CoMIRs, each with its image's tissue density as one more channel when both images
    are colour bright fields (:func:`~napari_comir.core.review.is_colour_bright_field`).

    Parameters
    ----------
    fixed_comir, moving_comir : np.ndarray
        (rows, cols[, channels]) CoMIRs on the grids of ``fixed_image`` and ``moving_image``.
    fixed_image, moving_image : np.ndarray
        (rows, cols[, channels]) the images the CoMIRs were computed from, on the same grids.

    Returns
    -------
    (np.ndarray, np.ndarray, bool)
        The fixed and the moving (rows, cols, channels) arrays to match, float32, and whether the
        images' detail was added.
    """
    comirs = [np.asarray(comir, np.float32) for comir in (fixed_comir, moving_comir)]
    comirs = [comir[..., None] if comir.ndim == 2 else comir for comir in comirs]
    images = (fixed_image, moving_image)
    if not all(review.is_colour_bright_field(image) for image in images):
        return *comirs, False
    for name, comir, image in zip(("fixed", "moving"), comirs, images, strict=True):
        if comir.shape[:2] != np.shape(image)[:2]:
            raise ValueError(f"the {name} CoMIR ({comir.shape[0]} x {comir.shape[1]}) is not on "
                             f"its image's grid ({np.shape(image)[0]} x {np.shape(image)[1]})")
    stacked = [np.concatenate([comir, review.tissue_density(image)[..., None]], axis=-1)
               for comir, image in zip(comirs, images, strict=True)]
    return *stacked, True
