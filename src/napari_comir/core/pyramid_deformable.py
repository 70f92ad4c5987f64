"""Deformable refinement of a whole-slide (pyramid) result: the field fitted on a coarse level.

A whole slide's CoMIRs are never held at full resolution, and the deformable stage needs none:
it fits a field smooth over a few % of the long side on a block mean of at most
:data:`~napari_comir.core.registration.deformable.WORK_SIDE` px anyway. So both images are read
at one physical pixel size, the longer one spanning :data:`FIELD_LEVEL_SIDE` px (from the
coarsest pyramid level that allows it), their CoMIRs computed there, the affine result expressed
on that level, and the field fitted and judged there
(:func:`~napari_comir.core.registration.deformable.register_deformable`). The field found is
then lifted to level 0 (:func:`lift_field`): nodes ``k`` times further apart, displacements
``k`` times longer. Resampling a slide through it goes tile by tile
(:func:`~napari_comir.core.tiled_resample.resample_tiles`), so memory stays bounded.

Coordinates: level pixel ``i`` covers level-0 pixels ``k i .. k i + k - 1``, its centre at level-0
``k i + (k - 1) / 2``; with ``F`` that map of the fixed level, a field ``u_k`` found there is
``u(p) = k u_k(F^-1 p)`` at level 0 (``x_m = A^-1 (p + u(p))`` on both).
"""

from __future__ import annotations

import math

import numpy as np

from .field_transform import DisplacementFieldTransform, grid_shape, node_positions_xy, sample_field
from .inference import compute_comir_pair
from .pyramid import _overview_factors, _Reduced, read_reduced
from .registration.deformable import DeformableResult, register_deformable
from .registration.image_detail import with_image_detail
from .registration.levels import to_level
from .transforms import AffineTransform
from .zoo import ComirModel

#: Long side (px) of the level a whole slide's field is fitted on: the deformable stage block-means
#: it to its finest level, but CoMIRs computed this fine see more: on a synthetic 1600 px pair
#: bent by up to 40 px the field missed by 1.3 px (median) from 2048 px, 2.0 px from 1024 px.
FIELD_LEVEL_SIDE = 2048


def lift_field(field: DisplacementFieldTransform, fixed_level: _Reduced, affine: AffineTransform,
               fixed_shape) -> DisplacementFieldTransform:
    """A field found on a block-mean level of the fixed image, as a level-0 transform.

    Parameters
    ----------
    field : DisplacementFieldTransform
        Found on the level (its affine part is the level's).
    fixed_level : _Reduced
        The fixed image's level the field was found on (its block size and start).
    affine : AffineTransform
        The level-0 affine result (moving -> fixed) the level's affine part expresses.
    fixed_shape : (int, int)
        Level-0 (rows, cols) of the fixed image.

    Returns
    -------
    DisplacementFieldTransform
        ``affine`` corrected by ``u(p) = k u_k(F^-1 p)`` on nodes ``k * field.spacing_px`` apart.
    """
    k = fixed_level.factor
    spacing = field.spacing_px * k
    nodes = node_positions_xy(grid_shape(fixed_shape, spacing), spacing)
    on_level = fixed_level.to_full().inverse().apply_xy(nodes.reshape(-1, 2))
    displacement = k * sample_field(field.displacement_xy, field.spacing_px, on_level)
    return DisplacementFieldTransform.from_displacement(affine, displacement.reshape(nodes.shape),
                                                        spacing)


def field_to_levels(transform: DisplacementFieldTransform, fixed_downsample: int,
                    moving_downsample: int) -> DisplacementFieldTransform:
    """A level-0 deformable transform between two block-mean levels (what a review of coarse
    pyramid levels warps with): the inverse of :func:`lift_field`.

    The affine part is :func:`~napari_comir.core.registration.levels.to_level`'s; both fields
    are read at the level's nodes (``spacing_px / fixed_downsample`` level px apart, node ``j``
    at level-0 ``fixed_downsample * j * spacing + (fixed_downsample - 1) / 2``) and shortened
    by ``fixed_downsample``.
    """
    k = int(fixed_downsample)
    affine = to_level(transform.affine, k, int(moving_downsample))
    if k == 1:
        return DisplacementFieldTransform(affine, transform.displacement_xy,
                                          transform.inverse_displacement_xy, transform.spacing_px)
    nodes = node_positions_xy(transform.displacement_xy.shape, transform.spacing_px) + (k - 1) / 2
    fields = [sample_field(field, transform.spacing_px, nodes.reshape(-1, 2)).reshape(nodes.shape) / k
              for field in (transform.displacement_xy, transform.inverse_displacement_xy)]
    return DisplacementFieldTransform(affine, *fields, transform.spacing_px / k)


def register_pyramid_deformable(model: ComirModel, fixed, moving, affine: AffineTransform, *,
                                fixed_modality: str | None = None, moving_modality: str | None = None,
                                side: int = FIELD_LEVEL_SIDE, device=None) -> DeformableResult:
    """Refine a level-0 affine result of two large images with a displacement field.

    Parameters
    ----------
    model : ComirModel
    fixed, moving : array-like or Slide
        (rows, cols[, channels]) raw images of any size, read lazily.
    affine : AffineTransform
        Moving -> fixed level-0 pixel (x, y), e.g. from
        :func:`~napari_comir.core.pyramid.register_pyramid`.
    fixed_modality, moving_modality : str, optional
        Default: the model card's.
    side : int
        Long side (px) of the level the field is fitted on.
    device : str or torch.device, optional

    Returns
    -------
    DeformableResult
        As :func:`~napari_comir.core.registration.deformable.register_deformable`'s, its
        ``transform`` and ``field`` lifted to level 0 (its displacements in level-0 px).
    """
    card = model.card
    scale = math.sqrt(abs(np.linalg.det(affine.matrix_xy[:2, :2])))  # fixed px per moving px
    # one physical pixel size on both levels (a moving px spans `scale` fixed px)
    factor_fixed, factor_moving = _overview_factors(fixed, moving, 1.0, scale, side)
    fixed_level, moving_level = read_reduced(fixed, factor_fixed), read_reduced(moving, factor_moving)
    fixed_comir, moving_comir = compute_comir_pair(
        model, fixed_level.pixels, fixed_modality or card.fixed_modality,
        moving_level.pixels, moving_modality or card.moving_modality)
    level_affine = fixed_level.to_full().inverse().compose(affine).compose(moving_level.to_full())
    fixed_matched, moving_matched, image_detail = with_image_detail(
        fixed_comir, moving_comir, fixed_level.pixels, moving_level.pixels)
    found = register_deformable(fixed_matched, moving_matched, level_affine, device=device)
    found.image_detail = image_detail
    found.max_displacement_px *= factor_fixed
    found.mean_displacement_px *= factor_fixed
    if found.field is not None:
        found.field = lift_field(found.field, fixed_level, affine, fixed.shape[:2])
        found.min_jacobian = found.field.min_jacobian
    found.transform = found.field if found.kept else affine
    return found


__all__ = ["FIELD_LEVEL_SIDE", "field_to_levels", "lift_field", "register_pyramid_deformable"]
