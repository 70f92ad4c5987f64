"""Contrastive loss of CoMIR: InfoNCE over a batch of aligned pairs, and the C4 equivariance step."""

from __future__ import annotations

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


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.5, critic: str = "mse") -> torch.Tensor:
    """Symmetric InfoNCE loss of aligned representations.

    Parameters
    ----------
    z_a, z_b : torch.Tensor
        Outputs of the two networks for N aligned patches, shape (N, C, H, W) each;
        ``z_a[i]`` and ``z_b[i]`` are positives, all other 2N - 2 samples negatives.
    tau : float
        Temperature.
    critic : {"mse", "cosine"}

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
    z = torch.cat([z_a, z_b]).flatten(1).float()
    logits = similarity_matrix(z, critic) / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)
    return F.cross_entropy(logits, positives)


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
