"""Reading images and their pixel sizes, and writing TIFFs, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..limits import check_memory
from .files import atomic_path

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
                series = tif.series[0]
                # a header may claim any size: checked before a pixel is read
                check_memory(int(np.prod(series.shape)) * series.dtype.itemsize,
                             f"{path.name}: reading the whole image")
                image = series.asarray()
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


#: Largest pixel size (µm) read from TIFF resolution tags: scanners and microscopes record
#: 0.1-10 µm; the 72 or 96 dpi (353 or 265 µm) that image editors write means "unknown".
MAX_TAGGED_PIXEL_UM = 50.0
_UNIT_TO_UM = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "\\u00B5m": 1.0, "micron": 1.0, "microns": 1.0,
               "mm": 1e3, "cm": 1e4, "m": 1e6}


def read_pixel_size(path: str | os.PathLike) -> float | None:
    """The pixel size (µm, along x) a TIFF records, or ``None`` when it records none that means anything.

    In order: OME-XML ``PhysicalSizeX`` (with its unit), ImageJ's ``unit`` with the resolution
    tags, then the TIFF resolution tags in centimetres or inches, if they give at most
    :data:`MAX_TAGGED_PIXEL_UM` µm. Other files: ``None``.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.ome_metadata:
                size = _ome_pixel_size(tif.ome_metadata)
                if size is not None:
                    return size
            page = tif.pages[0]
            tag = page.tags.get("XResolution")
            if tag is None:
                return None
            numerator, denominator = tag.value
            pixels_per_unit = numerator / denominator if denominator else 0.0
            if pixels_per_unit <= 0:
                return None
            unit = (tif.imagej_metadata or {}).get("unit")
            if unit in _UNIT_TO_UM:
                um_per_unit = _UNIT_TO_UM[unit]
            else:
                resolution_unit = page.tags.get("ResolutionUnit")
                code = int(resolution_unit.value) if resolution_unit is not None else 2
                um_per_unit = {2: 25400.0, 3: 10000.0}.get(code)
                if um_per_unit is None:
                    return None
    except Exception:  # unreadable metadata is no pixel size; read_image reports broken files
        return None
    size = um_per_unit / pixels_per_unit
    return size if 0 < size <= MAX_TAGGED_PIXEL_UM else None


def _ome_pixel_size(xml: str) -> float | None:
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("}Pixels") or element.tag == "Pixels":
            value = element.get("PhysicalSizeX")
            unit = element.get("PhysicalSizeXUnit", "µm")
            if value is not None and unit in _UNIT_TO_UM:
                size = float(value) * _UNIT_TO_UM[unit]
                return size if size > 0 else None
    return None


def write_tiff(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image (H, W) or (H, W, C) as a compressed TIFF, atomically."""
    import tifffile

    with atomic_path(path) as tmp:
        photometric = "rgb" if image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8 else None
        tifffile.imwrite(tmp, image, photometric=photometric, compression="zlib")
