"""Known values and invariants of persona.metrics (PSNR, SSIM, LPIPS incl. its offline behaviour)."""

from __future__ import annotations

import math

import pytest
import torch

from persona import metrics


def _images(batch=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 3, size, size, generator=g) * 1.6 - 0.8
    pred = (target + 0.2 * torch.randn(batch, 3, size, size, generator=g)).clamp(-1, 1)
    return pred, target


def test_psnr_of_known_noise_level():
    # +-0.1 in [0,1] units (= +-0.2 in [-1,1]) everywhere -> MSE 0.01 -> exactly 20 dB
    target = torch.zeros(2, 3, 16, 16)
    sign = torch.ones(16, 16)
    sign[::2] = -1
    pred = target + 0.2 * sign
    assert torch.allclose(metrics.psnr(pred, target), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-9)
    # a quarter of that amplitude -> +12.04 dB (20 log10 4)
    assert torch.allclose(metrics.psnr(target + 0.05 * sign, target), torch.full((2,), 20 + 20 * math.log10(4), dtype=torch.float64))
    assert torch.isinf(metrics.psnr(target, target)).all()


def test_ssim_identity_is_one_and_noise_lowers_it():
    pred, target = _images()
    assert torch.allclose(metrics.ssim(target, target), torch.ones(3, dtype=torch.float64))
    noisy = metrics.ssim(pred, target)
    assert (noisy < 0.95).all() and (noisy > 0).all()


def test_ssim_matches_reference_settings():
    from skimage.metrics import structural_similarity

    pred, target = _images(batch=1)
    a = ((target[0] + 1) / 2).permute(1, 2, 0).double().numpy()
    b = ((pred[0] + 1) / 2).permute(1, 2, 0).double().numpy()
    expected = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert metrics.ssim(pred, target)[0].item() == pytest.approx(expected, abs=1e-8)


def test_metrics_invariant_to_batch_split():
    pred, target = _images(batch=4)
    box = torch.tensor([0.2, 0.5, 0.8, 0.9])
    for fn in (metrics.psnr, metrics.ssim):
        for region in (None, box):
            whole = fn(pred, target, region)
            parts = torch.cat([fn(pred[:1], target[:1], region), fn(pred[1:], target[1:], region)])
            assert torch.allclose(whole, parts)


def test_region_scores_only_the_region():
    pred, target = _images(batch=2, size=32)
    box = torch.tensor([0.25, 0.5, 0.75, 1.0])  # lower-middle: columns 8..23, rows 16..31
    mask = metrics.box_mask(box, 2, 32, 32)
    assert mask.sum().item() == 2 * 16 * 16
    # damage outside the region only: region PSNR unchanged, full PSNR drops
    damaged = pred.clone()
    damaged[:, :, :8] = 1.0
    assert torch.allclose(metrics.psnr(damaged, target, box), metrics.psnr(pred, target, box))
    assert (metrics.psnr(damaged, target) < metrics.psnr(pred, target)).all()
    # perfect inside the region -> inf, wherever the errors outside are
    fixed = torch.where(mask.bool().expand_as(pred), target, pred)
    assert torch.isinf(metrics.psnr(fixed, target, box)).all()
    # box and the equivalent mask agree; per-frame boxes [B,4] work
    assert torch.allclose(metrics.psnr(pred, target, box), metrics.psnr(pred, target, mask))
    assert torch.allclose(metrics.ssim(pred, target, box), metrics.ssim(pred, target, mask))
    per_frame = torch.stack([box, torch.tensor([0.0, 0.0, 0.5, 0.5])])
    assert metrics.psnr(pred, target, per_frame)[1] == metrics.psnr(pred[1:], target[1:], per_frame[1])[0]
    # an empty region is NaN, not a number
    empty = torch.zeros(2, 1, 32, 32)
    assert torch.isnan(metrics.psnr(pred, target, empty)).all()


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"expected \[B,3,H,W\]"):
        metrics.psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="region"):
        metrics.psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), torch.zeros(5))


def test_lpips_absent_backbone_is_unavailable_not_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: no AlexNet weights
    assert not metrics.lpips_available()
    reason = metrics.lpips_unavailable_reason()
    assert metrics.ALEXNET_FILE in reason and str(tmp_path) in reason
    metric = metrics.LPIPS()
    assert not metric.available and metric.model is None
    pred, target = _images(batch=2)
    assert torch.isnan(metric(pred, target)).all()
    assert metrics.lpips_loss_model() is None
    assert not list(tmp_path.rglob("*.pth"))  # nothing was downloaded


def test_lpips_code_path_with_random_backbone(tmp_path, monkeypatch):
    """Values here come from a RANDOM AlexNet: they exercise the code path and are NOT LPIPS."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    metric = metrics.LPIPS(allow_random_backbone=True)
    assert not metric.available and metric.label == metrics.NOT_LPIPS_LABEL
    pred, target = _images(batch=2, size=32)
    same = metric(target, target)
    assert torch.allclose(same, torch.zeros(2, dtype=torch.float64), atol=1e-7)
    different = metric(pred, target)
    assert (different > 0).all()
    assert torch.allclose(torch.cat([metric(pred[:1], target[:1]), metric(pred[1:], target[1:])]), different, atol=1e-6)
    box = torch.tensor([0.0, 0.5, 1.0, 1.0])
    assert metric(pred, target, box).shape == (2,)


def test_lpips_loads_backbone_from_cache_file(tmp_path, monkeypatch):
    """A (here random) AlexNet state dict in the cache is picked up, strictly mapped, and marks LPIPS available."""
    from persona._torchvision import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(1)
    alexnet = tv.models.alexnet(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(alexnet.state_dict(), cache / metrics.ALEXNET_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert metrics.lpips_available() and metrics.lpips_unavailable_reason() is None
    metric = metrics.LPIPS()
    assert metric.available and metric.label == metrics.LPIPS_LABEL
    assert torch.equal(metric.model.net.slice1._modules["0"].weight, alexnet.features[0].weight)
    assert torch.equal(metric.model.net.slice5._modules["10"].weight, alexnet.features[10].weight)
    loss_model = metrics.lpips_loss_model()
    assert all(not p.requires_grad for p in loss_model.parameters())
