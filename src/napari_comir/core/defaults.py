"""Defaults shared by the core, the API, the CLI and the widgets, declared once.

Plain values only (no numpy, no torch): the CLI reads them before it imports anything heavy.
"""

#: The transform models, from the most to the least constrained.
TRANSFORM_MODELS = ("rigid", "similarity", "affine")
#: The affine result refined by a smooth displacement field on the CoMIRs (kept only when the
#: details agree better beyond chance: core/registration/deformable.py).
DEFORMABLE = "deformable"
#: What ``--transform`` / ``transform=`` accept: a model, or the deformable refinement of affine.
TRANSFORM_CHOICES = (*TRANSFORM_MODELS, DEFORMABLE)
#: The transform model by default. Affine: on the 20 raw BF/SHG cases it registered 20 (median
#: 1.4 px), similarity 16 and rigid 5, and it keeps the synthetic rigid results
#: (docs/benchmarks.md, "Real pairs").
DEFAULT_TRANSFORM = "affine"
#: How the start of the refinement is found: "search" (global rotation x scale x translation
#: search, any angle) or "sift" (SIFT features + RANSAC).
REGISTRATION_METHODS = ("search", "sift")
DEFAULT_METHOD = "search"
#: The last step of a registration in memory: "mutual-information" refines the CoMIR result on
#: the original images (Mattes MI, as elastix; median 1.32 -> ~0.9 px on the 20 raw BF/SHG
#: cases, docs/benchmarks.md), "none" keeps the CoMIR result.
FINAL_REFINEMENTS = ("mutual-information", "none")
DEFAULT_FINAL_REFINEMENT = "mutual-information"
#: Angles searched by default, degrees: ±180 = any rotation.
DEFAULT_ROTATION_RANGE = 180.0
#: Scales (fixed px per moving px) searched when the pixel sizes are unknown: the raw H&E of the
#: shared cases lies within 0.88-1.10 of its SHG; microscopes' nominal sizes are rarely further off.
DEFAULT_SCALE_RANGE = (0.8, 1.25)
#: Widest scale range accepted: beyond it the CoMIRs' features differ too much in size; give the
#: pixel sizes instead, and the moving image is resampled to the fixed one's first.
WIDEST_SCALE_RANGE = (0.5, 2.0)
#: The model used when none is named.
DEFAULT_MODEL_NAME = "bf-shg"

#: A registration succeeds when the mean distance of the image's 4 corners under the true and
#: the found transform is at most this fraction of the image's width (MultiRegEval's criterion).
SUCCESS_FRACTION = 0.02
#: Architecture of a model trained from scratch (the bundled ones': docs/models.md).
DEFAULT_ARCHITECTURE = {"type": "unet", "base_channels": 8, "depth": 4}
#: Training defaults (``TrainConfig`` and ``napari-comir train``).
DEFAULT_STEPS, DEFAULT_BATCH_SIZE, DEFAULT_PATCH_SIZE = 300, 16, 128

#: Layer metadata keys the plugin writes: the registration result on a registered layer, and the
#: known answer the misaligned sample pair carries.
TRANSFORM_KEY = "comir_transform"
TRUE_TRANSFORM_KEY = "comir_true_transform"
#: Wall-clock budget (s) of teaching a new modality pair (core.teaching): the issue's 2 minutes
#: on 2 CPU cores.
DEFAULT_TEACH_SECONDS = 120.0

#: What the review overlay can show (``core.review``): fine structure both images share, an H&E's
#: eosin or haematoxylin stain, or the CoMIRs.
REVIEW_VIEWS = ("structure", "eosin", "haematoxylin", "comir")
#: The review view by default. Structure: on the 20 raw BF/SHG pairs a right and a wrong (8 px)
#: result differ in every one; the eosin view hardly told them apart on eosin-dense cores
#: (docs/benchmarks.md, "Review views").
DEFAULT_REVIEW_VIEW = "structure"
#: Size (px) of the structures the structure view keeps: detail of about this size, relative to
#: its surroundings, survives; broad stain density does not.
DEFAULT_REVIEW_FEATURE_PX = 8.0

#: How the tiles of a written TIFF pyramid are compressed (``--compression``, ``compression=``):
#: "auto" is JPEG for 8-bit RGB (bright field, as slide scanners write it: 10-20x smaller, and
#: encoded in about a twentieth of zlib's time) and zlib, lossless, for everything else (grey
#: images, labels, 16-bit). "zstd" is the fastest lossless codec, but older Bio-Formats (QuPath
#: before 0.5) cannot read it; "lzw" and "zlib" every TIFF reader can.
TILE_COMPRESSIONS = ("auto", "jpeg", "zlib", "lzw", "zstd", "none")
DEFAULT_TILE_COMPRESSION = "auto"
#: JPEG quality of "jpeg" tiles (libjpeg's 0-100; scanners write 70-90): on H&E tiles the mean
#: error is about 1-3 grey levels of 255.
DEFAULT_JPEG_QUALITY = 90
