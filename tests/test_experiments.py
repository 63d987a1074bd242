"""Run caching of persona.experiments: what decides a cached run, and what invalidates it."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from persona import experiments as ex
from persona import methods, tables


@dataclass(frozen=True)
class FakeConfig:
    lr: float = 0.1
    generator: str | None = None
    profile: str = "smoke"


class FakeMethod:
    fits = 0

    def __init__(self, cfg):
        cfg = dict(cfg or {})
        self.config = FakeConfig(**cfg)

    def fit(self, train, run):
        FakeMethod.fits += 1
        run.begin({"method": "fake", "config": {}})  # as every trainer does first (docs/CONTRACTS.md)

    def load(self, run):
        pass


@pytest.fixture
def fake_method(monkeypatch, tmp_path):
    module = types.ModuleType("persona_fake_method")
    module.build_method = lambda cfg, **kw: FakeMethod(cfg)
    monkeypatch.setitem(sys.modules, "persona_fake_method", module)
    monkeypatch.setitem(methods.REGISTRY, "fake", "persona_fake_method:build_method")
    monkeypatch.setattr(ex, "runs_root", lambda profile: tmp_path / "runs" / profile)
    FakeMethod.fits = 0
    return FakeMethod


@dataclass
class FakeData:
    root: Path
    split: str = "train"
    max_seconds: float | None = None


def test_finished_runs_are_reused_and_force_recomputes(fake_method, tmp_path):
    data = FakeData(tmp_path / "id00" / "mono")
    first = ex.trained("fake", {"lr": 0.1}, data, "smoke")
    again = ex.trained("fake", {"lr": 0.1}, data, "smoke")
    assert fake_method.fits == 1 and first.run.root == again.run.root
    ex.trained("fake", {"lr": 0.2}, data, "smoke")                      # another config: another run
    ex.trained("fake", {"lr": 0.1}, FakeData(data.root, max_seconds=20.0), "smoke")  # another clip length
    assert fake_method.fits == 3
    ex.trained("fake", {"lr": 0.1}, data, "smoke", force=True)
    assert fake_method.fits == 4


def test_a_changed_generator_file_invalidates_the_cached_run(fake_method, tmp_path):
    weights = tmp_path / "g.safetensors"
    weights.write_bytes(b"first prior")
    data = FakeData(tmp_path / "id00" / "mono")
    a = ex.trained("fake", {"generator": str(weights)}, data, "smoke")
    weights.write_bytes(b"retrained prior, other bytes")
    b = ex.trained("fake", {"generator": str(weights)}, data, "smoke")
    assert fake_method.fits == 2 and a.run.root != b.run.root


def test_generator_digest_defaults_to_the_shipped_prior():
    from persona.eg3d.checkpoint import PRIOR_PATH

    assert ex.generator_digest(FakeConfig(generator=None)) == ex.file_digest(PRIOR_PATH)
    assert ex.generator_digest(FakeConfig(generator="random-tiny")) is None
    assert ex.generator_digest(object()) is None                       # methods without a generator


def test_two_processes_asking_for_one_run_train_it_once(fake_method, tmp_path):
    import threading
    import time

    slow_fit = FakeMethod.fit

    def fit(self, train, run):
        time.sleep(0.3)
        slow_fit(self, train, run)

    FakeMethod.fit = fit
    try:
        data = FakeData(tmp_path / "id00" / "mono")
        threads = [threading.Thread(target=ex.trained, args=("fake", {"lr": 0.3}, data, "smoke")) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        FakeMethod.fit = slow_fit
    assert fake_method.fits == 1


def test_compare_scores_every_row_on_the_smallest_subset(monkeypatch):
    calls = {}

    class Still(methods.Method):  # the protocol's defaults: no novel views, no-op hooks
        name = "still"

    def fake_evaluated(tr, test, novel, force=False, max_frames=None, following=False, split=None):
        import pandas as pd

        calls[tr.name] = max_frames
        return pd.DataFrame([{"method": tr.name, "view": "gt", "psnr": 1.0}])

    class Run:
        def __init__(self, name):
            self.name, self.method, self.train_seconds = name, Still(), 0.0

    monkeypatch.setattr(ex, "trained", lambda name, cfg, train, profile, label=None, force=False: Run(label))
    monkeypatch.setattr(ex, "evaluated", fake_evaluated)
    import persona.data.dataset as dataset

    monkeypatch.setattr(dataset, "FrameDataset", lambda *a, **k: object())
    rows = [tables.Row("A", "fake", {}), tables.Row("B", "fake", {}, max_test_frames=3)]
    tables.compare(rows, [Path("/nowhere/id00/mono")], "smoke", novel=False, max_test_frames=7)
    assert calls == {"A": 3, "B": 3}  # the same frames for every row (issue #19), not 7 for A and 3 for B


def test_notebooks_side_by_side_build_the_benchmark_one_at_a_time(monkeypatch, tmp_path):
    """Two notebooks started together must not both build (and swap in) the benchmark: the build
    runs under a lock, so the second caller waits and then finds the first one's build."""
    import threading
    import time

    import persona.data.world as world

    monkeypatch.setattr(ex, "data_root", lambda profile: tmp_path / "synthetic" / profile)
    state = {"inside": 0, "most": 0, "builds": 0}
    guard = threading.Lock()

    def build(root, profile, seed=0, force=False, identities=None):
        with guard:
            state["inside"] += 1
            state["most"] = max(state["most"], state["inside"])
        time.sleep(0.3)
        with guard:
            state["inside"] -= 1
            state["builds"] += 1
        return root

    monkeypatch.setattr(world, "build_benchmark", build)
    threads = [threading.Thread(target=ex.ensure_benchmark, args=("smoke",)) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert state == {"inside": 0, "most": 1, "builds": 2}
    assert not list((tmp_path / "synthetic").glob("*.excl-lock"))  # released
