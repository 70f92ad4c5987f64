"""The one registration pipeline, as generators of :class:`~napari_comir.core.progress.Progress`
events: the API re-exports it, and the widgets, the CLI and batch run it.

- :mod:`.options` -- :class:`RegistrationOptions`, the options of every entry point, validated once.
- :mod:`.plan` -- before any work: the images checked, the pixel-size plan, the route (in
  memory at full resolution, or coarse to fine for slides and images over ``LARGE_SIDE``, and
  with a smaller overview for images in memory over ``COARSE_TO_FINE_SIDE``).
- :mod:`.arrays` -- images in memory (or lazy slides): :func:`registration_events`,
  :func:`register_multimodal`, :func:`register_comirs`.
- :mod:`.files` -- image files: :func:`file_registration_events` (read, register, write the
  resampled image and the transform exports).
"""

from .arrays import (
    RegistrationOutcome,
    as_model,
    register_comirs,
    register_multimodal,
    registration_events,
)
from .files import EXPORT_FORMATS, FileRegistration, file_pixel_sizes, file_registration_events
from .options import PIXEL_SIZE_TOLERANCE, RegistrationOptions, recorded_pixel_sizes
from .plan import COARSE_TO_FINE_SIDE, LARGE_SIDE, MIN_SIDE, RegistrationPlan, check_images, plan_registration

__all__ = [
    "COARSE_TO_FINE_SIDE", "EXPORT_FORMATS", "LARGE_SIDE", "MIN_SIDE", "PIXEL_SIZE_TOLERANCE",
    "FileRegistration",
    "RegistrationOptions", "RegistrationOutcome", "RegistrationPlan", "as_model", "check_images",
    "file_pixel_sizes", "file_registration_events", "plan_registration", "recorded_pixel_sizes",
    "register_comirs", "register_multimodal", "registration_events",
]
