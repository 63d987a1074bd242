"""The SyncNet protocol (MFCC, shifts, LSE-D / LSE-C / offset), the official weights' loader,
and the shipped synthetic expert on the synthetic world."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from persona import syncnet


def test_mfcc_layout_and_known_values():
    rate = 16000
    t = np.arange(rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t)
    cc = syncnet.mfcc(tone, rate)
    assert cc.shape == (13, 1 + int(np.ceil((rate - 400) / 160)))  # 100 Hz, python_speech_features framing
    # c0 is the log frame energy: doubling the amplitude adds log(4)
    assert np.allclose(syncnet.mfcc(2 * tone, rate)[0] - cc[0], np.log(4), atol=1e-4)
    # int16 input and float input in [-1,1] are the same signal
    assert np.allclose(syncnet.mfcc((tone * 32768).astype(np.int16), rate), cc, atol=0.05)
    bank = syncnet.mel_filterbank()
    assert bank.shape == (26, 257) and np.all(bank.max(1) <= 1) and np.all(bank.sum(1) > 0)


def _features(frames=80, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, dim, generator=g)


def test_protocol_recovers_known_offset_and_sign():
    truth = _features()
    synced = syncnet.scores_from_distances(syncnet.shift_distances(truth[:70], truth[:70]))
    assert synced.offset == 0 and synced.lse_d < 1e-3 and synced.lse_c > 1
    # audio advanced by 3 frames: audio window i holds what video window i+3 shows -> offset +3
    advanced = syncnet.scores_from_distances(syncnet.shift_distances(truth[:70], truth[3:73]))
    assert advanced.offset == 3
    delayed = syncnet.scores_from_distances(syncnet.shift_distances(truth[3:73], truth[:70]))
    assert delayed.offset == -3
    shuffled = syncnet.scores_from_distances(syncnet.shift_distances(truth[:70], truth[torch.randperm(70)]))
    assert shuffled.lse_c < 0.3 * synced.lse_c and shuffled.lse_d > synced.lse_d
    assert synced.distances.shape == (2 * syncnet.VSHIFT + 1,)


def test_shift_wave_moves_audio_by_whole_frames():
    wave = np.arange(16000, dtype=np.float64)
    advanced = syncnet.shift_wave(wave, 3, 25, 16000)
    assert advanced[0] == 3 * 640 and len(advanced) == len(wave)
    assert syncnet.shift_wave(wave, -2, 25, 16000)[2 * 640] == 0


def test_network_shapes_and_official_weights_load(tmp_path):
    small = syncnet.SyncNet(syncnet.NET_PROFILES["smoke"]).eval()
    assert small.forward_lip(torch.zeros(2, 3, 5, 64, 64)).shape == (2, 1024)
    assert small.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
    official = syncnet.SyncNet(syncnet.NET_PROFILES["paper"])
    state = {k: v for k, v in official.state_dict().items() if not k.endswith("num_batches_tracked")}  # old files lack them
    state["netcnnlip.0.weight"] = torch.full_like(state["netcnnlip.0.weight"], 0.5)
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)  # the official file is a torch pickle of a state dict like this
    scorer = syncnet.load_official(path)
    assert scorer.name == "SyncNet" and scorer.config.crop_size == 224
    assert torch.all(scorer.model.netcnnlip[0].weight == 0.5)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError, match="unexpected"):  # a PersonaInputError: one line on the command line
        syncnet.load_official(path)


def test_prepare_frames_crops_the_mouth_box():
    images = torch.full((6, 3, 64, 64), -1.0)
    images[:, 0, 40:56, 24:40] = 1.0  # a red square where the mouth box is
    config = syncnet.SyncNetConfig(width=0.125, crop_size=64, crop="mouth", mouth_margin=1.0)
    frames = syncnet.prepare_frames(images, config, torch.tensor([24 / 64, 40 / 64, 40 / 64, 56 / 64]))
    assert frames.shape == (6, 3, 64, 64)
    assert torch.allclose(frames[:, 2], torch.full_like(frames[:, 2], 255.0))  # red, in BGR order, 0..255
    assert torch.allclose(frames[:, 0], torch.zeros_like(frames[:, 0]))


@pytest.fixture(scope="module")
def held_out_clip():
    """A synced 4 s talking clip of an identity the expert never saw (64 px, frontal)."""
    return syncnet.render_talking_clip(5000, 4.0)


@pytest.mark.skipif(not syncnet.ASSET.is_file(), reason="shipped synthetic expert not built yet")
def test_synthetic_expert_recovers_offset_and_detects_shuffled_audio(held_out_clip):
    images, box, wave = held_out_clip
    expert = syncnet.load_synthetic_expert()
    assert expert.name == syncnet.SYNTHETIC_NAME and "SyncNet" not in expert.name
    synced = expert.score(images, wave, mouth_boxes=box)
    assert synced.offset == 0
    assert expert.score(images, syncnet.shift_wave(wave, 3, 25, 16000), mouth_boxes=box).offset == 3
    # audio shuffled in 0.2 s chunks: no consistent shift matches -> confidence drops
    chunks = np.array_split(wave, len(wave) // 3200)
    order = np.random.default_rng(0).permutation(len(chunks))
    shuffled = expert.score(images, np.concatenate([chunks[i] for i in order]), mouth_boxes=box)
    assert shuffled.lse_c < 0.5 * synced.lse_c and shuffled.lse_d > synced.lse_d


def test_minimum_clip_length_comes_from_the_offset_search():
    assert syncnet.MIN_CLIP_FRAMES == 2 * syncnet.VSHIFT + 1 + syncnet.VIDEO_FRAMES == 36
    syncnet.check_clip_length(36)
    with pytest.raises(syncnet.SyncClipTooShort, match=r"clip\.wav: lip-sync clip of 12 frames; expected >= 36 frames"):
        syncnet.check_clip_length(12, "clip.wav")
    scorer = syncnet.SyncScorer(syncnet.SyncNet(syncnet.SyncNetConfig(width=0.125, crop_size=64, crop="face")), "test")
    with pytest.raises(syncnet.SyncClipTooShort, match="6 frames"):  # no more "need >= 6" from deep inside embed
        scorer.score(torch.zeros(6, 3, 64, 64), np.zeros(6 * 640))
    with pytest.raises(syncnet.SyncClipTooShort, match="20 frames"):  # the audio is the shorter stream
        scorer.score(torch.zeros(40, 3, 64, 64), np.zeros(20 * 640))


def test_evaluate_sync_leaves_a_short_clip_unscored_with_the_reason():
    from persona.evaluate import evaluate_sync

    class Short:
        root, split, fps = "data/id00/audio", "test", 25

        def __len__(self):
            return 15

    rows = evaluate_sync(types.SimpleNamespace(name="m"), Short(), scorer=object())
    assert list(rows["method"]) == ["m", "ground truth"] and rows["lse_c"].isna().all()
    assert "15 frames; expected >= 36" in rows["note"].iloc[0]


def test_offset_accuracy_is_the_share_of_windows_nearest_the_synced_audio():
    distances = torch.ones(4, 2 * syncnet.VSHIFT + 1)
    distances[0, syncnet.VSHIFT] = distances[1, syncnet.VSHIFT] = distances[2, syncnet.VSHIFT] = 0.0
    distances[3, 0] = 0.0  # window 3 prefers shift -15
    scores = syncnet.scores_from_distances(distances)
    assert scores.offset_accuracy == pytest.approx(0.75) and scores.offset == 0
    assert set(scores.as_row()) >= {"lse_c", "lse_d", "offset", "offset_accuracy", "windows"}


class ClipDataset:
    """A FrameDataset stand-in over a rendered talking clip with its aud.wav in ``root``."""

    def __init__(self, root, images, box, wave, split="test"):
        from scipy.io import wavfile

        self.root, self.split, self.fps, self.images, self.box = root, split, 25, images, box
        root.mkdir(parents=True, exist_ok=True)
        wavfile.write(str(root / "aud.wav"), 16000, (np.clip(wave, -1, 1) * 32767).astype(np.int16))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "mouth_box": self.box[i] if self.box.dim() == 2 else self.box, "index": i}


@pytest.mark.skipif(not syncnet.ASSET.is_file(), reason="shipped synthetic expert not built yet")
def test_reference_rows_sit_below_the_ground_truth(held_out_clip, tmp_path):
    images, box, wave = held_out_clip
    clip = ClipDataset(tmp_path / "a", images, box, wave)
    other_images, other_box, other_wave = syncnet.render_talking_clip(5001, 4.0)
    other = ClipDataset(tmp_path / "b", other_images, other_box, other_wave)
    short = ClipDataset(tmp_path / "c", images[:20], box[:20], wave[:20 * 640])
    from persona import evaluate

    table = evaluate.sync_reference_rows({"id00": clip, "id01": other, "short": short})
    assert set(table["identity"]) == {"id00", "id01"}  # the 20-frame clip is not scored
    rows = table[table["identity"] == "id00"].set_index("method")
    assert list(rows.index) == [name + evaluate.SYNC_REFERENCE_SUFFIX for name in syncnet.REFERENCE_ROWS]
    rows.index = list(syncnet.REFERENCE_ROWS)
    truth = rows.loc["ground truth"]
    for name in syncnet.REFERENCE_ROWS[1:]:
        assert rows.loc[name, "sync"] < truth["sync"], name
        assert rows.loc[name, "sync_offset_accuracy"] < truth["sync_offset_accuracy"], name
