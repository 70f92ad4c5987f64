"""Resampling a moving image onto the fixed pixel grid under an affine transform (moving -> fixed,
(x, y) pixel centres; see :mod:`napari_comir.core.transforms` for the conventions)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError
from .limits import check_memory
from .transforms import AffineTransform


def resample(
    moving,
    transform: AffineTransform,
    output_shape,
    *,
    order: int = 1,
    cval: float = 0.0,
    preserve_dtype: bool = True,
) -> np.ndarray:
    """Warp the moving image onto the fixed pixel grid.

    ``out[r_f, c_f] = moving[T^-1 (r_f, c_f)]`` with ``T = transform`` (moving -> fixed), so the
    output overlays the fixed image exactly like the napari moving layer with
    ``affine = transform.matrix_rc``.

    Parameters
    ----------
    moving : np.ndarray
        Image of shape (H, W) or (H, W, C).
    transform : AffineTransform
        Moving -> fixed transform.
    output_shape : tuple of int
        Fixed grid shape ``(rows, cols)`` (a trailing channel size is ignored).
    order : int
        Spline order: 0 = nearest neighbour (use for label images), 1 = bilinear, 3 = cubic.
    cval : float
        Value of output pixels that fall outside the moving image.
    preserve_dtype : bool
        Cast the result back to the input dtype (rounding and clipping for integer images).

    Returns
    -------
    np.ndarray
        Shape ``(rows, cols)`` or ``(rows, cols, C)``.
    """
    moving = np.asarray(moving)
    if moving.ndim not in (2, 3):
        raise InputError(
            f"moving image must be 2-D (H, W) or 3-D (H, W, C), got shape {moving.shape}"
        )
    if order not in range(6):
        raise InputError(f"interpolation order must be an integer 0..5, got {order}")
    out_rc = tuple(int(v) for v in tuple(output_shape)[:2])
    if len(out_rc) != 2 or min(out_rc) < 1:
        raise InputError(
            f"output_shape must be (rows, cols) with positive sizes, got {output_shape}"
        )
    channels = 1 if moving.ndim == 2 else moving.shape[2]
    if order == 1 and preserve_dtype and moving.dtype in (np.uint8, np.int8):
        # What scanners write, rounded back to 8 bits: float32 samples are exact enough (within
        # a rounding tie; not for 16 bits), all channels at once 3-4x faster. Memory: float32
        # planes in and out, the rounded copy, the float32 grid and a float64 axis of it.
        check_memory(moving.shape[0] * moving.shape[1] * channels * 4
                     + out_rc[0] * out_rc[1] * (channels * 8 + 16),
                     f"resampling onto a {out_rc[0]} x {out_rc[1]} px grid")
        return cast_like(_bilinear_float32(moving, transform.inverse(), out_rc, cval), moving.dtype)
    # float64 per channel, then stacked: twice the output in doubles
    check_memory(2 * out_rc[0] * out_rc[1] * channels * 8,
                 f"resampling onto a {out_rc[0]} x {out_rc[1]} px grid")
    # scipy maps output coordinates to input coordinates, i.e. it needs fixed -> moving in (r, c).
    inv = transform.inverse().matrix_rc
    work = moving if order == 0 else moving.astype(np.float64, copy=False)
    # each channel warped straight into its plane of the output (no stacked copy)
    out = np.empty(out_rc + work.shape[2:], work.dtype)
    for c in range(1 if work.ndim == 2 else work.shape[2]):
        ndimage.affine_transform(
            work if work.ndim == 2 else work[..., c],
            inv[:2, :2],
            offset=inv[:2, 2],
            output=out if work.ndim == 2 else out[..., c],
            order=order,
            mode="constant",
            cval=cval,
            prefilter=order > 1,
        )
    return cast_like(out, moving.dtype) if preserve_dtype else out


def _bilinear_float32(moving: np.ndarray, to_moving: AffineTransform, out_rc: tuple[int, int],
                      cval: float) -> np.ndarray:
    """Bilinear samples of ``moving`` (rows, cols[, channels]) at ``to_moving`` of each output
    pixel centre, in float32 (torch's ``grid_sample``, all channels at once); a sample outside
    the outermost pixel centres is ``cval``, as scipy's ``mode="constant"`` makes it."""
    import torch
    import torch.nn.functional as functional

    rows, cols = moving.shape[:2]
    planes = torch.from_numpy(np.ascontiguousarray(moving)).reshape(rows, cols, -1)
    planes = planes.permute(2, 0, 1)[None].float()
    # grid_sample's units (align_corners=False): -1 and 1 are the outer edges of the first and
    # last pixels, so a pixel centre x sits at (2x + 1) / width - 1
    to_unit = np.array([[2 / cols, 0, 1 / cols - 1], [0, 2 / rows, 1 / rows - 1], [0, 0, 1]])
    unit_from_xy = to_unit @ to_moving.matrix_xy
    edge = np.array([1 - 1 / cols, 1 - 1 / rows]) + 1e-9  # the matrix products' rounding is inside
    corners = np.array([[0, out_rc[1] - 1, 0, out_rc[1] - 1], [0, 0, out_rc[0] - 1, out_rc[0] - 1],
                        [1, 1, 1, 1]])
    within = bool(np.all(np.abs((unit_from_xy @ corners)[:2]) <= edge[:, None]))
    # where each output pixel samples, and whether that falls outside, in float64 (so a tile
    # decides as the whole image does); the samples themselves need only float32
    x = torch.arange(out_rc[1], dtype=torch.float64)
    y = torch.arange(out_rc[0], dtype=torch.float64)
    grid = torch.empty(*out_rc, 2, dtype=torch.float32)
    outside = torch.zeros(out_rc, dtype=torch.bool)
    for axis in (0, 1):
        row = [float(value) for value in unit_from_xy[axis]]
        unit = row[0] * x[None, :] + (row[1] * y + row[2])[:, None]
        if not within:  # a tile inside the moving image (most of a slide) needs no mask
            outside |= unit.abs() > edge[axis]
            unit = unit.clamp(-edge[axis], edge[axis])
        grid[..., axis] = unit
    sampled = functional.grid_sample(planes, grid[None], mode="bilinear", padding_mode="border",
                                     align_corners=False)[0]
    if not within:
        sampled.masked_fill_(outside, cval)
    out = sampled.permute(1, 2, 0).numpy()
    return out[..., 0] if moving.ndim == 2 else out


def cast_like(resampled: np.ndarray, dtype) -> np.ndarray:
    """A resampled image back in the input's ``dtype`` (integers rounded and clipped to its
    range, booleans thresholded at 0.5)."""
    if resampled.dtype == dtype:
        return resampled
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        resampled = np.rint(resampled)  # a new array, then rounded and clipped in place
        np.clip(resampled, info.min, info.max, out=resampled)
    elif dtype == np.bool_:
        resampled = resampled > 0.5
    return resampled.astype(dtype)
