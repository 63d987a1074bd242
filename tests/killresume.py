"""Kill-and-resume harness for the trainers (used by tests/test_resume_kill.py).

``python tests/killresume.py SPEC.json`` trains one method as the spec says and, when the spec
has ``kill_after_step``, SIGKILLs its own process right after the metrics row of that step is
written (a real kill between two checkpoints: no cleanup, no atexit, no flush of anything else).

SPEC: ``{"method", "data", "out", "config", "threads", "kill_after_step"?}``; ``method`` is a
registered method name, ``"prior"`` (the EG3D prior trainer) or ``"syncnet"`` (the lip-sync
expert on two random clips); ``data`` is unused for those two.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def train(spec: dict[str, Any]) -> None:
    """Train (or resume) ``spec['out']`` in this process, at ``spec['threads']`` torch threads (the
    process's own count is restored afterwards, so a pytest run keeps its threads)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(spec["threads"]))
    try:
        _train(spec)
    finally:
        torch.set_num_threads(previous)


def _train(spec: dict[str, Any]) -> None:
    import torch

    if spec["method"] == "prior":
        from persona.eg3d.train import PRIOR_PROFILES, train_prior
        from persona.profiles import for_profile

        config = for_profile(PRIOR_PROFILES, "smoke", **spec["config"])
        train_prior(config, spec["out"], resume=True, progress=False)
        return
    if spec["method"] == "syncnet":
        from persona.profiles import for_profile
        from persona.runs import RunDir
        from persona.syncnet import TRAIN_PROFILES, Clip, train_expert

        config = for_profile(TRAIN_PROFILES, "smoke", **spec["config"])
        gen = torch.Generator().manual_seed(0)  # two random clips: the trainer's stream is what is tested
        clips = [Clip(torch.randint(0, 256, (24, 3, 64, 64), generator=gen, dtype=torch.uint8),
                      torch.randn(13, 24 * 4, generator=gen), 4) for _ in range(2)]
        train_expert(clips, config, progress=False, run=RunDir(spec["out"]), checkpoint_every=2)
        return
    from persona.data.dataset import FrameDataset
    from persona.methods import build_method
    from persona.runs import RunDir

    method = build_method(spec["method"], {"profile": "smoke", **spec["config"]})
    resolution = getattr(getattr(method, "config", None), "resolution", None)
    method.fit(FrameDataset(spec["data"], split="train", resolution=resolution), RunDir(spec["out"]))


def _kill_after(step: int) -> None:
    from persona.runs import RunDir

    log = RunDir.log

    def log_then_die(self, logged: int, **values: Any) -> None:
        log(self, logged, **values)
        if logged == step:
            os.kill(os.getpid(), signal.SIGKILL)

    RunDir.log = log_then_die


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("kill_after_step") is not None:
        _kill_after(int(spec["kill_after_step"]))
    train(spec)
