import math

import pytest
import torch
from torch import nn

from napari_comir.core.losses import (
    activation_penalty,
    equivariance_penalty,
    equivariant_forward,
    info_nce,
    rotate90,
    rotate_about_centre,
    similarity_matrix,
)


def _loop_info_nce(z_a, z_b, tau, critic):
    """Reference: the per-anchor definition, written with explicit loops."""
    z = torch.cat([z_a, z_b]).flatten(1)
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        partner = (i + n2 // 2) % n2
        if critic == "mse":
            sims = [-((z[i] - z[j]) ** 2).mean() / tau for j in range(n2)]
        else:
            sims = [torch.cosine_similarity(z[i], z[j], dim=0) / tau for j in range(n2)]
        others = torch.stack([sims[j] for j in range(n2) if j != i])
        total += -(sims[partner] - torch.logsumexp(others, 0))
    return total / n2


@pytest.mark.parametrize("critic", ["mse", "cosine"])
def test_info_nce_matches_loop_definition(critic):
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(5, 2, 6, 6, generator=g), torch.randn(5, 2, 6, 6, generator=g)
    assert torch.allclose(info_nce(z_a, z_b, 0.5, critic), _loop_info_nce(z_a, z_b, 0.5, critic), atol=1e-5)


def test_info_nce_is_low_for_identical_and_chance_for_collapsed():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 1, 16, 16, generator=g) * 3
    assert info_nce(z, z.clone()) < 0.01
    collapsed = torch.zeros(8, 1, 16, 16)
    # all similarities equal: the positive is one of 2N - 1 candidates
    assert math.isclose(info_nce(collapsed, collapsed).item(), math.log(15), rel_tol=1e-5)


def test_info_nce_symmetric_and_gradients_finite():
    g = torch.Generator().manual_seed(2)
    z_a = torch.randn(4, 1, 8, 8, generator=g, requires_grad=True)
    z_b = torch.randn(4, 1, 8, 8, generator=g)
    loss = info_nce(z_a, z_b)
    assert torch.allclose(loss, info_nce(z_b, z_a.detach()), atol=1e-6)
    loss.backward()
    assert torch.isfinite(z_a.grad).all()


def test_turned_negatives_penalise_representations_that_look_the_same_turned():
    g = torch.Generator().manual_seed(3)
    oriented = torch.randn(4, 1, 16, 16, generator=g) * 3
    # Each sample made invariant to quarter turns: its turned copies tie with the positive.
    symmetric = sum(torch.rot90(oriented, k, (-2, -1)) for k in range(4))
    for z in (oriented, symmetric):  # plain InfoNCE cannot tell them apart
        assert info_nce(z, z.clone()) < 0.01
    assert info_nce(oriented, oriented.clone(), turned_negatives=True) < 0.01
    # 3 turned negatives as similar as the positive: -log(1/4)
    turned_loss = info_nce(symmetric, symmetric.clone(), turned_negatives=True).item()
    assert math.isclose(turned_loss, math.log(4), rel_tol=1e-3)
    with pytest.raises(ValueError, match="square"):
        info_nce(oriented[..., :8], oriented[..., :8], turned_negatives=True)


def test_info_nce_rejects_bad_batches():
    with pytest.raises(ValueError, match="at least 2"):
        info_nce(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        info_nce(torch.zeros(2, 1, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="unknown critic"):
        similarity_matrix(torch.zeros(2, 3), "l1")


def test_activation_penalty():
    z = torch.full((2, 1, 4, 4), 2.0)
    assert activation_penalty(z, l1=0.5, l2=0.25).item() == pytest.approx(0.5 * 2 + 0.25 * 4)


def test_rotate90_per_sample():
    x = torch.arange(2 * 9, dtype=torch.float32).view(2, 1, 3, 3)
    out = rotate90(x, torch.tensor([1, 3]))
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(out[1], torch.rot90(x[1], 3, dims=(-2, -1)))


def test_equivariant_forward_rotates_back():
    """For a pointwise network the trick is exact; for a directional one it averages over C4."""
    pointwise = nn.Conv2d(1, 1, 1)
    x = torch.randn(6, 1, 8, 8)
    assert torch.allclose(equivariant_forward(pointwise, x), pointwise(x), atol=1e-6)

    directional = nn.Conv2d(1, 1, (1, 3), padding=(0, 1), bias=False)
    with torch.no_grad():
        directional.weight.copy_(torch.tensor([[[[-1.0, 0.0, 1.0]]]]))  # d/dx: not rotation-invariant
    g = torch.Generator().manual_seed(3)
    turns = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(3))
    expected = rotate90(directional(rotate90(x, turns)), (4 - turns) % 4)
    assert torch.allclose(equivariant_forward(directional, x, g), expected, atol=1e-6)


def test_rotate_about_centre_quarter_turn_is_rot90():
    x = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(4))
    turned = rotate_about_centre(x, torch.tensor([math.pi / 2, -math.pi / 2]))
    # the sign convention is the grid's; what matters is that +angle and -angle are inverse quarter turns
    assert torch.allclose(turned[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(turned[1], torch.rot90(x[1], -1, dims=(-2, -1)), atol=1e-5)


def test_equivariance_penalty_zero_for_pointwise_large_for_directional():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 1, 32, 32, generator=g).cumsum(-1).cumsum(-2)  # smooth, like image content
    pointwise = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        penalty = equivariance_penalty(pointwise, x, pointwise(x), torch.Generator().manual_seed(0))
    assert penalty < 1e-6  # a pointwise map commutes with (bilinear) rotation

    directional = nn.Conv2d(1, 1, (1, 3), padding=(0, 1), bias=False)
    with torch.no_grad():
        directional.weight.copy_(torch.tensor([[[[-1.0, 0.0, 1.0]]]]))
        penalty = equivariance_penalty(directional, x, directional(x), torch.Generator().manual_seed(0))
    assert penalty > 0.3  # d/dx of a rotated image is not the rotated d/dx


def test_equivariance_penalty_trains_towards_equivariance():
    """Minimising the penalty alone turns a directional filter into an isotropic one."""
    torch.manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[[[0.0, 0.0, 0.0], [-1.0, 0.2, 1.0], [0.0, 0.0, 0.0]]]]))
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(6)).cumsum(-1).cumsum(-2)
    g = torch.Generator().manual_seed(7)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    before = equivariance_penalty(net, x, net(x), torch.Generator().manual_seed(8)).item()
    for _ in range(150):
        loss = equivariance_penalty(net, x, net(x), g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = equivariance_penalty(net, x, net(x), torch.Generator().manual_seed(8)).item()
    assert after < 0.1 * before


def test_partner_accuracy_counts_samples_whose_nearest_is_their_partner():
    import torch

    from napari_comir.core.losses import partner_accuracy

    z = torch.randn(6, 1, 4, 4)
    assert partner_accuracy(z, z + 1e-3) == 1.0  # every partner nearly identical
    shuffled = z[torch.tensor([1, 2, 3, 4, 5, 0])]
    assert partner_accuracy(z, shuffled) < 0.5  # partners are other samples' twins
