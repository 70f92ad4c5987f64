"""Whole-slide images: pyramidal or tiled TIFF levels read lazily, and pyramids written tile by tile.

A :class:`Slide` holds no pixels: each level is a :class:`LazyImage` that reads only the region
it is sliced with (tifffile's zarr store), so a 100 000 px H&E costs the memory of the windows
read from it. Level ``k`` of a pyramid is ``downsamples[k]`` times coarser than level 0; its pixel
``i`` is centred on level-0 coordinate ``d * i + (d - 1) / 2`` (as a ``d`` x ``d`` block mean).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..defaults import DEFAULT_JPEG_QUALITY, DEFAULT_TILE_COMPRESSION, TILE_COMPRESSIONS
from ..errors import InputError
from ..limits import check_image_pixels, check_memory
from ..threads import available_cores, bounded_map
from .images import TIFF_SUFFIXES, read_image, read_pixel_size

#: Images with a side above this are opened lazily (and registered coarse to fine).
LAZY_SIDE = 4096
#: Tile side of written TIFF pyramids and chunk side of OME-Zarr arrays.
OUTPUT_TILE = 512
#: A written pyramid gets levels, each half the previous, until the long side fits this.
PYRAMID_TOP_SIDE = 1024
_SUPPORTED_AXES = {"YX": None, "YXS": None, "CYX": 0, "SYX": 0}


class LazyImage:
    """One level of a TIFF as a (rows, cols) or (rows, cols, 3) array read on demand.

    Slicing with ``[rows, cols]`` reads only the tiles those slices touch and returns numpy,
    channels last (planar RGB is moved, an alpha channel dropped). ``numpy.asarray`` reads all.
    """

    def __init__(self, array, channel_axis: int | None, name: str):
        self._array = array
        self._channel_axis = channel_axis
        shape = list(array.shape)
        channels = shape.pop(channel_axis) if channel_axis is not None else (
            shape.pop() if len(shape) == 3 else None)
        if channels not in (None, 3, 4):
            raise InputError(f"{name}: {channels} channels is not a grey or RGB image")
        self._channels = channels
        self._name = name
        self.shape = tuple(shape) + ((3,) if channels else ())
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)
        self.nbytes = self.size * self.dtype.itemsize

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        rows, cols = (tuple(key) + (slice(None), slice(None)))[:2]
        if any(not isinstance(s, slice) for s in (rows, cols)):
            raise TypeError("a LazyImage is sliced with two slices: image[rows, cols]")
        try:  # tiles are decoded only now: a truncated file or a deflate bomb fails here
            if self._channel_axis is not None:
                block = np.moveaxis(np.asarray(self._array[:, rows, cols]), 0, -1)
            else:
                block = np.asarray(self._array[rows, cols])
        except Exception as exc:
            raise InputError(f"{self._name}: cannot read the image's tiles ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'damaged'}); the file is "
                             "damaged or truncated") from exc
        if self._channels:
            block = block[..., :3]
        return block[(slice(None), slice(None)) + tuple(key[2:])] if len(key) > 2 else block

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        check_memory(self.size * self.dtype.itemsize, f"{self._name}: reading a whole level")
        block = self[:, :]
        return block if dtype is None else block.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


@dataclass
class Slide:
    """A large image read lazily: its levels (finest first), their downsampling and pixel size.

    Attributes
    ----------
    levels : list of LazyImage
        Level 0 is full resolution.
    downsamples : list of int
        Level-0 pixels per level pixel along each axis (1, 2, 4, ... for a typical pyramid).
    pixel_size_um : float or None
        Level-0 pixel size in µm, if the file records one that means something.
    path : Path
    """

    levels: list
    downsamples: list[int]
    pixel_size_um: float | None
    path: Path
    _file: object = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.levels[0].shape

    @property
    def dtype(self) -> np.dtype:
        return self.levels[0].dtype

    @property
    def ndim(self) -> int:
        return self.levels[0].ndim

    @property
    def size(self) -> int:
        return self.levels[0].size

    def __getitem__(self, key) -> np.ndarray:
        return self.levels[0][key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.levels[0].__array__(dtype)

    def level_at_most(self, factor: float) -> int:
        """Index of the coarsest level at most ``factor`` times coarser than level 0."""
        fitting = [i for i, d in enumerate(self.downsamples) if d <= factor + 1e-9]
        return max(fitting, key=lambda i: self.downsamples[i])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a TIFF (pyramidal OME-TIFF, tiled or striped TIFF, SVS-like) lazily.

    Raises
    ------
    InputError
        Not a readable TIFF, or not a 2-D grey or RGB image.
    """
    import tifffile
    import zarr

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such image file: {path}")
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise InputError(f"{path.name}: only TIFF files are read lazily, got {path.suffix}")
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise InputError(f"{path.name}: cannot read the image ({type(exc).__name__}: {exc})") from exc
    try:
        if not tif.series:
            raise InputError(f"{path.name}: the TIFF holds no image")
        series = tif.series[0]
        axes = series.get_axes(squeeze=True) if hasattr(series, "get_axes") else series.axes
        if axes not in _SUPPORTED_AXES:
            raise InputError(f"{path.name}: axes {axes} (shape {series.shape}) are not a 2-D grey "
                             "or RGB image; multi-page stacks and 3-D volumes are not supported")
        levels, downsamples = [], []
        base_rows = None
        for index in range(len(series.levels)):
            # tiles decoded on every core (below 3 cores tifffile would decode them one at a
            # time in zarr's event loop, which every reading thread then waits for)
            array = zarr.open(series.aszarr(level=index, maxworkers=available_cores()), mode="r")
            if array.ndim != len(axes):
                raise InputError(f"{path.name}: level {index} has shape {array.shape}, not the "
                                 f"series' axes {axes}")
            image = LazyImage(array, _SUPPORTED_AXES[axes], path.name)
            base_rows = base_rows or image.shape[0]
            levels.append(image)
            downsamples.append(max(1, round(base_rows / image.shape[0])))
    except InputError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise InputError(f"{path.name}: cannot read the image ({type(exc).__name__}: {exc})") from exc
    try:  # a header may claim any size: refused before a pixel is read
        check_image_pixels(levels[0].shape, path.name)
    except InputError:
        tif.close()
        raise
    return Slide(levels, downsamples, read_pixel_size(path), path, tif)


def close_images(*images) -> None:
    """Close the images opened lazily (a :class:`Slide` holds its file open; arrays need nothing)."""
    for image in images:
        if hasattr(image, "close"):
            image.close()


def slide_from_levels(levels: list, pixel_size_um: float | None = None,
                      name: str = "image") -> Slide:
    """A :class:`Slide` over array-likes already open (e.g. a napari multiscale layer's dask
    levels), finest first, each (rows, cols[, channels]) and sliceable as ``level[rows, cols]``."""
    if not levels:
        raise InputError(f"{name}: a multiscale image needs at least one level")
    base_rows = levels[0].shape[0]
    downsamples = [max(1, round(base_rows / level.shape[0])) for level in levels]
    return Slide(list(levels), downsamples, pixel_size_um, Path(name))


def open_image(path: str | os.PathLike, lazy_side: int = LAZY_SIDE):
    """An image as numpy when it is small, or as a lazily read :class:`Slide` when it is large.

    A TIFF is opened lazily when it is pyramidal or a side exceeds ``lazy_side``; every other
    image is read whole by :func:`~napari_comir.core.io.images.read_image`.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        slide = open_slide(path)
        if len(slide.levels) > 1 or max(slide.shape[:2]) > lazy_side:
            return slide
        slide.close()
    return read_image(path)


def pyramid_shapes(shape_rc, top_side: int = PYRAMID_TOP_SIDE) -> list[tuple[int, int]]:
    """(rows, cols) of each level of a written pyramid: halved until the long side fits ``top_side``."""
    shapes = [tuple(int(n) for n in shape_rc[:2])]
    while max(shapes[-1]) > top_side and min(shapes[-1]) >= 2:
        shapes.append(tuple(n // 2 for n in shapes[-1]))
    return shapes


def block_mean(image, factor: int, band_rows: int = 1024, rows: slice = slice(None),
               cols: slice = slice(None)) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of the region ``image[rows, cols]`` of
    (rows, cols[, channels]), read in pieces of about ``band_rows``² px: a lazily read level
    (:class:`LazyImage`) is never whole in memory, whatever the region's size.

    Trailing rows/columns that do not fill a block are dropped. Output pixel (r, c) covers
    region rows ``factor*r ... factor*r + factor - 1``: its centre is region row
    ``factor*r + (factor - 1) / 2``.
    """
    row0, row1, _ = rows.indices(image.shape[0])
    col0, col1, _ = cols.indices(image.shape[1])
    out_rows, out_cols = max(0, row1 - row0) // factor, max(0, col1 - col0) // factor
    rest = tuple(image.shape[2:])
    out = np.empty((out_rows, out_cols) + rest, np.float32)
    step = max(1, band_rows // factor)
    # each read at most about band_rows² input px, whatever the width: a 10⁶ px wide level is
    # read in pieces, not a band of 4 GB at a time
    col_step = max(1, band_rows * band_rows // (step * factor * factor))
    for start in range(0, out_rows, step):
        n = min(step, out_rows - start)
        for col in range(0, out_cols, col_step):
            m = min(col_step, out_cols - col)
            top, left = row0 + start * factor, col0 + col * factor
            band = np.asarray(image[top:top + n * factor, left:left + m * factor], np.float32)
            out[start:start + n, col:col + m] = band.reshape(n, factor, m, factor, *rest).mean(axis=(1, 3))
    return out


def _block_mean_2(block: np.ndarray) -> np.ndarray:
    """2 x 2 block means of (rows, cols[, channels]) in the block's dtype (odd edges dropped;
    integers rounded half to even, as ``numpy.rint``)."""
    if not (np.issubdtype(block.dtype, np.integer) and block.dtype.itemsize <= 2):
        halved = block_mean(block, 2)
        return (np.rint(halved) if np.issubdtype(block.dtype, np.integer) else halved).astype(block.dtype)
    # 8 and 16 bits: the four pixels summed in int32, 7x faster than a float mean
    block = block[:block.shape[0] // 2 * 2, :block.shape[1] // 2 * 2]
    total = block[0::2, 0::2].astype(np.int32)
    for part in (block[1::2, 0::2], block[0::2, 1::2], block[1::2, 1::2]):
        total += part
    quotient, remainder = total >> 2, total & 3  # floor(total / 4) and the quarters left
    quotient += (remainder > 2) | ((remainder == 2) & (quotient & 1).astype(bool))
    return quotient.astype(block.dtype)


def scratch_array(group, name: str, shape, chunks, dtype):
    """A zarr array for pixels on their way into a file: uncompressed, and every chunk stored
    as it comes (zarr's check whether a chunk holds only the fill value costs as much as
    storing it; these are read back once)."""
    return group.create_array(name, shape=tuple(shape), chunks=tuple(chunks), dtype=dtype,
                              compressors=None, overwrite=True, config={"write_empty_chunks": True})


def halve(block: np.ndarray, labels: bool = False) -> np.ndarray:
    """The next pyramid level's pixels of a (rows, cols[, channels]) block with even offsets:
    2 x 2 block means in the block's dtype, or for ``labels`` the top-left pixel of each block
    (no label value invented); odd edges dropped."""
    if labels:
        return block[::2, ::2][:block.shape[0] // 2, :block.shape[1] // 2]
    return _block_mean_2(block)


def add_pyramid_levels(group, top_side: int = PYRAMID_TOP_SIDE, labels: bool = False,
                       workers: int = 1, first: int = 0) -> list:
    """Add levels ``first + 1``, ... to a zarr group holding level ``first`` (named by its
    index), each :func:`halve` of the one before, until the long side fits ``top_side``, chunk
    by chunk on ``workers`` threads (memory: a few chunks each). Returns the levels from
    ``first``, finest first."""
    levels = [group[str(first)]]
    for index, shape in enumerate(pyramid_shapes(levels[0].shape, top_side)[1:], start=first + 1):
        source = levels[-1]
        target = scratch_array(group, str(index), shape + tuple(source.shape[2:]), source.chunks,
                               source.dtype)
        chunk_rows, chunk_cols = source.chunks[:2]

        def halve_chunk(start, source=source, target=target, chunk_rows=chunk_rows,
                        chunk_cols=chunk_cols):
            # one target chunk: threads never write the same chunk
            row, col = start
            halved = halve(source[2 * row:2 * (row + chunk_rows), 2 * col:2 * (col + chunk_cols)], labels)
            target[row:row + halved.shape[0], col:col + halved.shape[1]] = halved

        starts = ((row, col) for row in range(0, shape[0], chunk_rows)
                  for col in range(0, shape[1], chunk_cols))
        for _ in bounded_map(halve_chunk, starts, workers):
            pass
        levels.append(target)
    return levels


def array_tiles(array, tile: int, workers: int) -> Iterator[np.ndarray]:
    """Tiles of a (rows, cols[, channels]) array in TIFF order (row-major), read ahead on
    ``workers`` threads (a few tiles in memory)."""
    starts = ((row, col) for row in range(0, array.shape[0], tile)
              for col in range(0, array.shape[1], tile))
    return bounded_map(lambda start: np.asarray(array[start[0]:start[0] + tile,
                                                      start[1]:start[1] + tile]), starts, workers)


def check_compression_name(choice: str) -> None:
    """Refuse a tile compression that is not one of
    :data:`~napari_comir.core.defaults.TILE_COMPRESSIONS`."""
    if choice not in TILE_COMPRESSIONS:
        raise InputError(f"compression must be one of {', '.join(TILE_COMPRESSIONS)}, got {choice!r}")


def tiff_compression(choice: str, dtype, rgb: bool, labels: bool = False) -> dict:
    """tifffile's ``compression`` (and ``compressionargs``) for a TIFF's tiles.

    Parameters
    ----------
    choice : str
        One of :data:`~napari_comir.core.defaults.TILE_COMPRESSIONS`; "auto" is JPEG for 8-bit
        RGB and zlib (lossless) for everything else.
    dtype : numpy dtype
        The pixels'.
    rgb, labels : bool
        An RGB image; a label image (never JPEG: it would invent label values).
    """
    check_compression_name(choice)
    if choice == "auto":
        choice = "jpeg" if rgb and np.dtype(dtype) == np.uint8 and not labels else "zlib"
    if choice == "jpeg":
        if labels or np.dtype(dtype) != np.uint8:
            what = "a label image" if labels else f"{np.dtype(dtype)} pixels"
            raise InputError(f"JPEG cannot hold {what} without changing them: choose a lossless "
                             "compression (zlib, lzw, zstd) or none")
        return {"compression": "jpeg", "compressionargs": {"level": DEFAULT_JPEG_QUALITY}}
    return {"compression": None if choice == "none" else choice}


def write_tiff_pyramid(path: str | os.PathLike, levels: list, pixel_size_um: float | None,
                       tile: int = OUTPUT_TILE, compression: str = DEFAULT_TILE_COMPRESSION,
                       labels: bool = False, workers: int = 1) -> None:
    """Write zarr levels (finest first) as a tiled TIFF, atomically, a few tiles in memory at a
    time: :func:`write_tiff_levels` of the levels' tiles, read ahead on ``workers`` threads."""
    write_tiff_levels(path, [level.shape for level in levels], levels[0].dtype,
                      lambda index: array_tiles(levels[index], tile, workers), pixel_size_um, tile=tile,
                      compression=compression, labels=labels, workers=workers)


def write_tiff_levels(path: str | os.PathLike, shapes: list, dtype,
                      level_tiles: Callable[[int], Iterator[np.ndarray]], pixel_size_um: float | None,
                      tile: int = OUTPUT_TILE, compression: str = DEFAULT_TILE_COMPRESSION,
                      labels: bool = False, workers: int = 1,
                      before_keeping: Callable[[], None] | None = None) -> None:
    """Write a tiled TIFF, atomically, from levels given tile by tile.

    A name ending in ``.ome.tif(f)`` gets OME-XML with the physical pixel size and the coarser
    levels as SubIFDs (what QuPath, Fiji/Bio-Formats and napari read as a pyramid); another
    ``.tif`` name gets level 0 only, with the pixel size in its resolution tags. Tiles are
    encoded on ``workers`` threads; ``compression`` and ``labels`` as in
    :func:`tiff_compression` (JPEG tiles are YCbCr, 2 x 2 chroma subsampled, as scanners write).

    Parameters
    ----------
    shapes : list of tuple
        Each level's (rows, cols[, channels]), finest first.
    level_tiles : callable
        ``level_tiles(k)``: level k's ``tile`` px tiles in row-major order (smaller at the right
        and bottom edges); called once level k - 1 is written, so a coarser level may be made
        from the finer one's tiles as they pass. Only as many tiles as the level holds are taken.
    before_keeping : callable, optional
        Called once every tile is written, before the file takes its name: what it raises
        leaves no file (a Stop that came while the last tiles were written).
    """
    import tifffile

    from .files import atomic_path

    path = Path(path)
    ome = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    shapes = [tuple(shape) for shape in (shapes if ome else shapes[:1])]
    dtype = np.dtype(dtype)
    rgb = len(shapes[0]) == 3
    # tifffile gathers this much of the tiles to encode them on its threads (by default 512 MB)
    batch = workers * 16 * tile * tile * math.prod(shapes[0][2:]) * dtype.itemsize
    options = dict(tile=(tile, tile), photometric="rgb" if rgb else "minisblack", maxworkers=workers,
                   buffersize=batch, **tiff_compression(compression, dtype, rgb, labels))
    big = math.prod(shapes[0]) * dtype.itemsize > 2**31
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=big, ome=ome) as tiff:
        if ome:
            metadata = {"axes": "YXS" if rgb else "YX"}
            if pixel_size_um:
                metadata.update(PhysicalSizeX=pixel_size_um, PhysicalSizeY=pixel_size_um,
                                PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
            tiff.write(level_tiles(0), shape=shapes[0], dtype=dtype, subifds=len(shapes) - 1,
                       metadata=metadata, **options)
            for index, shape in enumerate(shapes[1:], start=1):
                tiff.write(level_tiles(index), shape=shape, dtype=dtype, subfiletype=1, **options)
        else:
            resolution = {}
            if pixel_size_um:  # pixels per centimetre
                resolution = dict(resolution=(1e4 / pixel_size_um, 1e4 / pixel_size_um),
                                  resolutionunit="CENTIMETER")
            tiff.write(level_tiles(0), shape=shapes[0], dtype=dtype, **resolution, **options)
        if before_keeping is not None:
            before_keeping()


#: The ``.zattrs`` key that marks an OME-Zarr folder as written by napari-comir.
OME_ZARR_MARK = "napari_comir"


def write_ome_zarr_metadata(group, n_levels: int, pixel_size_um: float | None, rgb: bool,
                            name: str) -> None:
    """OME-NGFF 0.4 ``multiscales`` for levels "0".."n-1" of a 2-D image, axes (c,) y, x as NGFF
    orders them (channels first); in µm when the pixel size is known, else in pixels."""
    unit = pixel_size_um or 1.0
    space = {"unit": "micrometer"} if pixel_size_um else {}
    channel = [{"name": "c", "type": "channel"}] if rgb else []
    axes = channel + [{"name": "y", "type": "space", **space}, {"name": "x", "type": "space", **space}]
    datasets = []
    for level in range(n_levels):
        # A level-k pixel centre sits (2^k - 1) / 2 level-0 pixels from level 0's.
        scale = [1.0] * len(channel) + [unit * 2**level] * 2
        shift = [0.0] * len(channel) + [unit * (2**level - 1) / 2] * 2
        datasets.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]})
    group.attrs["multiscales"] = [{"version": "0.4", "name": name, "axes": axes,
                                   "datasets": datasets}]
    # what marks the folder as this program's output, which a later run may replace
    group.attrs[OME_ZARR_MARK] = {"levels": n_levels}
