"""Networks that map one modality to its CoMIR (an image-like, unbounded representation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net: ``depth`` resolution levels, channels doubling per level.

    BatchNorm (not GroupNorm) keeps inference pointwise at eval time, so tiled
    inference equals whole-image inference. The output has no activation.

    With ``space_to_depth=2`` the U-Net runs at half resolution: each 2x2 block of input
    pixels becomes 4x the channels (``pixel_unshuffle``) and each output pixel is read back
    from 4 channels (``pixel_shuffle``). Full-resolution convolutions on few channels are
    memory-bound on a CPU; this made both CoMIRs of a 300² pair ~3x faster at the same width
    (docs/models.md).

    Parameters
    ----------
    in_channels : int
        Channels of the input modality (3 for RGB bright-field, 1 for SHG).
    out_channels : int
        CoMIR channels (1-3).
    base_channels : int
        Channels at full resolution.
    depth : int
        Number of resolution levels (``depth - 1`` down-samplings).
    space_to_depth : int
        1 (plain) or a block size: the U-Net works at 1/``space_to_depth`` resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 16, depth: int = 3,
                 space_to_depth: int = 1):
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be >= 1")
        if space_to_depth < 1:
            raise ValueError("space_to_depth must be >= 1")
        widths = [base_channels * 2**level for level in range(depth)]
        self.in_channels, self.out_channels = in_channels, out_channels
        self.space_to_depth = space_to_depth
        self.encoders = nn.ModuleList()
        previous = in_channels * space_to_depth**2
        for width in widths:
            self.encoders.append(_conv_block(previous, width))
            previous = width
        self.decoders = nn.ModuleList(
            _conv_block(widths[level + 1] + widths[level], widths[level])
            for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(widths[0], out_channels * space_to_depth**2, 1)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes are padded internally to a multiple of this."""
        return self.space_to_depth * 2 ** (len(self.encoders) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, C_in, H, W), any H and W, to (N, C_out, H, W)."""
        height, width = x.shape[-2:]
        multiple = self.size_multiple
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        if self.space_to_depth > 1:
            x = F.pixel_unshuffle(x, self.space_to_depth)
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = decoder(torch.cat([x, skip], dim=1))
        x = self.head(x)
        if self.space_to_depth > 1:
            x = F.pixel_shuffle(x, self.space_to_depth)
        return x[..., :height, :width]


ARCHITECTURES = {"unet": UNet}


def build_network(in_channels: int, out_channels: int, architecture: dict) -> nn.Module:
    """Build a network from a model card's ``architecture``, e.g. ``{"type": "unet", "base_channels": 8}``."""
    options = dict(architecture)
    kind = options.pop("type", "unet")
    if kind not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {kind!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[kind](in_channels, out_channels, **options)


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
