"""Ours' weight average (``ema_decay``, issue #20): the update, and that a finished run renders with it."""

from __future__ import annotations

import pytest
import torch

from persona.data import world as S
from persona.errors import PersonaInputError
from persona.experiments import key_config
from persona.ours.train import WeightAverage, train_config
from persona.runs import RunDir, load_tensors, unprefixed

TINY = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=6, mono_test_frames=2, audio_train_frames=6,
                         audio_test_frames=2, val_frames=1, novel_every=2, prior_images=2, render_batch=8)


def test_update_moves_the_average_by_one_minus_the_warm_decay():
    layer = torch.nn.Linear(3, 2)
    average = WeightAverage(layer, decay=0.99)
    start = [p.detach().clone() for p in layer.parameters()]
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    average.update(layer)  # first update: d = min(0.99, 1/10)
    for a, s in zip(average.average, start):
        assert torch.allclose(a, s + 0.9)
    average.update(layer)  # second: d = 2/11, towards the same weights
    for a, s in zip(average.average, start):
        assert torch.allclose(a, s + 1.0 - (0.1 * 2 / 11))
    assert average.updates == 2


def test_decay_is_checked_and_off_leaves_cache_keys_alone():
    with pytest.raises(PersonaInputError, match="ema_decay"):
        train_config("default", ema_decay=1.0)
    # off (the paper's, the release's): left out of the key, so runs cached before it existed keep theirs
    assert "ema_decay" not in key_config(train_config("default", modality="3dmm", ema_decay=0.0))
    assert key_config(train_config("default", modality="3dmm", ema_decay=0.99))["ema_decay"] == 0.99


def test_default_is_on_for_3dmm_and_audio_off_for_rgb_and_the_paper():
    for profile in ("default", "smoke"):
        assert train_config(profile, modality="3dmm").ema_decay == 0.99
        assert train_config(profile, modality="audio").ema_decay == 0.99
        assert train_config(profile, modality="rgb").ema_decay == 0.0  # not measured on RGB: its last weights
        assert train_config(profile, modality="rgb", ema_decay=0.9).ema_decay == 0.9  # unless given
    for profile in ("paper", "paper-dry"):
        for modality in ("rgb", "3dmm", "audio"):
            assert train_config(profile, modality=modality).ema_decay == 0.0
    # giving ema_decay on RGB does not switch its optimiser to the short-budget recipe
    assert train_config("default", modality="rgb", ema_decay=0.9).basis_lr is None


def test_finished_run_is_the_average_and_loads_as_it(tmp_path):
    from persona.data.dataset import FrameDataset
    from persona.methods import build_method

    S.build_benchmark(tmp_path / "bench", "smoke", seed=0, config=TINY)
    train = FrameDataset(tmp_path / "bench" / "id00" / "mono", "train")
    cfg = {"profile": "smoke", "modality": "3dmm", "iterations": 4, "frozen_iterations": 2, "resolution": 16,
           "lambda_lpips": 0.0, "ema_decay": 0.5}
    method = build_method("ours", dict(cfg))
    run = RunDir(tmp_path / "run")
    method.fit(train, run)
    tensors, _ = load_tensors(run.checkpoint_path(4))
    averaged, trained = unprefixed("ema", tensors), unprefixed("model", tensors)
    fitted = dict(method.model.named_parameters())
    assert set(averaged) == set(fitted)
    assert all(torch.equal(fitted[k], averaged[k]) for k in averaged)
    assert any(not torch.equal(trained[k], averaged[k]) for k in averaged)  # the average is not the last step's weights
    loaded = build_method("ours", dict(cfg))
    loaded.load(run)
    assert all(torch.equal(p, averaged[k]) for k, p in loaded.model.named_parameters())
