"""Table 5 (beyond the paper): cross-identity reenactment - the re-rendered ground truth and the table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from persona import cross_identity as X
from persona import experiments as ex
from persona import metrics, params, tables
from persona.data import world as S
from persona.data.dataset import FrameDataset
from persona.diagnostics import identity_seed
from persona.errors import PersonaInputError
from persona.methods import Method

ROOT = Path(__file__).resolve().parent.parent
TINY = S.BenchmarkConfig(resolution=16, identities=2, mono_train_frames=4, mono_test_frames=5, audio_train_frames=4,
                         audio_test_frames=5, val_frames=1, novel_every=5, prior_images=2, render_batch=8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("xid") / "bench"
    S.build_benchmark(root, "smoke", seed=0, config=TINY)
    return root


def test_the_ground_truth_is_a_drives_by_b_rendered_by_the_world_and_differs_from_a_own_frames(bench):
    a, b = bench / "id00" / "mono", bench / "id01" / "mono"
    clip = X.driving_clip(a, b)
    own, driver = FrameDataset(a, "test"), FrameDataset(b, "test")
    assert len(clip) == len(own) == 5 and clip.label == "id00 ← id01"
    assert torch.equal(clip.conditions["expression"], driver.expressions) and torch.equal(clip.conditions["camera"], own.cameras)
    assert clip.indices == own.indices and clip.conditions["index"].tolist() == driver.indices
    frames = torch.stack([own[i]["image"] for i in range(len(own))])
    assert ((clip.truth - frames).abs().amax((1, 2, 3)) > 0.1).all()  # B's expressions: none is A's own test frame
    # the world's own render of identity A with B's expressions at A's cameras (8-bit: within one level)
    world = S.render_batch([S.sample_identity(identity_seed(a))] * len(own), driver.expressions, own.cameras, 16)  # [-1,1]
    assert (clip.truth - world).abs().max() <= 1.01 / 127.5
    # B re-rendered at A's cameras drives the 2-D method: B's face, not A's
    assert (clip.conditions["image"] - clip.truth).abs().mean() > 0.05
    # the same pipeline with A driving itself gives back the frames the benchmark wrote (up to the precision of the
    # expressions and cameras stored in transforms_test.json: a few edge pixels)
    assert (metrics.psnr(X._clip(a, a, None).truth, frames) > 40).all()


def test_the_driver_is_the_next_identity_cyclic_and_one_identity_is_refused(bench, tmp_path):
    assert X.driver_of(bench / "id00" / "audio") == bench / "id01" / "audio"
    assert X.driver_of(bench / "id01" / "mono") == bench / "id00" / "mono"
    (tmp_path / "id00" / "mono").mkdir(parents=True)
    with pytest.raises(PersonaInputError, match="needs >= 2"):
        X.driver_of(tmp_path / "id00" / "mono")
    # a table cycles over its own identities, whatever else the benchmark folder holds (an earlier, larger profile's)
    for name in ("id00", "id01", "id02"):
        for kind in ("mono", "audio"):
            (tmp_path / "big" / name / kind).mkdir(parents=True)
    big = tmp_path / "big"
    table = [big / "id00" / "mono", big / "id01" / "mono"]
    assert X.driver_of(big / "id01" / "mono") == big / "id02" / "mono"  # the folder's next
    assert X.driver_of(big / "id01" / "mono", table) == big / "id00" / "mono"  # the table's next, cyclic
    assert X.driver_of(big / "id01" / "audio", table) == big / "id00" / "audio"  # the same identity, the audio kind
    with pytest.raises(PersonaInputError, match=r"id02/mono: not one of the table's identities \(id00, id01\)"):
        X.driver_of(big / "id02" / "mono", table)
    # a one-identity table (the smoke profile's) is driven by the benchmark's next identity
    assert X.driver_of(big / "id00" / "mono", [big / "id00" / "mono"]) == big / "id01" / "mono"


class Echo(Method):
    """Shows its driving frame (B's face): a 2-D method that animates nothing of A."""

    name, supports_novel_views = "echo", False

    def render(self, conditions, camera):
        return torch.as_tensor(conditions["image"]).float().clone()


class WorldOracle(Method):
    """Renders identity ``seed`` with the driving expressions at the asked cameras: a perfect cross-identity avatar."""

    name, supports_novel_views = "oracle", True

    def __init__(self, seed: int):
        self.seed = seed

    def render(self, conditions, camera):
        expression = torch.as_tensor(conditions["expression"]).float()
        return S.render_batch([S.sample_identity(self.seed)] * len(expression), expression, torch.as_tensor(camera).float(), 16)


def test_smoke_table5_has_every_row_and_column_from_cached_runs(bench, tmp_path, monkeypatch):
    P = params.resolve("07_cross_identity", {"profile": "smoke", "identities": 2})
    monkeypatch.setattr(ex, "outputs", lambda profile, rerun=None: (tmp_path / "tables", tmp_path / "figures"))
    monkeypatch.setattr(tables, "table_videos", lambda *a, **k: [bench / "id00" / "mono", bench / "id01" / "mono"])
    monkeypatch.setattr(ex, "runs_root", lambda profile: tmp_path / "runs")
    asked = []

    def trained(name, cfg, train, profile, label=None, force=False):  # the run cache: Tables 2 and 3's runs
        asked.append((name, cfg, train.root.name, force))
        (tmp_path / "runs" / label).mkdir(parents=True, exist_ok=True)
        method = Echo() if name == "fomm" else WorldOracle(identity_seed(train.root))
        return ex.TrainedRun(label, method, ex.RunDir(tmp_path / "runs" / label), 1.0, 1)

    monkeypatch.setattr(ex, "trained", trained)
    result = tables.run_table(tables.T5, P)
    p = P.values
    methods = [*tables.T2.method_labels(p), *tables.T3.method_labels(p)]
    assert list(result.table.index) == [*methods, tables.STATIC_LABEL]
    assert list(result.table.columns) == ["PSNR ↑", "SSIM ↑", "LPIPS ↓", "mouth PSNR ↑", "mouth SSIM ↑", "following ↑", "Sync-C ↑"]
    # the same rows and configs as Tables 2 and 3 (their runs), audio rows on the audio video; never forced
    rows = {r.label: r for r in [*tables.T2.rows(p), *tables.T3.rows(p)]}
    assert [(n, c) for n, c, *_ in asked] == [(rows[m].method, {**rows[m].cfg, "profile": "smoke"}) for m in methods] * 2
    assert [kind for _, _, kind, _ in asked] == (["mono"] * 4 + ["audio"] * 3) * 2
    assert not any(force for *_, force in asked)
    pairs = set(result.per_frame["identity"])
    assert pairs == {"id00 ← id01", "id01 ← id00"}
    assert (result.per_frame["view"] == "gt").all() and not any("novel" in c for c in result.table.columns)
    # a perfect avatar of A scores as the truth on every pair, image and following; B's face (FOMM here echoes its
    # driving frame) and A's still frame do not
    by = {m: result.per_frame[result.per_frame["method"] == m] for m in set(result.per_frame["method"])}
    for m in methods[1:]:
        assert (by[m]["psnr"] > 45).all() and (by[m]["psnr_mouth"] > 40).all() and (by[m]["following"] > 0.99).all(), m
    assert (by["FOMM"]["psnr"] < 30).all() and np.isfinite(by["FOMM"]["psnr"]).all()
    assert (by[tables.STATIC_LABEL]["following"] == 0).all() and (by[tables.STATIC_LABEL]["psnr"] < 40).all()
    assert result.per_frame["sync"].isna().all() and any(n.startswith("Lip-sync columns n/a") for n in result.notes)  # 5 frames
    assert (tmp_path / "tables" / "table5_cross_identity.md").is_file() and [p.name for p in result.pngs] == ["fig_cross_identity.png"]
    assert len(result.claims) and "identities" in result.claims.columns
    # a second run scores nothing again: every (run, pair) is cached
    monkeypatch.setattr(X, "score_method", lambda *a, **k: (_ for _ in ()).throw(AssertionError("scored again")))
    tables.run_table(dataclasses.replace(tables.T5, figures=()), P)


def test_table5_is_skipped_with_a_reason_on_real_videos():
    p = {"profile": "paper"}
    assert "no ground truth of one person driven by another" in tables.skip_reason(tables.T5, p)
    assert tables.skip_reason(tables.T2, p) is None and tables.skip_reason(tables.T5, {"profile": "smoke"}) is None
    P = params.resolve("07_cross_identity", {"profile": "paper"})
    with pytest.raises(PersonaInputError, match="skipped on the paper profile"):
        tables.run_table(tables.T5, P)


def test_notebook_07_is_a_report_of_table5():
    nb = nbformat.read(ROOT / "notebooks" / "07_cross_identity.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "tables.run_table(tables.T5, P)" in code and "tables.skip_reason(tables.T5" in code
    assert "report." not in code and "ex." not in code
