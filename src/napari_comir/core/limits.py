"""What fits: image sizes, memory and disk space checked before any work is done.

Every size a file or an argument claims (a TIFF header's 10⁶ x 10⁶ px, an output grid of
200 000² px) is checked against what the work would allocate or write, and refused in one
line that says what would fit, instead of a MemoryError, a full disk or hours of reading.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import InputError

#: Most pixels of an image read lazily, tile by tile (a whole slide; level 0): about
#: 185 000 x 185 000 px, above the largest whole-slide scans (~100 000 x 200 000 px).
MAX_IMAGE_PIXELS = 2**35
#: Share of the memory available now that one array may take.
MEMORY_SHARE = 0.5


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.3g} MiB"


def available_memory_bytes() -> int | None:
    """Memory available to new allocations now (Linux ``MemAvailable``, else free pages), or
    ``None`` where the system does not say."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_image_pixels(shape, name: str) -> None:
    """Refuse an image whose (rows, cols) exceed :data:`MAX_IMAGE_PIXELS`."""
    rows, cols = (int(n) for n in tuple(shape)[:2])
    if rows * cols > MAX_IMAGE_PIXELS:
        raise InputError(f"{name}: {rows} x {cols} px ({rows * cols:.3g} px) is more than the "
                         f"{MAX_IMAGE_PIXELS:.3g} px supported (e.g. 185000 x 185000); is the "
                         "header right?")


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating it, an array of ``nbytes`` that would take more than
    :data:`MEMORY_SHARE` of the memory available now; the message says how much would fit."""
    available = available_memory_bytes()
    if available is not None and nbytes > MEMORY_SHARE * available:
        raise InputError(f"{what} would take {_gib(nbytes)} of memory; {_gib(available)} are "
                         f"available, so at most {_gib(MEMORY_SHARE * available)} fit")


def check_disk_space(folder: str | os.PathLike, nbytes: int, what: str) -> None:
    """Refuse, before writing it, an output of about ``nbytes`` that the disk under ``folder``
    cannot hold."""
    try:
        free = shutil.disk_usage(Path(folder)).free
    except OSError:
        return
    if nbytes > free:
        raise InputError(f"{what} would take about {_gib(nbytes)} on disk; {_gib(free)} are free "
                         f"in {folder}")
