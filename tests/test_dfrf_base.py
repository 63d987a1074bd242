"""DFRF as designed: a base model pre-trained on other identities, cached, then fine-tuned on the clip."""

from __future__ import annotations

import torch

from persona.baselines import dfrf, dfrf_base
from persona.data import world as S
from persona.runs import RunDir

from test_baselines_nerf import RES, StandinFrames  # noqa: E402  (tests/ is on sys.path under pytest)

# a 16-px base trained for 3 steps on 2 identities x 4 frames
TINY_BASE = dict(profile="smoke", rays_per_step=64, checkpoint_every=1000, log_every=10, pretrain_steps=3,
                 pretrain_identities=2, pretrain_frames=4)


def test_dfrf_starts_from_its_base_model(tmp_path, monkeypatch):
    cfg = dict(TINY_BASE, iterations=1, base_dir=str(tmp_path / "bases"))
    starts = []
    original = dfrf.DFRF._init_from_data

    def snapshot(self, frames):
        original(self, frames)
        if type(self) is dfrf.DFRF:  # the fine-tune, not the base's own training
            starts.append({k: v.clone() for k, v in self.net.state_dict().items()})

    monkeypatch.setattr(dfrf.DFRF, "_init_from_data", snapshot)
    method = dfrf.build_method(cfg)
    method.fit(StandinFrames(6), RunDir(tmp_path / "run"))
    base, path = dfrf_base.pretrained_base(method.config, RES)
    assert path == method.base_path and path.parent == tmp_path / "bases"
    start = starts[0]
    shared = [k for k in base if k not in dfrf_base.CLIP_SPECIFIC]
    assert len(shared) > 10
    for key in shared:  # the fine-tune's initial weights are the cached base model's
        assert torch.equal(start[key], base[key]), key
    assert not torch.equal(start["ref_images"], base["ref_images"])  # references come from the clip
    # the base was trained (not a fresh initialisation) on identities that exclude every benchmark identity
    fresh = dfrf.build_method(dict(cfg, pretrain_steps=0))
    fresh.resolution = RES
    assert any(not torch.equal(v, base[k]) for k, v in fresh._build(6, RES).state_dict().items() if k in shared)
    record = dfrf_base.base_record(path)
    seeds = set(record["corpus_seeds"])
    assert len(seeds) == 2 and record["corpus_frames"] == 8
    for profile in ("smoke", "default", "paper"):
        n = S.BENCHMARK_PROFILES[profile].identities
        assert seeds.isdisjoint(S.benchmark_identity_seeds(n)), profile
    assert all(seed >= S.PRIOR_POOL_OFFSET + S.PRIOR_POOL_SIZE for seed in seeds)  # nor the prior's pool


def test_dfrf_base_is_cached_and_keyed_by_what_shapes_it(tmp_path, monkeypatch):
    cfg = dict(TINY_BASE, base_dir=str(tmp_path))
    config = dfrf.build_method(cfg).config
    _, path = dfrf_base.pretrained_base(config, RES)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached base model was trained again")

    monkeypatch.setattr(dfrf_base.BaseDFRF, "fit", no_training)
    # the fine-tune's own budget does not change the base; its network sizes do
    assert dfrf_base.pretrained_base(dfrf.build_method(dict(cfg, iterations=77)).config, RES)[1] == path
    assert dfrf_base.base_dir(dfrf.build_method(dict(cfg, width=48)).config, RES) != path
    assert dfrf_base.base_dir(dfrf.build_method(dict(cfg, pretrain_steps=4)).config, RES) != path
    assert (path / "config.json").is_file() and list(RunDir(path).checkpoints.glob("*.safetensors"))
