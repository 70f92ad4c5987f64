"""Input and output: images and their pixel sizes, safe file writes.

One module per kind of file; the names most callers need are re-exported here.
"""

from .files import (
    atomic_path,
    check_output_path,
    check_outputs_apart,
    file_fingerprint,
    write_text_atomic,
)
from .images import (
    IMAGE_SUFFIXES,
    PLAIN_SUFFIXES,
    TIFF_SUFFIXES,
    read_image,
    read_pixel_size,
    write_tiff,
)

__all__ = [
    "IMAGE_SUFFIXES", "PLAIN_SUFFIXES", "TIFF_SUFFIXES", "atomic_path", "check_output_path",
    "check_outputs_apart", "file_fingerprint", "read_image", "read_pixel_size", "write_text_atomic",
    "write_tiff",
]
