"""A small Wasserstein autoencoder (Tolstikhin et al., MMD-WAE) for the on-manifold distribution of R4.

The WAE minimises ``||x - dec(enc(x))||^2 + lam * MMD^2(q(z), N(0, I))``: the reconstruction cost plus an
unbiased MMD estimate, with an inverse multiquadratic kernel ``k(a, b) = C / (C + ||a - b||^2)``
(``C = 2 * Z``, the usual choice for a standard normal prior), between the batch's codes and as many prior
draws. Once trained and frozen it gives the local samples ``dec(enc(x) + N(0, sigma^2 I))`` (sigma 0.06 in
the paper) used by :class:`threedb.robustness.framework.perturbations.OnManifold`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from threedb.robustness.framework.checks import check_count, check_positive
from threedb.robustness.framework.errors import FrameworkError


def imq_mmd2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 between samples ``a`` and ``b`` (``n x Z``, ``m x Z``) with the IMQ kernel ``C = 2Z``."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise FrameworkError(f"MMD needs two n x Z samples (n >= 2), got {tuple(a.shape)} and {tuple(b.shape)}")
    c = 2.0 * a.shape[1]

    def k(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return c / (c + torch.cdist(u, v) ** 2)

    n, m = a.shape[0], b.shape[0]
    kaa, kbb = k(a, a), k(b, b)
    within_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    within_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return within_a + within_b - 2.0 * k(a, b).mean()


class WAE(nn.Module):
    """MLP encoder/decoder on flattened inputs in ``[0, 1]`` (sigmoid output), latent size ``latent``."""

    def __init__(self, shape: tuple[int, ...], latent: int = 8, hidden: int = 128) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        d = 1
        for s in self.shape:
            d *= s
        check_count(latent, "latent")
        check_count(hidden, "hidden")
        self.latent = latent
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z).view(-1, *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def wae_loss(model: WAE, x: torch.Tensor, generator: torch.Generator, lam: float = 10.0) -> torch.Tensor:
    """Per-batch MMD-WAE objective: mean squared reconstruction error (summed over pixels) plus
    ``lam * MMD^2(enc(x), N(0, I))``."""
    check_positive(lam, "lam", allow_zero=True)
    z = model.encode(x)
    prior = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
    recon = ((model.decode(z) - x) ** 2).flatten(1).sum(1).mean()
    return recon + lam * imq_mmd2(z, prior)


def train_wae(model: WAE, data: torch.Tensor, *, steps: int = 200, batch_size: int = 64, lr: float = 1e-3,
              lam: float = 10.0, seed: int = 0) -> list[float]:
    """Adam on :func:`wae_loss` over random minibatches of ``data``; returns the loss per step. The model is
    left in ``eval()`` mode with gradients off (frozen)."""
    check_count(steps, "steps")
    check_count(batch_size, "batch_size")
    if data.shape[0] < 2:
        raise FrameworkError("the WAE needs at least 2 training inputs")
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, data.shape[0], (min(batch_size, data.shape[0]),), generator=g)
        batch = data[idx.to(data.device)]
        if batch.shape[0] < 2:
            batch = data[:2]
        loss = wae_loss(model, batch, g, lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    model.requires_grad_(False)
    return losses


def manifold_samples(encoder: Callable[[torch.Tensor], torch.Tensor], decoder: Callable[[torch.Tensor], torch.Tensor],
                     x: torch.Tensor, *, samples: int, sigma: float = 0.06,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``dec(enc(x) + N(0, sigma^2 I))``: ``N x samples x ...`` points clamped to ``[0, 1]``."""
    check_count(samples, "samples")
    check_positive(sigma, "sigma")
    z = encoder(x)
    if z.ndim != 2 or z.shape[0] != x.shape[0]:
        raise FrameworkError(f"the encoder must give N x Z codes, got {tuple(z.shape)} for {x.shape[0]} inputs")
    noise = torch.randn((z.shape[0], samples, z.shape[1]), generator=generator).to(z.device, z.dtype) * sigma
    out = decoder((z[:, None, :] + noise).flatten(0, 1))
    return out.reshape(x.shape[0], samples, *x.shape[1:]).clamp(0.0, 1.0)
