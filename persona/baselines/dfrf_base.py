"""DFRF's base model: pre-trained on many identities' talking clips, then fine-tuned on the target.

DFRF's defining idea (Shen et al. ECCV 2022, sec. 3.4): the reference-conditioned radiance field
is first trained on a corpus of other people's talking videos, so that it learns to read a new
person's appearance from the K reference frames and to move lips with audio; the target clip then
only fine-tunes it ("few-shot"). The benchmark's clips are the target identities, and the prior's
corpus holds stills without audio, so the synthetic world renders the corpus here: ``pretrain_identities``
identities (seeds ``BASE_SEED_OFFSET + i``: disjoint from the benchmark identities, small seeds, and
from the prior's pool at ``PRIOR_POOL_OFFSET``), ``pretrain_frames`` frames each of a talking clip with
a moving head and its audio, at the target's resolution.

Training: the same DFRF loop (:meth:`persona.baselines.nerf_core.NeRFBaseline.fit`) over the corpus,
``pretrain_steps`` steps, each step's K references drawn from the frames of the same identity as
the step's frame; the heads are composited over one grey background (known, like a clip's static
plate; a learned background shared by clips with different plates made the field paint the plates
into the volume: 14.8 dB after the fine-tune), which is not transferred.

Cache: ``<base_dir or REPO_ROOT/runs/dfrf-base>/<hash>``, a run directory (``config.json``,
safetensors checkpoints, ``done.json`` with the corpus seeds and the seconds it took), keyed by every
field that shapes the base model (network sizes, pretraining fields, seed, resolution); locked like
the notebooks' runs, so parallel notebooks train it once.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from persona.baselines.dfrf import DFRF, DfrfConfig
from persona.errors import PersonaInputError
from persona.runs import RunDir, atomic_write_json, load_tensors, unprefixed

BASE_SEED_OFFSET = 2_000_000  # identities of the base corpus (benchmark: small seeds; prior pool: 1_000_000 + i)
INDEX_STRIDE = 1_000_000  # frame numbers of identity i start at i * INDEX_STRIDE (no audio neighbours across clips)
CORPUS_VERSION = 2  # bump when CorpusClips renders differently (2: one grey background for every clip)
CLIP_SPECIFIC = ("background", "train_index", "ref_images", "ref_cameras")  # buffers the fine-tune sets from its clip
# fields that do not change the base model (the fine-tune's own budget and bookkeeping)
_FINE_TUNE_ONLY = ("profile", "iterations", "checkpoint_every", "log_every", "device", "render_chunk", "base_dir", "num_workers")


def corpus_seeds(config: DfrfConfig) -> list[int]:
    """Identity seeds of the base corpus."""
    return [BASE_SEED_OFFSET + i for i in range(config.pretrain_identities)]


class CorpusClips:
    """The base corpus as a frame dataset (FrameDataset's sample keys): talking clips of
    :func:`corpus_seeds` rendered by the synthetic world at ``resolution``. ``identity`` [N] says
    whose frame each sample is."""

    def __init__(self, config: DfrfConfig, resolution: int, batch: int = 32):
        from persona.data import audio
        from persona.data import world as S

        samples: list[dict[str, Any]] = []
        for i, seed in enumerate(corpus_seeds(config)):
            video = S.make_video(config.pretrain_frames, 25.0, seed, moving_head=True)
            identity = S.sample_identity(seed)
            windows = torch.from_numpy(audio.audio_windows(video.waveform, config.pretrain_frames, video.fps)).float()
            expressions = torch.from_numpy(video.expressions).float()
            cams = torch.from_numpy(video.cameras).float()
            for lo in range(0, config.pretrain_frames, batch):
                images, mask = S.render_batch([identity] * len(expressions[lo:lo + batch]), expressions[lo:lo + batch],
                                              cams[lo:lo + batch], resolution, return_mask=True)
                images = images * mask  # over the corpus' one grey background (0 in [-1,1])
                for j, image in enumerate(images):
                    f = lo + j
                    samples.append({"image": image, "camera": cams[f], "expression": expressions[f], "audio": windows[f],
                                    "index": i * INDEX_STRIDE + f, "mouth_box": torch.zeros(4)})
        self.samples = samples
        self.identity = torch.tensor([s["index"] // INDEX_STRIDE for s in samples])
        # one known background for every clip (as each real clip has its static plate): with a learned
        # background shared by clips of different plates, the field paints the plates into the volume
        self.background = torch.zeros(3, resolution, resolution)
        self.root, self.split, self.resolution = "synthetic:dfrf-base-corpus", "train", resolution

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]


class BaseDFRF(DFRF):
    """DFRF trained on the multi-identity corpus: references come from the step's own identity."""

    def _init_from_data(self, frames: dict[str, torch.Tensor]) -> None:
        super()._init_from_data(frames)
        self._identity = frames["index"] // INDEX_STRIDE  # frames are sorted by index

    def _pick_references(self, positions: torch.Tensor | None) -> torch.Tensor:
        same = (self._identity == self._identity[int(positions[0])]).nonzero(as_tuple=True)[0]
        return same[torch.randperm(len(same), generator=self._ref_generator)[: self.config.num_references]]


def base_key(config: DfrfConfig, resolution: int) -> dict[str, Any]:
    """Everything that decides the base model."""
    fields = {k: v for k, v in asdict(config).items() if k not in _FINE_TUNE_ONLY}
    return {"method": "dfrf-base", "corpus_version": CORPUS_VERSION, "config": fields, "resolution": int(resolution),
            "corpus_seeds": corpus_seeds(config)}


def base_dir(config: DfrfConfig, resolution: int) -> Path:
    from persona.experiments import config_hash
    from persona.notebooks import REPO_ROOT

    root = Path(config.base_dir) if config.base_dir else REPO_ROOT / "runs" / "dfrf-base"
    return root / f"dfrf-base-{resolution}px-{config_hash(base_key(config, resolution))}"


def pretrained_base(config: DfrfConfig, resolution: int) -> tuple[dict[str, torch.Tensor], Path]:
    """The base model's network tensors (``net`` state dict) and its run directory; trained on the
    corpus when no finished run is cached."""
    from persona.experiments import run_lock

    if config.pretrain_steps <= 0 or config.pretrain_identities < 1 or config.pretrain_frames < config.num_references:
        raise PersonaInputError(f"dfrf config: pretrain_steps {config.pretrain_steps}, pretrain_identities "
                                f"{config.pretrain_identities}, pretrain_frames {config.pretrain_frames}; expected steps > 0, "
                                f">= 1 identity and >= num_references ({config.num_references}) frames each")
    path = base_dir(config, resolution)
    done = path / "done.json"
    with run_lock(path):
        if not done.is_file():
            tic = time.perf_counter()
            corpus = CorpusClips(config, resolution)
            render_seconds = time.perf_counter() - tic
            trainer = BaseDFRF(replace(config, iterations=config.pretrain_steps, pretrain_steps=0,
                                       checkpoint_every=max(config.pretrain_steps // 4, 1)))
            trainer.fit(corpus, RunDir(path))
            atomic_write_json(done, {"key": base_key(config, resolution), "corpus_seeds": corpus_seeds(config),
                                     "corpus_frames": len(corpus), "render_seconds": render_seconds,
                                     "train_seconds": trainer.train_seconds})
    latest = RunDir(path).latest_checkpoint()
    if latest is None:
        raise PersonaInputError(f"{path}: done.json but no checkpoint; delete the folder to retrain the DFRF base model")
    tensors, _ = load_tensors(latest[1])
    return unprefixed("net", tensors), path


def load_base_into(net: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy the base model's weights into a fresh DFRF network (the clip-specific buffers stay)."""
    shared = {k: v for k, v in state.items() if k not in CLIP_SPECIFIC}
    missing, unexpected = net.load_state_dict(shared, strict=False)
    if unexpected or set(missing) - set(CLIP_SPECIFIC):
        raise PersonaInputError(f"{where}: the DFRF base model does not fit this network (missing {sorted(set(missing) - set(CLIP_SPECIFIC))}, "
                                f"unexpected {sorted(unexpected)}); delete it to retrain")


def base_record(path: Path) -> dict[str, Any]:
    """The cached base model's done.json (corpus seeds, seconds)."""
    return json.loads((Path(path) / "done.json").read_text())
