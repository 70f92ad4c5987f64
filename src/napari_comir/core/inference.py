"""Tiled CoMIR inference for images of any size with bounded memory."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from weakref import WeakKeyDictionary

import numpy as np
import torch

from .data import intensity_range, normalize, subsample, validate_image
from .errors import InputError
from .graphed import graphed_forward
from .progress import Progress
from .zoo import ComirModel

DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 64
#: Width (px) of a CoMIR's unreliable rim: the networks pad their input with zeros and the two
#: networks' edge artefacts differ. Registration leaves it out of the comparison; including it
#: pulled the scale by ~1 % on the raw BF/SHG cases (4-6 px at the corners; docs/benchmarks.md).
COMIR_EDGE_PX = 8
# network -> (the state its folded copy was made from, that copy); see _inference_network
_FOLDED: WeakKeyDictionary = WeakKeyDictionary()


def _starts(length: int, tile: int, step: int, multiple: int) -> list[int]:
    """Tile starts covering [0, length), all multiples of ``multiple``.

    Aligned starts keep the network's pooling grid identical in every tile, which is what
    makes tiled output equal whole-image output.
    """
    if length <= tile:
        return [0]
    step = max(multiple, step // multiple * multiple)
    last = (length - tile) // multiple * multiple
    return list(range(0, last, step)) + [last]


def _interior_mask(part: slice, length: int, margin: int) -> np.ndarray:
    """1-D weights of one tile: 0 within ``margin`` of an edge that has a neighbouring tile.

    Discarding the rim (rather than ramp-blending it) keeps only pixels whose receptive
    field lies inside the tile, so tiled output matches whole-image output. A tile's 2-D
    weight is the outer product of its row and column masks.
    """
    n = part.stop - part.start
    keep = np.ones(n, np.float32)
    if part.start > 0:
        keep[:margin] = 0
    if part.stop < length:
        keep[n - margin:] = 0
    return keep


def iter_tiles(shape: tuple[int, int], tile: int, overlap: int,
               multiple: int = 1) -> Iterator[tuple[slice, slice]]:
    """(row slice, col slice) of overlapping tiles covering an image of ``shape`` (rows, cols).

    Starts are multiples of ``multiple``; the last tile in each direction runs to the image
    edge, so it may exceed ``tile`` by less than ``multiple``.
    """
    step = tile - overlap
    row_starts = _starts(shape[0], tile, step, multiple)
    col_starts = _starts(shape[1], tile, step, multiple)
    for r in row_starts:
        row_end = shape[0] if r == row_starts[-1] else r + tile
        for c in col_starts:
            col_end = shape[1] if c == col_starts[-1] else c + tile
            yield slice(r, row_end), slice(c, col_end)


def comir_tiles(model: ComirModel, image, modality: str, *, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, half: bool = False, c4_average: bool | None = None,
                cuda_graphs: bool = True, out: np.ndarray | None = None) -> Iterator[Progress]:
    """Compute the CoMIR of ``image`` tile by tile, yielding progress; the last event's result is it.

    Parameters
    ----------
    model : ComirModel
    image : array-like
        (rows, cols) or (rows, cols, channels) raw intensities of ``modality``. Any array that
        supports slicing (numpy, memmap, zarr, dask) works; only one tile is in memory at a time.
    modality : str
        Which of the model's networks to use, e.g. ``"bf"`` or ``"shg"``.
    tile, overlap : int
        Tile side and overlap in pixels. Half the overlap is discarded at inner tile edges, so
        it should exceed the network's effective receptive field radius (64 px does for the
        bundled models: tiled equals whole-image output to < 1e-3 of the CoMIR's range).
    half : bool
        float16 on CUDA (ignored on CPU).
    c4_average : bool, optional
        Average the outputs of the 4 quarter-turned inputs, each turned back: exact equivariance
        to 90° rotations and better equivariance at every angle, for 4x the compute.
        Default: the model card's ``c4_average``.
    cuda_graphs : bool
        On CUDA, replay a cached CUDA graph of the network for tile shapes seen before
        (:mod:`napari_comir.core.graphed`): same output, a fraction of the launch overhead.
    out : numpy.ndarray, optional
        (rows, cols, comir_channels) float32 target, e.g. a ``numpy.memmap`` for huge images.

    Returns
    -------
    Iterator of Progress
        The final event's ``result`` is the (rows, cols, comir_channels) float32 CoMIR.
        Arguments are validated when this is called, before the first event.
    """
    spec = modality_spec(model, modality)
    if overlap < 0 or tile < overlap + 32:
        raise InputError(f"tile ({tile}) must exceed the overlap ({overlap}) by at least 32 px")
    image = check_image(image, spec, f"{modality} image")
    return _tile_events(model, image, modality, tile, overlap, half, c4_average, cuda_graphs, out)


def _tile_events(model: ComirModel, image, modality: str, tile: int, overlap: int, half: bool,
                 c4_average: bool | None, cuda_graphs: bool,
                 out: np.ndarray | None) -> Iterator[Progress]:
    """The work of :func:`comir_tiles`, after validation (a generator: runs lazily)."""
    spec = model.card.modalities[modality]
    shape = tuple(image.shape[:2])
    device = model.device
    # Normalised on the model's device: on a GPU the host's percentiles took longer than the network.
    value_range = intensity_range(validate_image(subsample(image), spec.channels, min_size=1,
                                                 grey_palette=spec.grey_palette), spec, device)
    network = _inference_network(model, modality)
    use_half = half and device.type == "cuda"
    channels = model.card.comir_channels
    c4_average = model.card.c4_average if c4_average is None else c4_average
    result = out if out is not None else np.zeros(shape + (channels,), np.float32)
    if out is not None:
        result[...] = 0

    def forward(x: torch.Tensor) -> torch.Tensor:
        # No autocast weight cache: a CUDA graph must not capture casts freed after capture.
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_half, cache_enabled=False):
            return _c4_average(network, x) if c4_average else network(x)

    tiles = list(iter_tiles(shape, tile, overlap, getattr(network, "size_multiple", 1)))
    margin = overlap // 2
    # Weights are separable, so their sum over tiles is too: two 1-D arrays, not an image.
    row_weight, col_weight = np.zeros(shape[0], np.float32), np.zeros(shape[1], np.float32)
    for rows in dict.fromkeys((r.start, r.stop) for r, _ in tiles):
        row_weight[slice(*rows)] += _interior_mask(slice(*rows), shape[0], margin)
    for cols in dict.fromkeys((c.start, c.stop) for _, c in tiles):
        col_weight[slice(*cols)] += _interior_mask(slice(*cols), shape[1], margin)
    with torch.inference_mode():
        for index, (rows, cols) in enumerate(tiles, start=1):
            block = validate_image(image[rows, cols], spec.channels, name=f"{modality} image",
                                   min_size=1, grey_palette=spec.grey_palette)
            x = normalize(block, spec, value_range, device)[None]  # channels_last already
            if cuda_graphs and device.type == "cuda":
                z = graphed_forward(network, forward, x, key=(use_half, c4_average))[0]
            else:
                z = forward(x)[0]
            weight = (_interior_mask(rows, shape[0], margin)[:, None]
                      * _interior_mask(cols, shape[1], margin)[None, :])
            result[rows, cols] += z.float().permute(1, 2, 0).cpu().numpy() * weight[..., None]
            yield Progress("infer", index, len(tiles), f"{modality}: tile {index}/{len(tiles)}")
    for start in range(0, shape[0], 1024):  # in row bands: no full-size temporary
        band = slice(start, start + 1024)
        result[band] /= (row_weight[band, None] * col_weight[None, :])[..., None]
    yield Progress("infer", len(tiles), len(tiles), f"{modality}: done", result=result)


def _inference_network(model: ComirModel, modality: str) -> torch.nn.Module:
    """The modality's network in eval mode with channels_last weights; on a CPU, its folded copy.

    channels_last made CPU convolutions ~1.6x faster, and the folded copy (``UNet.folded``) made
    CPU registration ~1.4x faster again (docs/benchmarks.md). Converting walks every module
    (~1 ms a call), so it runs only when needed: the layout survives ``to(device)``, optimiser
    steps and ``load_state_dict``, and one weight tells it; the folded copy is rebuilt when any
    weight or statistic has changed (moved, replaced or updated in place).
    """
    network = model.networks[modality]
    if network.training:
        network.eval()
    first_conv = next(p for p in network.parameters() if p.dim() == 4)
    if not first_conv.is_contiguous(memory_format=torch.channels_last):
        network.to(memory_format=torch.channels_last)
    if model.device.type != "cpu" or not hasattr(network, "folded"):
        return network
    state = tuple((t.data_ptr(), t._version) for t in chain(network.parameters(), network.buffers()))
    cached = _FOLDED.get(network)
    if cached is None or cached[0] != state:
        cached = _FOLDED[network] = (state, network.folded().to(memory_format=torch.channels_last))
    return cached[1]


def _c4_average(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean of the outputs for the 4 quarter-turns of ``x``, each turned back: exactly C4-equivariant."""
    return sum(torch.rot90(network(torch.rot90(x, k, (2, 3))), -k, (2, 3)) for k in range(4)) / 4


def modality_spec(model: ComirModel, modality: str):
    """The card's spec of ``modality``, or an InputError naming the modalities the model knows."""
    if modality not in model.card.modalities:
        raise InputError(f"model {model.card.name!r} has no modality {modality!r}; "
                         f"it knows {', '.join(model.modalities)}")
    return model.card.modalities[modality]


def check_image(image, spec, name: str):
    """Validate an image for a modality's network without loading a large one (its NaN are
    checked per tile).

    Small images are validated whole and returned as (rows, cols, channels) (a grey one for an
    RGB modality coloured, see :func:`napari_comir.core.data.validate_image`); an alpha channel
    is dropped lazily.
    """
    channels = spec.channels
    if not hasattr(image, "shape") or image.size <= DEFAULT_TILE**2:
        return validate_image(image, channels, name=name, grey_palette=spec.grey_palette)
    if len(image.shape) not in (2, 3):
        raise InputError(f"{name}: shape {tuple(image.shape)} is not a 2-D image")
    validate_image(image[:16, :16], channels, name=name, min_size=1)  # dtype and channels
    return image[..., :3] if len(image.shape) == 3 and image.shape[-1] == 4 and channels == 3 else image


def compute_comir(model: ComirModel, image, modality: str,
                  progress: Callable[[Progress], None] | None = None, **options) -> np.ndarray:
    """The CoMIR of one image as a (rows, cols, comir_channels) float32 array (see :func:`comir_tiles`)."""
    for event in comir_tiles(model, image, modality, **options):
        if progress is not None:
            progress(event)
    return event.result


def compute_comir_pair(model: ComirModel, fixed_image, fixed_modality: str, moving_image,
                       moving_modality: str, progress: Callable[[Progress], None] | None = None,
                       **options) -> tuple[np.ndarray, np.ndarray]:
    """The CoMIRs of a fixed and a moving image (see :func:`compute_comir`).

    On a CPU the two networks run side by side in two threads: each one's operators are too
    small to keep two cores busy; the networks took ~0.6x, both CoMIRs with their normalisation
    ~0.85x the time of one after the other (docs/benchmarks.md). ``progress`` may then be called
    from either thread.
    """
    jobs = ((fixed_image, fixed_modality), (moving_image, moving_modality))
    if model.device.type != "cpu" or fixed_modality == moving_modality:  # one network: in turn
        return tuple(compute_comir(model, image, modality, progress, **options)
                     for image, modality in jobs)
    futures = [_pair_pool().submit(compute_comir, model, image, modality, progress, **options)
               for image, modality in jobs]
    return tuple(future.result() for future in futures)


@functools.cache
def _pair_pool() -> ThreadPoolExecutor:
    """Two threads kept for the process's life: a new thread also starts a new OpenMP team and
    oneDNN state, which cost as much as running the networks side by side saved."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="comir")


# A forked child inherits the pool object but not its threads: it must make its own.
if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_pair_pool.cache_clear)
