"""Resample a moving image of any size onto the fixed grid tile by tile, and write it as a pyramid.

Each output tile reads only the moving region its pixels come from (plus the interpolation's
margin), so memory is a few tiles whatever the image size, and every tile holds the pixels of
:func:`~napari_comir.core.resampling.resample` on the whole image (the same ones, or for 8-bit
bilinear resampling, whose samples are float32, within one grey level where a rounding tie
falls the other way). The full-resolution tiles go into the output as they come; only the
coarser levels pass through temporary data.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .background import background_value
from .defaults import DEFAULT_TILE_COMPRESSION
from .errors import InputError
from .field_transform import read_at, source_xy
from .io.files import (
    check_output_path,
    remove_stale_temporaries,
    staging_directory,
    temporary_prefix,
    write_errors,
)
from .io.slides import (
    OME_ZARR_MARK,
    OUTPUT_TILE,
    add_pyramid_levels,
    array_tiles,
    halve,
    pyramid_shapes,
    scratch_array,
    tiff_compression,
    write_ome_zarr_metadata,
    write_tiff_levels,
)
from .limits import check_disk_space, check_image_pixels
from .progress import Progress
from .resampling import cast_like, resample
from .threads import bounded_map, check_workers, reporting_thread
from .transforms import AffineTransform

#: Side of the output tiles resampled at a time (px).
RESAMPLE_TILE = 1024
OME_ZARR_SUFFIX = ".ome.zarr"
#: Pixel types OME-XML can describe (int64, uint64 and float16 it cannot).
OME_TIFF_DTYPES = tuple(np.dtype(name) for name in ("bool", "int8", "uint8", "int16", "uint16",
                                                       "int32", "uint32", "float32", "float64"))


def resample_tiles(moving, transform, output_shape, *, tile: int = RESAMPLE_TILE,
                   order: int = 1, cval: float = 0.0, workers: int = 1,
                   then: Callable[[slice, slice, np.ndarray], None] | None = None,
                   ) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Yield ``(rows, cols, pixels)`` of the moving image resampled onto the fixed grid, tile by tile.

    Parameters
    ----------
    moving : array-like
        (rows, cols[, channels]); numpy, or lazy (:class:`~napari_comir.core.io.slides.Slide`,
        zarr): only the region under each tile is read.
    transform : AffineTransform or DisplacementFieldTransform
        Moving -> fixed, pixel (x, y). A deformable tile reads the moving region its pixels'
        sources span (the field is evaluated for every pixel of the tile).
    output_shape : (int, int)
        Fixed grid (rows, cols).
    tile, order, cval
        Output tile side; spline order (0 nearest neighbour for labels, 1 bilinear); value
        outside the moving image.
    workers : int
        Threads resampling tiles at once (tiles still come in row-major order).
    then : callable, optional
        ``then(rows, cols, pixels)`` on the resampling thread, as each tile is made (storing it
        where it goes spreads that work over the threads too).
    """
    to_moving = transform.inverse()

    def resample_tile(region):
        pixels = _resample_tile(moving, transform, to_moving, *region, order, cval)
        if then is not None:
            then(*region, pixels)
        return (*region, pixels)

    return bounded_map(resample_tile, _tile_regions(output_shape, tile), workers)


def _tile_regions(output_shape, tile: int) -> Iterator[tuple[slice, slice]]:
    """(rows, cols) slices of the ``tile`` px tiles of a (rows, cols) grid, row-major."""
    rows, cols = (int(n) for n in tuple(output_shape)[:2])
    for row in range(0, rows, tile):
        for col in range(0, cols, tile):
            yield slice(row, min(rows, row + tile)), slice(col, min(cols, col + tile))


def _resample_tile(moving, transform, to_moving, out_rows: slice, out_cols: slice, order: int,
                   cval: float) -> np.ndarray:
    """The pixels of one output tile, from the moving region they come from."""
    row, col = out_rows.start, out_cols.start
    shape = (out_rows.stop - row, out_cols.stop - col)
    margin = order + 1  # the spline's support around each mapped pixel centre
    moving_rows, moving_cols = moving.shape[:2]
    affine = isinstance(transform, AffineTransform)
    if affine:
        mapped = to_moving.apply_xy(np.array(
            [[col, row], [out_cols.stop - 1, row], [col, out_rows.stop - 1],
             [out_cols.stop - 1, out_rows.stop - 1]], float))
    else:
        sources = source_xy(transform, out_rows, out_cols)
        mapped = sources.reshape(-1, 2)
    x0, y0 = (max(0, math.floor(v) - margin) for v in mapped.min(axis=0))
    x1 = min(moving_cols, math.ceil(mapped[:, 0].max()) + margin + 1)
    y1 = min(moving_rows, math.ceil(mapped[:, 1].max()) + margin + 1)
    if x0 >= x1 or y0 >= y1:  # the tile lies outside the moving image
        return np.full(shape + tuple(moving.shape[2:]), cval, dtype=moving.dtype)
    crop = np.asarray(moving[y0:y1, x0:x1])
    if affine:
        local = (AffineTransform.rigid(0.0, (-col, -row)).compose(transform)
                 .compose(AffineTransform.rigid(0.0, (x0, y0))))
        return resample(crop, local, shape, order=order, cval=cval)
    return cast_like(read_at(crop, sources - [x0, y0], order, cval), crop.dtype)


def _is_ome_zarr(path: Path) -> bool:
    return path.name.lower().endswith(OME_ZARR_SUFFIX)


def earlier_ome_zarr_output(path: Path) -> bool:
    """Whether the folder ``path`` is an OME-Zarr this program wrote and nothing else: a
    ``.zattrs`` carrying its mark, a ``.zgroup``, and the levels "0".."n-1" it lists. Only such
    a folder may be replaced; one holding anything more (a user's file, an input) is not."""
    import json

    try:
        attributes = json.loads((path / ".zattrs").read_text())
        levels = attributes[OME_ZARR_MARK]["levels"]
        entries = {entry.name for entry in path.iterdir()}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return False
    if not isinstance(levels, int) or not 0 < levels <= 64:
        return False
    return entries <= {".zattrs", ".zgroup", *map(str, range(levels))} and not any(
        (path / entry).is_symlink() for entry in entries)


def check_resampled_path(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a resampled-output name that cannot be written (an existing
    ``.ome.zarr`` is replaced only when :func:`earlier_ome_zarr_output` says it may be)."""
    path = Path(path)
    suffixes = (".tif", ".tiff", OME_ZARR_SUFFIX)
    if not path.name.lower().endswith(suffixes):
        raise InputError(f"{path.name}: name the image output .tif, .ome.tif (a tiled pyramid) "
                         f"or {OME_ZARR_SUFFIX}")
    if _is_ome_zarr(path):
        if (path.exists() or path.is_symlink()) and (path.is_symlink() or not earlier_ome_zarr_output(path)):
            raise InputError(f"{path} exists and is not an earlier OME-Zarr output of napari-comir "
                             "holding nothing else: it will not be replaced; name a new folder")
        check_output_path(path.parent / f"{path.name}.check")  # the folder must be writable
        return path
    return check_output_path(path)


def check_compression(path: str | os.PathLike, compression: str, dtype, rgb: bool,
                      labels: bool = False) -> None:
    """Refuse, before any work, a ``compression`` the output ``path`` cannot have: one that
    cannot hold these pixels (:func:`~napari_comir.core.io.slides.tiff_compression`), or any
    but "auto" for an OME-Zarr (written with zarr's own lossless compression)."""
    path = Path(path)
    if _is_ome_zarr(path):
        if compression != DEFAULT_TILE_COMPRESSION:
            raise InputError(f"{path.name}: an OME-Zarr is written with zarr's own lossless "
                             "compression; a compression applies to TIFF outputs")
        return
    tiff_compression(compression, dtype, rgb, labels)


def resample_to_file(moving, transform, output_shape, path: str | os.PathLike, *,
                     pixel_size_um: float | None = None, order: int = 1,
                     tile: int = RESAMPLE_TILE, compression: str = DEFAULT_TILE_COMPRESSION,
                     workers: int | None = None) -> Iterator[Progress]:
    """Resample onto the fixed grid and write the result, in bounded memory, as Progress events.

    ``path`` ending in ``.ome.tif`` is written as a tiled, pyramidal OME-TIFF (levels halved
    until the long side fits 1024 px, so ≥ 2 levels above 2048 px), ``.ome.zarr`` as OME-Zarr
    (NGFF 0.4, channels first), another ``.tif`` as one tiled level. ``pixel_size_um`` (the
    fixed image's) is recorded; with ``order`` 0 (labels) coarser levels subsample instead of
    averaging. A TIFF's tiles are compressed as ``compression`` says
    (:func:`~napari_comir.core.io.slides.tiff_compression`: by default JPEG for 8-bit RGB,
    lossless zlib otherwise; an OME-Zarr takes only "auto", zarr's lossless default). Tiles are
    resampled, averaged into levels and encoded on ``workers`` threads (default: every core
    this process may use); the pixels do not depend on it. Outside the moving image the output
    holds its background (:func:`~napari_comir.core.background.background_value`; 0 for labels).
    A TIFF's full-resolution tiles are
    encoded as they are resampled, never stored twice (a 40 000² H&E in about a minute); only
    the coarser levels pass through temporary data. ``tile`` (a multiple of 512) is the side
    resampled at a time. The file appears whole or not at all, on an error or a Stop (closing
    this generator) too.
    """
    import zarr

    path = check_resampled_path(path)
    workers = check_workers(workers)
    rows, cols = (int(n) for n in tuple(output_shape)[:2])
    extra = tuple(moving.shape[2:])
    check_compression(path, compression, moving.dtype, len(extra) == 1, labels=order == 0)
    remove_stale_temporaries(path)
    check_image_pixels((rows, cols), f"the output {path.name}")
    ome_tiff = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    if ome_tiff and np.dtype(moving.dtype) not in OME_TIFF_DTYPES:
        raise InputError(f"{path.name}: OME-TIFF cannot hold {np.dtype(moving.dtype)} pixels; name the "
                         f"output {OME_ZARR_SUFFIX} or .tif, or convert the image")
    # the written levels: the full grid and a third more for the coarser ones
    check_disk_space(path.parent, rows * cols * math.prod(extra) * np.dtype(moving.dtype).itemsize * 4 // 3,
                     f"{path.name} ({rows} x {cols} px)")
    if tile % OUTPUT_TILE:
        raise ValueError(f"tile must be a multiple of {OUTPUT_TILE} px (the written tiles), got {tile}")
    with write_errors(path):  # a full disk: one line, and the temporary data removed
        work = Path(tempfile.mkdtemp(prefix=temporary_prefix(path), suffix=".zarr", dir=path.parent))
    try:
        with write_errors(path):
            shapes = [shape + extra for shape in pyramid_shapes((rows, cols))]
            if not path.name.lower().endswith((".ome.tif", ".ome.tiff", OME_ZARR_SUFFIX)):
                shapes = shapes[:1]  # a plain TIFF: one level
            job = _Resampling(moving, transform, shapes, tile, order, workers,
                              zarr.open_group(work, mode="w"),
                              0.0 if order == 0 else background_value(moving))
            if _is_ome_zarr(path):
                yield from _resample_to_ome_zarr(job, path, pixel_size_um)
            else:
                yield from reporting_thread(lambda report: _resample_to_tiff(
                    job, path, pixel_size_um, compression, report))
            yield Progress("write", 1, 1, f"wrote {path} ({len(shapes)} level(s))", result=path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class _Resampling:
    """One resampling onto the fixed grid, tile by tile, into the levels ``shapes`` (finest
    first): level 0 goes where the output wants it as the tiles come; level 1 is halved from
    the same tiles into the temporary zarr ``group``, the coarser levels from it afterwards."""

    moving: object
    transform: object
    shapes: list
    tile: int
    order: int
    workers: int
    group: object
    cval: float  # outside the moving image

    @property
    def n_tiles(self) -> int:
        rows, cols = self.shapes[0][:2]
        return math.ceil(rows / self.tile) * math.ceil(cols / self.tile)

    def tiles(self, store: Callable[[slice, slice, np.ndarray], None] | None = None,
              ) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """:func:`resample_tiles`, each tile given to ``store`` and halved into level 1 on the
        resampling threads."""
        first = None
        if len(self.shapes) > 1:  # a tile halves into whole chunks: threads never write one chunk
            first = scratch_array(self.group, "1", self.shapes[1], (self.tile // 2, self.tile // 2)
                                  + tuple(self.shapes[1][2:]), self.moving.dtype)

        def keep(rows, cols, pixels) -> None:
            if store is not None:
                store(rows, cols, pixels)
            if first is not None:
                halved = halve(pixels, self.order == 0)
                row, col = rows.start // 2, cols.start // 2
                first[row:row + halved.shape[0], col:col + halved.shape[1]] = halved

        return resample_tiles(self.moving, self.transform, self.shapes[0][:2], tile=self.tile,
                              order=self.order, cval=self.cval, workers=self.workers, then=keep)

    def coarser_levels(self) -> list:
        """Levels 1, 2, ... (zarr, channels last), once every tile has passed."""
        if len(self.shapes) == 1:
            return []
        return add_pyramid_levels(self.group, labels=self.order == 0, workers=self.workers, first=1)

    def message(self) -> str:
        rows, cols = self.shapes[0][:2]
        return f"resampling {rows}x{cols} px onto the fixed grid"


def _resample_to_ome_zarr(job: _Resampling, path: Path, pixel_size_um) -> Iterator[Progress]:
    """Write an OME-Zarr beside ``path`` as the tiles are resampled (channels first, as NGFF
    orders axes), then move it into place (an earlier image of that name is replaced only then)."""
    import zarr

    staging = staging_directory(path)
    try:
        group = zarr.open_group(staging, mode="w", zarr_format=2)
        rgb = len(job.shapes[0]) == 3

        def channels_first(shape) -> tuple:
            return ((shape[2],) if rgb else ()) + tuple(shape[:2])

        # chunks of OUTPUT_TILE px: a resampled tile covers whole ones, so threads never share one
        levels = [group.create_array(str(index), shape=channels_first(shape),
                                     chunks=channels_first((OUTPUT_TILE, OUTPUT_TILE) + tuple(shape[2:])),
                                     dtype=job.moving.dtype) for index, shape in enumerate(job.shapes)]

        def store(level, rows, cols, pixels) -> None:
            if rgb:
                level[:, rows, cols] = np.moveaxis(pixels, -1, 0)
            else:
                level[rows, cols] = pixels

        yield Progress("resample", 0, job.n_tiles, job.message())
        # closed on a Stop or an error: no thread writes into the staging folder once it goes
        with contextlib.closing(job.tiles(lambda rows, cols, pixels: store(levels[0], rows, cols,
                                                                           pixels))) as tiles:
            for done, _ in enumerate(tiles, start=1):
                yield Progress("resample", done, job.n_tiles, f"tile {done}/{job.n_tiles}")
        yield Progress("write", 0, 1, f"writing {path.name}")
        for level, coarser in zip(levels[1:], job.coarser_levels(), strict=True):
            for row in range(0, coarser.shape[0], OUTPUT_TILE):
                for col in range(0, coarser.shape[1], OUTPUT_TILE):
                    block = np.asarray(coarser[row:row + OUTPUT_TILE, col:col + OUTPUT_TILE])
                    store(level, slice(row, row + block.shape[0]), slice(col, col + block.shape[1]), block)
        write_ome_zarr_metadata(group, len(levels), pixel_size_um, rgb, path.name)
        old = None
        if path.exists():
            old = path.with_name(f"{temporary_prefix(path)}old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)


def _resample_to_tiff(job: _Resampling, path: Path, pixel_size_um, compression: str,
                      report: Callable[..., None]) -> None:
    """Write the TIFF as the tiles are resampled: level 0 is never stored (each band of tiles
    is encoded as it comes)."""
    rows, cols = job.shapes[0][:2]

    def level_zero() -> Iterator[np.ndarray]:
        report(Progress("resample", 0, job.n_tiles, job.message()))
        per_band, done = math.ceil(cols / job.tile), 0
        # closed on a Stop or an error: no thread writes temporary data once it goes
        with contextlib.closing(job.tiles()) as tiles:
            for _ in range(0, rows, job.tile):
                band = [pixels for *_, pixels in itertools.islice(tiles, per_band)]
                done += len(band)
                report(Progress("resample", done, job.n_tiles, f"tile {done}/{job.n_tiles}"))
                for top in range(0, band[0].shape[0], OUTPUT_TILE):  # the TIFF's tiles, row-major
                    for pixels in band:
                        for left in range(0, pixels.shape[1], OUTPUT_TILE):
                            yield pixels[top:top + OUTPUT_TILE, left:left + OUTPUT_TILE]

    coarser = []

    def coarser_level(index: int) -> Iterator[np.ndarray]:
        # a report is where a Stop ends the work: here before a level's seconds of averaging
        report(Progress("write", 0, 1, f"writing {path.name}: level {index + 1} of {len(job.shapes)}"))
        if not coarser:  # level 1 is whole once level 0 is written
            coarser.extend(job.coarser_levels())
        yield from array_tiles(coarser[index - 1], OUTPUT_TILE, job.workers)

    write_tiff_levels(path, job.shapes, job.moving.dtype,
                      lambda index: level_zero() if index == 0 else coarser_level(index),
                      pixel_size_um, compression=compression, labels=job.order == 0,
                      workers=job.workers,
                      before_keeping=lambda: report(Progress("write", 0, 1, f"closing {path.name}"),
                                                    confirm=True))
