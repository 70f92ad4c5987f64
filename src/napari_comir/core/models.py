"""Networks that map one modality to its CoMIR (an image-like, unbounded representation)."""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU; several inputs are concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0])


class FoldedConvBlock(nn.Module):
    """A :class:`ConvBlock` for inference: the same function of its inputs in eval mode.

    BatchNorm is folded into the convolutions' weights and bias, and a second input (a U-Net
    skip) gets its own slice of the first convolution's weights, summed instead of concatenated:
    the concatenated copy cost as much as the convolution on a CPU. There oneDNN also fuses each
    ReLU and the sum into the convolution (:func:`_conv_relu`).
    """

    def __init__(self, block: ConvBlock, skip_channels: int = 0):
        super().__init__()
        first, self.second = (fuse_conv_bn_eval(block[i], block[i + 1]) for i in (0, 3))
        split = first.in_channels - skip_channels
        self.main_weight = nn.Parameter(first.weight[:, :split].contiguous(), requires_grad=False)
        self.skip_weight = (nn.Parameter(first.weight[:, split:].contiguous(), requires_grad=False)
                            if skip_channels else None)
        self.bias = nn.Parameter(first.bias, requires_grad=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        add = None if skip is None else F.conv2d(skip, self.skip_weight, padding=1)
        x = _conv_relu(x, self.main_weight, self.bias, add=add)
        return _conv_relu(x, self.second.weight, self.second.bias)


def _conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               add: torch.Tensor | None = None) -> torch.Tensor:
    """relu(conv3x3(x) + bias [+ add]); one pass over the output with oneDNN's fused operator."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and _onednn_fusion_works():
        conv = torch.ops.mkldnn._convolution_pointwise
        if add is None:
            return conv(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
        return conv.binary(x, add, weight, bias, [1, 1], [1, 1], [1, 1], 1, "add", 1.0, "relu", [], "")
    x = F.conv2d(x, weight, bias, padding=1)
    return F.relu(x if add is None else x + add)


@functools.cache
def _onednn_fusion_works() -> bool:
    """Whether oneDNN's fused convolutions (the operators torch.compile emits on CPU; not public
    API) exist in this torch build and agree with the plain ones; checked once, on tiny tensors."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x, add = torch.randn(1, 2, 6, 6, generator=generator), torch.randn(1, 3, 6, 6, generator=generator)
    weight, bias = torch.randn(3, 2, 3, 3, generator=generator), torch.randn(3, generator=generator)
    try:
        conv = torch.ops.mkldnn._convolution_pointwise
        with torch.inference_mode():
            fused = conv(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
            fused_sum = conv.binary(x, add, weight, bias, [1, 1], [1, 1], [1, 1], 1, "add", 1.0,
                                    "relu", [], "")
            plain = F.conv2d(x, weight, bias, padding=1)
    except (AttributeError, RuntimeError):
        return False
    return (torch.allclose(fused, F.relu(plain), atol=1e-5)
            and torch.allclose(fused_sum, F.relu(plain + add), atol=1e-5))


class UNet(nn.Module):
    """A small U-Net: ``depth`` resolution levels, channels doubling per level.

    BatchNorm (not GroupNorm) keeps inference pointwise at eval time, so tiled
    inference equals whole-image inference. The output has no activation.

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
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 16, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be >= 1")
        widths = [base_channels * 2**level for level in range(depth)]
        self.in_channels, self.out_channels = in_channels, out_channels
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(ConvBlock(previous, width))
            previous = width
        self.decoders = nn.ModuleList(
            ConvBlock(widths[level + 1] + widths[level], widths[level])
            for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes are padded internally to a multiple of this."""
        return 2 ** (len(self.encoders) - 1)

    def folded(self) -> UNet:
        """An inference copy: the same function of the input in eval mode, with BatchNorm folded
        into the convolutions, no concatenation, ReLU fused (faster on a CPU; no training)."""
        network = copy.deepcopy(self).eval()
        network.encoders = nn.ModuleList(FoldedConvBlock(block) for block in network.encoders)
        network.decoders = nn.ModuleList(FoldedConvBlock(block, skip_channels=block[0].out_channels)
                                         for block in network.decoders)
        return network.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, C_in, H, W), any H and W, to (N, C_out, H, W)."""
        height, width = x.shape[-2:]
        multiple = self.size_multiple
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = decoder(x, skip)
        return self.head(x)[..., :height, :width]


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
