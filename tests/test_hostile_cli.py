"""Adversarial command lines (issue 18, items 1, 5, 6): every runtime mistake of a user - a bad flag
value, a missing or crafted file, a foreign folder - ends with ONE line on stderr and exit 2,
nothing deleted, nothing allocated beyond reason. ``ATTACKS`` maps a name to a function that prepares
files in a temporary folder and returns (argv, cwd); ``scripts``-style counters can reuse it."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from persona.__main__ import main as persona_main
from persona.data import formats as F
from persona.data import world as S

TINY = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=4, mono_test_frames=2, audio_train_frames=4,
                         audio_test_frames=2, val_frames=1, novel_every=2, prior_images=2, render_batch=8)


def _tiny_video(tmp: Path) -> Path:
    """A valid NerFACE folder (a tiny synthetic build in ``tmp``)."""
    root = tmp / "bench"
    if not S.is_complete(root):
        S.build_benchmark(root, "smoke", config=TINY)
    return root / "id00" / "mono"


def _copy_video(tmp: Path, name: str = "video") -> Path:
    import shutil

    dst = tmp / name
    shutil.copytree(_tiny_video(tmp), dst)
    return dst


def _foreign(tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "precious.txt").write_text("keep\n")
    return tmp / "mine"


def _pickle(tmp: Path, builder) -> str:
    path = tmp / "crafted.pkl"
    path.write_bytes(builder())
    return str(path)


def _generator(tmp: Path, **changes) -> str:
    from persona.eg3d import build_generator, save_generator

    path = tmp / "gen.safetensors"
    save_generator(build_generator("tiny"), path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["generator"].update(changes)
    path.with_suffix(".json").write_text(json.dumps(meta))
    return str(path)


def _run(tmp: Path, config) -> str:
    run = tmp / "run"
    run.mkdir()
    (run / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return str(run)


def _video_with(tmp: Path, edit) -> str:
    root = _copy_video(tmp)
    edit(root)
    return str(root)


def _bad_frame_index(root: Path) -> None:
    meta = json.loads((root / "transforms_train.json").read_text())
    meta["frames"][1]["frame_index"] = -2
    (root / "transforms_train.json").write_text(json.dumps(meta))


def _non_square(root: Path) -> None:
    for png in (root / "images").glob("*.png"):
        F.write_image(png, np.zeros((16, 20, 3), np.uint8))


def _aud(data: bytes):
    def edit(root: Path) -> None:
        (root / "aud.npy").write_bytes(data)
    return edit


def _edit_wav_rate(root: Path) -> None:
    data = bytearray((root / "aud.wav").read_bytes())
    data[24:32] = bytes(8)  # sample rate and byte rate fields of the fmt chunk
    (root / "aud.wav").write_bytes(bytes(data))
    (root / "aud.npy").unlink()


def _huge_npy_header() -> bytes:
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (1_000_000_000, 16, 29)}).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64


ATTACKS = {
    # item 1: never delete what persona did not write
    "data-build-foreign-folder": lambda t: (["data", "build", "--profile", "smoke", "--out", str(_foreign(t))], t),
    "data-build-out-dot-foreign-cwd": lambda t: (["data", "build", "--profile", "smoke", "--out", "."], _foreign(t)),
    "data-build-out-a-file": lambda t: (["data", "build", "--out", str(Path(_foreign(t)) / "precious.txt")], t),
    "data-build-negative-seed": lambda t: (["data", "build", "--seed", "-1", "--out", str(t / "b")], t),
    "data-figure-resolution-0": lambda t: (["data", "figure", "--resolution", "0", "--out", str(t / "f.png")], t),
    # item 5: flags out of range
    "train-nerface-iterations-minus-5": lambda t: (["train", "--method", "nerface", "--iterations", "-5", "--data", str(t), "--out", str(t / "r")], t),
    "train-fomm-iterations-minus-1": lambda t: (["train", "--method", "fomm", "--iterations", "-1", "--data", str(t), "--out", str(t / "r")], t),
    "train-ours-k-0": lambda t: (["train", "--k", "0", "--data", str(t), "--out", str(t / "r")], t),
    "train-ours-seed-minus-1": lambda t: (["train", "--seed", "-1", "--data", str(t), "--out", str(t / "r")], t),
    "render-batch-0": lambda t: (["render", str(t / "r"), "--batch", "0"], t),
    "render-orbit-minus-3": lambda t: (["render", str(t / "r"), "--orbit", "-3"], t),
    "eval-batch-size-0": lambda t: (["eval", str(t / "r"), "--batch-size", "0"], t),
    "prior-train-steps-minus-1": lambda t: (["prior", "train", "--steps", "-1", "--out", str(t / "p")], t),
    "prior-train-threads-0": lambda t: (["prior", "train", "--threads", "0", "--out", str(t / "p")], t),
    "syncnet-train-max-minutes-nan": lambda t: (["syncnet", "train", "--max-minutes", "nan", "--out", str(t / "s")], t),
    "bench-renderer-seconds-inf": lambda t: (["bench", "renderer", "--seconds", "inf"], t),
    # item 6: missing or damaged files
    "train-missing-data": lambda t: (["train", "--profile", "smoke", "--data", str(t / "nope"), "--out", str(t / "r")], t),
    "train-garbage-transforms": lambda t: (["train", "--profile", "smoke", "--data",
                                            _video_with(t, lambda r: (r / "transforms_train.json").write_text("{oops")), "--out", str(t / "r")], t),
    "train-negative-frame-index": lambda t: (["train", "--profile", "smoke", "--data", _video_with(t, _bad_frame_index), "--out", str(t / "r")], t),
    "train-non-square-frames": lambda t: (["train", "--profile", "smoke", "--data", _video_with(t, _non_square), "--out", str(t / "r")], t),
    "train-complex-aud-npy": lambda t: (["train", "--profile", "smoke", "--data",
                                         _video_with(t, _aud(F.npy_bytes(np.ones((6, 16, 29), np.complex64)))), "--out", str(t / "r")], t),
    "train-1.7TB-aud-npy-header": lambda t: (["train", "--profile", "smoke", "--data", _video_with(t, _aud(_huge_npy_header())),
                                              "--out", str(t / "r")], t),
    "train-wav-rate-0": lambda t: (["train", "--profile", "smoke", "--data", _video_with(t, _edit_wav_rate), "--out", str(t / "r")], t),
    "train-missing-generator": lambda t: (["train", "--profile", "smoke", "--data", str(_tiny_video(t)), "--generator",
                                           str(t / "nope.pkl"), "--out", str(t / "r")], t),
    "train-generator-sidecar-z-dim-2e5": lambda t: (["train", "--profile", "smoke", "--data", str(_tiny_video(t)), "--generator",
                                                     _generator(t, z_dim=200_000), "--out", str(t / "r")], t),
    "train-generator-sidecar-nan-ray": lambda t: (["train", "--profile", "smoke", "--data", str(_tiny_video(t)), "--generator",
                                                   _generator(t, ray_start=float("nan")), "--out", str(t / "r")], t),
    "train-generator-garbage-safetensors": lambda t: (["train", "--profile", "smoke", "--data", str(_tiny_video(t)), "--generator",
                                                       _garbage(t / "g.safetensors"), "--out", str(t / "r")], t),
    "train-generator-garbage-pkl": lambda t: (["train", "--profile", "smoke", "--data", str(_tiny_video(t)), "--generator",
                                               _garbage(t / "g.pkl"), "--out", str(t / "r")], t),
    "render-missing-run": lambda t: (["render", str(t / "nope")], t),
    "render-config-not-json": lambda t: (["render", _run(t, "{method: ours")], t),
    "render-config-a-list": lambda t: (["render", _run(t, [1, 2])], t),
    "render-config-no-method": lambda t: (["render", _run(t, {"config": {}})], t),
    "render-config-unknown-method": lambda t: (["render", _run(t, {"method": "magic", "config": {}})], t),
    "render-config-bad-iterations": lambda t: (["render", _run(t, {"method": "nerface", "config": {"iterations": "many"}})], t),
    "eval-config-unknown-field": lambda t: (["eval", _run(t, {"method": "ours", "config": {"frobnicate": 1}, "data": "x"})], t),
    "eval-config-data-not-a-path": lambda t: (["eval", _run(t, {"method": "ours", "config": {}, "data": 5})], t),
    "eval-no-checkpoint": lambda t: (["eval", _run(t, {"method": "nerface", "config": {"profile": "smoke"}, "data": "x"})], t),
}


def _garbage(path: Path) -> str:
    path.write_bytes(os.urandom(64))
    return str(path)


def run_attack(name: str, tmp: Path) -> tuple[int, str]:
    """(exit code, stderr) of one attack run in this process (argparse's SystemExit counts as its code)."""
    argv, cwd = ATTACKS[name](tmp)
    err = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = persona_main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(old)
    return code, err.getvalue()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_with_one_line_and_exit_2(name, tmp_path):
    code, err = run_attack(name, tmp_path)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    last = lines[-1]
    assert last.startswith(("persona: error:", "python -m persona")), err  # ours, or argparse's usage error
    if last.startswith("persona: error:"):
        assert len(lines) == 1, err
    if (tmp_path / "mine").exists():
        assert (tmp_path / "mine" / "precious.txt").read_text() == "keep\n"
        assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["precious.txt"]
