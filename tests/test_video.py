"""persona.video (H.264 through imageio-ffmpeg's ffmpeg) and persona.runlist (runs listing, curves)."""

import json
import wave

import numpy as np
import pytest

from persona import runlist, video
from persona.runs import RunDir


def tone(path, seconds, rate=8000):
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())


def test_h264_video_decodes_with_and_without_audio(tmp_path):
    rng = np.random.default_rng(0)
    frames = [video.side_by_side(np.full((64, 64, 3), 40 * i, np.uint8), rng.integers(0, 255, (64, 64, 3), np.uint8))
              for i in range(6)]
    assert frames[0].shape == (64, 130, 3)
    path = video.write_video(tmp_path / "v.mp4", frames, fps=25)
    info = video.probe(path)
    assert info["video"] == "h264" and info["audio"] is None
    assert (info["width"], info["height"]) == (520, 256)  # enlarged 4x (nearest neighbour) for the eye
    decoded = video.read_frames(path)
    assert decoded.shape == (6, 256, 520, 3)
    # the left half of frame 3 is the flat gray 120 it was given (H.264 is lossy: a tolerance)
    assert abs(float(decoded[3, :, :250].mean()) - 120) < 4
    tone(tmp_path / "aud.wav", seconds=2.0)
    with_sound = video.write_video(tmp_path / "a.mp4", frames, fps=25, audio=tmp_path / "aud.wav", audio_start=1.0)
    assert video.probe(with_sound)["audio"] == "aac" and len(video.read_frames(with_sound)) == 6
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_write_video_refuses_frames_of_different_sizes(tmp_path):
    with pytest.raises(ValueError, match="must all be"):
        video.write_video(tmp_path / "v.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 6, 3), np.uint8)], fps=25)
    assert not (tmp_path / "v.mp4").exists()


def test_runs_listing_and_training_curve(tmp_path, capsys):
    run = RunDir(tmp_path / "runs" / "smoke" / "ours-id00-abc")
    run.write_config({"method": "ours", "config": {"modality": "audio", "k": 5, "ortho": "qr", "iterations": 4},
                      "data": "/d/id00/audio"})
    for step in range(1, 5):
        run.log(step, loss=1.0 / step, psnr=10.0 + step)
    (run.root / "metrics_test.csv").write_text("view,psnr\ngt,21.5\ngt,22.5\nyaw+25,5\n")
    row = runlist.describe(run.root)
    assert row == {"run": str(run.root), "method": "ours", "modality": "audio", "k": 5, "ortho": "qr", "identity": "id00",
                   "steps": "4/4", "train_psnr": 14.0, "test_psnr": 22.0}
    assert runlist.main([str(tmp_path / "runs"), "--plots"]) == 0
    out = capsys.readouterr().out
    assert "smoke/ours-id00-abc" in out and "22.0" in out
    png = run.root / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert runlist.main([str(tmp_path / "missing")]) == 2
