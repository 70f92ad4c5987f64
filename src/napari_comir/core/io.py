"""Reading and writing images and files, with clear errors and no half-written outputs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PLAIN_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a 2-D grey or RGB image as (rows, cols) or (rows, cols, channels).

    TIFF/OME-TIFF through tifffile, PNG/JPEG through scikit-image. Multi-page
    stacks and 3-D volumes are refused with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such image file: {path}")
    suffix = path.suffix.lower()  # OME-TIFF ends in .tif too
    try:
        if suffix in TIFF_SUFFIXES:
            import logging

            import tifffile

            # tifffile logs its own complaint about broken files; ours below says it once.
            logging.getLogger("tifffile").setLevel(logging.CRITICAL)
            with tifffile.TiffFile(path) as tif:
                if len(tif.series) == 0:
                    raise InputError(f"{path.name}: the TIFF holds no image")
                image = tif.series[0].asarray()
        elif suffix in PLAIN_SUFFIXES:
            from skimage import io as skio

            image = skio.imread(path)
        else:
            raise InputError(
                f"{path.name}: unsupported file type {suffix or '(none)'}; "
                f"expected one of {', '.join(IMAGE_SUFFIXES)}"
            )
    except InputError:
        raise
    except Exception as exc:  # any decoder failure: corrupt or truncated file
        raise InputError(f"{path.name}: cannot read the image ({type(exc).__name__}: {exc})") from exc
    image = np.squeeze(image)
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
        image = np.moveaxis(image, 0, -1)  # planar RGB (C, H, W) -> (H, W, C)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]  # drop alpha: it carries no tissue signal
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise InputError(
            f"{path.name}: shape {image.shape} is not a 2-D grey or RGB image; "
            "multi-page stacks and 3-D volumes are not supported — save one plane per file"
        )
    return image


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an output path that cannot be written, before any work is done for it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output path is a folder, expected a file name: {path}")
    if not path.parent.exists():
        raise InputError(f"output folder does not exist: {path.parent}")
    if not path.parent.is_dir():
        raise InputError(f"output folder is not a folder: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"output folder is not writable: {path.parent}")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it into place.

    Readers never see a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write into {path.parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should get normal permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # directory fsync is not supported everywhere
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tiff(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image (H, W) or (H, W, C) as a compressed TIFF, atomically."""
    import tifffile

    with atomic_path(path) as tmp:
        photometric = "rgb" if image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8 else None
        tifffile.imwrite(tmp, image, photometric=photometric, compression="zlib")
