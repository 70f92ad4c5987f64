"""Contrastive loss of CoMIR: InfoNCE over a batch of aligned pairs, and the C4 equivariance step."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CRITICS = ("mse", "cosine")


def similarity_matrix(z: torch.Tensor, critic: str = "mse") -> torch.Tensor:
    """Pairwise critic h(z_i, z_j) of flattened samples ``z`` (M, D) -> (M, M).

    ``mse``: h(u, v) = -mean((u - v)^2); ``cosine``: cosine similarity.
    """
    if critic == "mse":
        # Expanded square (not torch.cdist) so the gradient stays finite on the diagonal.
        sq_norm = z.pow(2).sum(dim=1)
        sq_dist = sq_norm[:, None] + sq_norm[None, :] - 2.0 * z @ z.T
        return -sq_dist.clamp_min(0.0) / z.shape[1]
    if critic == "cosine":
        unit = F.normalize(z, dim=1)
        return unit @ unit.T
    raise ValueError(f"unknown critic {critic!r}; choose one of {CRITICS}")


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.5, critic: str = "mse",
             turned_negatives: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE loss of aligned representations.

    Parameters
    ----------
    z_a, z_b : torch.Tensor
        Outputs of the two networks for N aligned patches, shape (N, C, H, W) each;
        ``z_a[i]`` and ``z_b[i]`` are positives, all other 2N - 2 samples negatives.
    tau : float
        Temperature.
    critic : {"mse", "cosine"}
    turned_negatives : bool
        Also count each anchor's partner turned by 90°, 180° and 270° as negatives (square
        patches). Not in the paper: a representation that looks the same turned cannot tell
        rotations apart, and from one training pair the plain loss often learns one
        (docs/benchmarks.md, one-pair training).

    Returns
    -------
    torch.Tensor
        Scalar: mean over all 2N anchors of -log softmax of the positive.
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"representations differ in shape: {tuple(z_a.shape)} vs {tuple(z_b.shape)}")
    n = z_a.shape[0]
    if n < 2:
        raise ValueError("InfoNCE needs at least 2 pairs per batch (negatives come from the batch)")
    both = torch.cat([z_a, z_b])
    z = both.flatten(1).float()
    logits = similarity_matrix(z, critic) / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)
    if turned_negatives:
        if z_a.shape[-1] != z_a.shape[-2]:
            raise ValueError(f"turned negatives need square patches, got {tuple(z_a.shape[-2:])}")
        partners = both.roll(n, dims=0)
        turned = torch.stack([torch.rot90(partners, k, (-2, -1)) for k in (1, 2, 3)], 1)
        logits = torch.cat([logits, _critic(z[:, None], turned.flatten(2).float(), critic) / tau], 1)
    return F.cross_entropy(logits, positives)


def partner_accuracy(z_a: torch.Tensor, z_b: torch.Tensor, critic: str = "mse") -> float:
    """Fraction of the 2N samples whose most similar other sample is their partner: the
    contrastive top-1 accuracy, a measure a person can read (1 = every patch finds its match
    among the batch, 1 / (2N - 1) = chance)."""
    z = torch.cat([z_a, z_b]).flatten(1).float()
    n = z_a.shape[0]
    similarity = similarity_matrix(z, critic)
    similarity.fill_diagonal_(-math.inf)
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return float((similarity.argmax(dim=1) == partners).float().mean())


def _critic(u: torch.Tensor, v: torch.Tensor, critic: str) -> torch.Tensor:
    """Critic h(u, v) over the last dimension, broadcasting the others."""
    if critic == "mse":
        return -(u - v).pow(2).mean(-1)
    return F.cosine_similarity(u, v, dim=-1)


def activation_penalty(*outputs: torch.Tensor, l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """``l1 * mean|z| + l2 * mean(z^2)`` summed over the given outputs; keeps CoMIRs bounded."""
    total = outputs[0].new_zeros(())
    for z in outputs:
        if l1:
            total = total + l1 * z.abs().mean()
        if l2:
            total = total + l2 * z.pow(2).mean()
    return total


def rotate90(x: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate each sample ``x[i]`` (N, C, H, W) by ``quarter_turns[i]`` x 90 degrees.

    Loops over the 4 possible turns, not over samples. H must equal W when any turn is odd.
    """
    out = torch.empty_like(x)
    for k in range(4):
        selected = quarter_turns == k
        if selected.any():
            out[selected] = torch.rot90(x[selected], k, dims=(-2, -1))
    return out


def equivariant_forward(
    network: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The C4 trick: rotate each input by a random multiple of 90°, run, rotate the output back.

    Training through this makes the network (approximately) rotation equivariant without
    any extra hyperparameter.
    """
    turns = torch.randint(0, 4, (x.shape[0],), generator=generator).to(x.device)
    return rotate90(network(rotate90(x, turns)), (4 - turns) % 4)


def rotate_about_centre(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each square sample ``x[i]`` (N, C, S, S) by ``angles[i]`` radians about its centre.

    Bilinear; content entering from outside is the reflected image, so the batch statistics
    that BatchNorm sees stay those of real patches.
    """
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def equivariance_penalty(network: nn.Module, x: torch.Tensor, z: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Error of ``network`` under arbitrary rotations: mean (f(R x) − R f(x))² in the central disc.

    The C4 trick only makes quarter turns exact; this term asks the same of every angle (one
    random angle per sample), compared inside the central disc where both sides hold real
    content. Not normalised by the output's variance: in the same units as the MSE critic, it
    cannot dominate while the representation is still forming (small outputs, small error).

    Parameters
    ----------
    network : nn.Module
    x : torch.Tensor
        Inputs (N, C, S, S), square.
    z : torch.Tensor
        ``network``'s outputs for ``x`` (N, K, S, S), e.g. from :func:`equivariant_forward`.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"equivariance_penalty needs square inputs, got {tuple(x.shape[-2:])}")
    angles = (2 * torch.pi * torch.rand(x.shape[0], generator=generator)).to(x.device)
    predicted = network(rotate_about_centre(x.float(), angles))
    target = rotate_about_centre(z.float(), angles)  # float32 also under autocast
    size = x.shape[-1]
    coords = torch.linspace(-1.0, 1.0, size, device=x.device)
    disc = (coords[:, None] ** 2 + coords[None, :] ** 2 <= 0.8**2).float()  # rim: padding effects
    squared = (predicted.float() - target) ** 2
    return (squared * disc).sum(dim=(-2, -1)).mean() / disc.sum()
