"""Tiled CoMIR inference for images of any size with bounded memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from .data import intensity_range, normalize, to_tensor, validate_image
from .errors import InputError
from .progress import Progress
from .zoo import ComirModel

DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 64


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile start offsets covering [0, length); the last tile is flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _blend_window(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """Weights that ramp linearly over the overlap and never reach 0 (single tiles stay exact)."""
    def ramp(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) + 1.0
        return np.minimum(distance / (overlap + 1.0), 1.0).astype(np.float32)

    return ramp(tile_h)[:, None] * ramp(tile_w)[None, :]


def iter_tiles(shape: tuple[int, int], tile: int, overlap: int) -> Iterator[tuple[slice, slice]]:
    """(row slice, col slice) of overlapping tiles covering an image of ``shape`` (rows, cols)."""
    step = tile - overlap
    for r in _starts(shape[0], tile, step):
        for c in _starts(shape[1], tile, step):
            yield slice(r, min(r + tile, shape[0])), slice(c, min(c + tile, shape[1]))


def comir_tiles(model: ComirModel, image, modality: str, *, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, half: bool = False,
                out: np.ndarray | None = None) -> Iterator[Progress]:
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
        Tile side and overlap in pixels. The overlap should exceed the network's receptive
        field radius for seamless results (64 px does for the bundled models).
    half : bool
        float16 on CUDA (ignored on CPU).
    out : numpy.ndarray, optional
        (rows, cols, comir_channels) float32 target, e.g. a ``numpy.memmap`` for huge images.

    Returns
    -------
    Iterator of Progress; the final event's ``result`` is the (rows, cols, comir_channels) float32 CoMIR.
    """
    if modality not in model.card.modalities:
        raise InputError(f"model {model.card.name!r} has no modality {modality!r}; "
                         f"it knows {', '.join(model.modalities)}")
    if overlap < 0 or tile <= 2 * overlap:
        raise InputError(f"tile ({tile}) must exceed twice the overlap ({overlap})")
    spec = model.card.modalities[modality]
    image = _check_lazy_image(image, spec.channels, f"{modality} image")
    shape = tuple(image.shape[:2])
    value_range = intensity_range(image[..., None] if image.ndim == 2 else image, spec)
    network = model.networks[modality].eval()
    device = model.device
    dtype = torch.float16 if half and device.type == "cuda" else torch.float32
    channels = model.card.comir_channels
    result = out if out is not None else np.zeros(shape + (channels,), np.float32)
    weight_sum = np.zeros(shape, np.float32)
    tiles = list(iter_tiles(shape, tile, overlap))
    with torch.inference_mode():
        for index, (rows, cols) in enumerate(tiles, start=1):
            block = validate_image(image[rows, cols], spec.channels, name=f"{modality} image", min_size=1)
            x = to_tensor(normalize(block, spec, value_range))[None].to(device, dtype)
            z = network(x)[0].float().permute(1, 2, 0).cpu().numpy()
            weight = _blend_window(z.shape[0], z.shape[1], overlap) if len(tiles) > 1 else 1.0
            result[rows, cols] += z * (weight[..., None] if len(tiles) > 1 else 1.0)
            weight_sum[rows, cols] += weight
            yield Progress("infer", index, len(tiles), f"{modality}: tile {index}/{len(tiles)}")
    result /= weight_sum[..., None]
    yield Progress("infer", len(tiles), len(tiles), f"{modality}: done", result=result)


def _check_lazy_image(image, channels: int, name: str):
    """Validate what can be checked without loading a large image (NaN is checked per tile).

    Small images are validated whole; an alpha channel is dropped lazily.
    """
    if not hasattr(image, "shape") or image.size <= DEFAULT_TILE**2:
        return validate_image(image, channels, name=name)
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
