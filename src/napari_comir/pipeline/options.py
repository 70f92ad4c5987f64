"""The options of a registration, declared and validated once: :class:`RegistrationOptions`.

The API, the file pipeline, batch and the CLI all take these; their defaults are in
:mod:`napari_comir.core.defaults`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from ..core.defaults import (
    DEFAULT_FINAL_REFINEMENT,
    DEFAULT_METHOD,
    DEFAULT_ROTATION_RANGE,
    DEFAULT_SCALE_RANGE,
    DEFAULT_TRANSFORM,
    DEFORMABLE,
    FINAL_REFINEMENTS,
    REGISTRATION_METHODS,
    TRANSFORM_CHOICES,
)
from ..core.errors import InputError
from ..core.registration import angle_bounds, check_model, scale_bounds
from ..core.transforms import AffineTransform

#: With known pixel sizes, the scale still searched: nominal pixel sizes are good to a few percent.
PIXEL_SIZE_TOLERANCE = 1.05
#: Pixel sizes accepted (µm): 0.1 pm to 1 m, so that no ratio of two overflows.
PIXEL_SIZE_BOUNDS_UM = (1e-7, 1e6)


def _pixel_size(value, name: str) -> float | None:
    if value is None:
        return None
    try:
        size = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number of µm per pixel, got {value!r}") from exc
    if not (math.isfinite(size) and PIXEL_SIZE_BOUNDS_UM[0] <= size <= PIXEL_SIZE_BOUNDS_UM[1]):
        raise InputError(f"{name} must be a number of µm per pixel from {PIXEL_SIZE_BOUNDS_UM[0]:g} "
                         f"to {PIXEL_SIZE_BOUNDS_UM[1]:g}, got {value!r}")
    return size


def recorded_pixel_sizes(fixed_size_um, moving_size_um, scale_range=None):
    """The pixel sizes two images record, to register with: both or neither (one known size
    says nothing about the ratio, and a ``scale_range`` asks for a search instead)."""
    if scale_range is not None or None in (fixed_size_um, moving_size_um):
        return None, None
    return fixed_size_um, moving_size_um


@dataclass(frozen=True)
class RegistrationOptions:
    """How to register a pair, checked when made (a bad value is a one-line :class:`InputError`).

    Attributes
    ----------
    method : {"search", "sift"}
        Global rotation x scale x translation search with sub-pixel refinement, or SIFT + RANSAC.
    transform : {"rigid", "similarity", "affine", "deformable"}
        The loosest transform model allowed (default ``"affine"``: two microscopes' pixel grids
        differ by scale, rotation and a little stretch; the simplest model that fits is kept).
        ``"deformable"``: the affine result refined by a smooth displacement field on the
        CoMIRs, kept only when their details agree better beyond chance (images in memory
        only; :mod:`napari_comir.core.registration.deformable`).
    rotation_range : float or (float, float)
        Angles searched, degrees: ±value (180 = any rotation) or a (low, high) range.
    scale_range : (float, float), optional
        Scales (fixed px per moving px) searched when the pixel sizes are unknown; default
        0.8-1.25, at most 0.5-2.
    fixed_pixel_size, moving_pixel_size : float, optional
        Pixel sizes (µm, or any one unit), both or neither: only ±5 % around their ratio is
        searched (the moving image is first brought to the fixed pixel size if the ratio lies
        outside 0.8-1.25). Without them, sizes the images record are used.
    fixed_modality, moving_modality : str, optional
        Which of the model's networks sees each image; default the model card's.
    initial_transform : AffineTransform, optional
        Moving -> fixed start of the refinement instead of the global search, e.g. from
        :func:`napari_comir.api.fit_landmarks` when the search failed.
    device : str, optional
        "auto", "cpu", "cuda", "mps"; default: where the model is ("auto" for a name).
    final_refinement : {"mutual-information", "none"}
        The CoMIR result refined on the original images by Mattes mutual information (images
        in memory; kept unless it moves the result beyond a refinement's reach or the verdict
        turns against it), or kept as it is.
    """

    method: str = DEFAULT_METHOD
    transform: str = DEFAULT_TRANSFORM
    rotation_range: float | tuple[float, float] = DEFAULT_ROTATION_RANGE
    scale_range: tuple[float, float] | None = None
    fixed_pixel_size: float | None = None
    moving_pixel_size: float | None = None
    fixed_modality: str | None = None
    moving_modality: str | None = None
    initial_transform: AffineTransform | None = None
    device: str | None = None
    final_refinement: str = DEFAULT_FINAL_REFINEMENT

    def __post_init__(self):
        if self.method not in REGISTRATION_METHODS:
            raise InputError(f"method must be one of {', '.join(REGISTRATION_METHODS)}, "
                             f"got {self.method!r}")
        if self.transform not in TRANSFORM_CHOICES:
            raise InputError(f"transform must be one of {', '.join(TRANSFORM_CHOICES)}, "
                             f"got {self.transform!r}")
        check_model(self.affine_model)
        if self.final_refinement not in FINAL_REFINEMENTS:
            raise InputError(f"final_refinement must be one of {', '.join(FINAL_REFINEMENTS)}, "
                             f"got {self.final_refinement!r}")
        angle_bounds(self.rotation_range)
        if self.initial_transform is not None and not isinstance(self.initial_transform,
                                                                 AffineTransform):
            raise InputError("initial_transform must be an AffineTransform (e.g. from fit_landmarks)")
        object.__setattr__(self, "fixed_pixel_size", _pixel_size(self.fixed_pixel_size,
                                                                 "fixed_pixel_size"))
        object.__setattr__(self, "moving_pixel_size", _pixel_size(self.moving_pixel_size,
                                                                  "moving_pixel_size"))
        scale_bounds(self.scale_plan()[1], self.affine_model)

    @classmethod
    def build(cls, options: RegistrationOptions | None = None, **values) -> RegistrationOptions:
        """``options`` (default: the defaults) with ``values`` replacing some of its fields."""
        return replace(options or cls(), **values)

    @classmethod
    def from_namespace(cls, namespace) -> RegistrationOptions:
        """The options an ``argparse`` namespace holds under the fields' names (others default)."""
        return cls(**{field.name: getattr(namespace, field.name) for field in fields(cls)
                      if hasattr(namespace, field.name)})

    @property
    def affine_model(self) -> str:
        """The transform model of the affine registration (``"affine"`` before a deformable stage)."""
        return "affine" if self.transform == DEFORMABLE else self.transform

    @property
    def select_model(self) -> bool:
        """Whether the affine registration keeps the simplest transform model that fits
        (``select_model`` of :func:`~napari_comir.core.registration.register`): not before a
        deformable stage. Asking for a field says the tissue deforms; a stricter affine part
        only leaves the field more to recover (on the H&E-vs-IHC serial sections, whose details
        agree weakly, the selection kept rigid or similarity fits up to 2.5 px further from the
        landmarks than the affine fit; docs/benchmarks.md, "Deformable refinement")."""
        return self.transform != DEFORMABLE

    @property
    def pixel_sizes(self) -> tuple[float | None, float | None]:
        """(fixed, moving) pixel sizes, µm; both ``None`` when unknown."""
        return self.fixed_pixel_size, self.moving_pixel_size

    def with_recorded_pixel_sizes(self, fixed_size_um, moving_size_um) -> RegistrationOptions:
        """These options, with the pixel sizes two images record when none were given (both or
        neither; none under a ``scale_range``)."""
        if self.pixel_sizes != (None, None):
            return self
        sizes = recorded_pixel_sizes(fixed_size_um, moving_size_um, self.scale_range)
        return self if sizes == (None, None) else replace(
            self, fixed_pixel_size=sizes[0], moving_pixel_size=sizes[1])

    def scale_plan(self) -> tuple[float, tuple[float, float] | None]:
        """(pre-scale of the moving image, scale range left to search) from what the user knows.

        With both pixel sizes only :data:`PIXEL_SIZE_TOLERANCE` around their ratio is searched.
        When the ratio lies outside :data:`DEFAULT_SCALE_RANGE`, the networks would see tissue
        at too different scales: the moving image is first resampled to the fixed pixel size.
        """
        fixed_size, moving_size = self.pixel_sizes
        if (fixed_size is None) != (moving_size is None):
            raise InputError("give both pixel sizes (fixed and moving) or neither")
        if fixed_size is None or self.affine_model == "rigid":
            return 1.0, self.scale_range
        if self.scale_range is not None:
            raise InputError("give pixel sizes or a scale_range, not both")
        ratio = moving_size / fixed_size  # fixed px per moving px
        residual = (1 / PIXEL_SIZE_TOLERANCE, PIXEL_SIZE_TOLERANCE)
        if DEFAULT_SCALE_RANGE[0] <= ratio <= DEFAULT_SCALE_RANGE[1]:
            return 1.0, (ratio * residual[0], ratio * residual[1])
        return ratio, residual
