"""napari-comir: multimodal image registration with CoMIRs, in napari and headless.

>>> import napari_comir as nc
>>> model = nc.load_model("bf-shg")
>>> result = nc.register_multimodal(shg_image, bf_image, model)   # doctest: +SKIP
>>> result.transform.matrix_xy                                      # doctest: +SKIP
"""

import os

# A spinning OpenMP pool made CPU training up to 8x slower on a busy 2-core machine
# (docs/benchmarks.md); this only takes effect if torch is not imported yet. Users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_API = (
    "load_model", "list_models", "new_model", "save_model", "compute_comirs", "export_transform",
    "fine_tune",
    "fit_landmarks",
    "register", "register_comirs", "register_multimodal", "registration_events", "resample",
    "AffineTransform", "RegistrationOptions", "RegistrationOutcome", "TrainConfig",
    "AlignedPair", "read_image", "read_pairs_csv", "save_user_model",
    "apply_transform_to_geojson", "apply_transform_to_image", "apply_transform_to_points",
    "open_image",
)
# Whole-file pipelines.
_FILE_API = ("file_registration_events",)
__all__ = ["__version__", *_API, *_FILE_API]


def __getattr__(name):
    # Lazy: napari imports this package at start-up; torch loads only when the API is used.
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in _FILE_API:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'napari_comir' has no attribute {name!r}")
