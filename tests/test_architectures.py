"""threedb.evaluators.architectures.UNet: shapes, size, and real training steps on shipped images."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from threedb.evaluators.architectures import UNet
from threedb.evaluators.datasets import ImageDataset
from threedb.robustness.metrics import f_measure

HELDOUT = Path(__file__).resolve().parents[1] / "assets" / "datasets" / "quickstart_heldout"


@pytest.mark.parametrize("size", [(64, 64), (60, 50), (17, 33)])
def test_unet_logits_shape_any_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = UNet(num_classes=5).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


def test_unet_size() -> None:
    params = sum(p.numel() for p in UNet(12).parameters())
    assert 100_000 <= params <= 500_000
    assert sum(p.numel() for p in UNet(12, width=8, depth=2, in_channels=1).parameters()) < params


def test_unet_training_steps_reduce_loss_on_shipped_masks() -> None:
    torch.manual_seed(0)
    ds = ImageDataset(HELDOUT)
    # 8 images of different classes; per-pixel target: 0 background, label + 1 on the object mask
    items = [ds[i] for i in range(0, len(ds), len(ds) // 8)][:8]
    x = torch.stack([img for img, _, _ in items]).float() / 255
    y = torch.stack([t["mask"].long() * (label + 1) for _, label, t in items])
    k = len(ds.classes) + 1
    net = UNet(k)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():  # batch statistics (15 steps leave the running ones unsettled)
        pred = net(x).argmax(1)
    # it finds the objects (foreground vs background) after 15 steps; all background would score 0
    assert f_measure(pred, y).mean() > 0.3


def test_unet_bad_arguments_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="depth"):
        UNet(3, depth=0)
