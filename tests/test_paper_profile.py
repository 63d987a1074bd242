"""The paper profile's refusals and options: LPIPS is required unless the user asks for L2 only
(and the tables then say so); Table 3's lip-sync comes from the official SyncNet when its
``syncnet_v2.model`` is given, labelled as such."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from persona import experiments as ex
from persona import report, syncnet, tables
from persona.errors import PersonaFileError
from persona.methods import Method
from persona.metrics import ALEXNET_FILE, L2_ONLY_NOTE


@pytest.fixture
def no_alexnet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty cache: no AlexNet weights
    return tmp_path / "torch-home" / "hub" / "checkpoints" / ALEXNET_FILE


def test_paper_profile_refuses_without_lpips_unless_l2_only(no_alexnet, tmp_path):
    pkl = tmp_path / "G.pkl"
    pkl.write_bytes(b"")
    with pytest.raises(PersonaFileError) as err:
        tables.require_paper_inputs("paper", str(pkl), [str(tmp_path)], "nerface_dirs")
    message = str(err.value)
    assert str(no_alexnet) in message and ALEXNET_FILE in message and "l2_only: true" in message and "\n" not in message
    tables.require_paper_inputs("paper", str(pkl), [str(tmp_path)], "nerface_dirs", l2_only=True)  # explicit: accepted
    tables.require_paper_inputs("smoke", None, [], "nerface_dirs")  # other profiles: LPIPS optional as before
    assert tables.loss_cfg(True) == {"lambda_lpips": 0.0} and tables.loss_cfg(False) == {}
    assert L2_ONLY_NOTE in tables.table_notes(l2_only=True) and L2_ONLY_NOTE not in tables.table_notes()


def test_l2_only_does_nothing_when_lpips_is_there(monkeypatch):
    monkeypatch.setattr("persona.metrics.lpips_available", lambda: True)
    assert tables.loss_cfg(True) == {}
    assert L2_ONLY_NOTE not in tables.table_notes(l2_only=True)


def test_ours_at_the_paper_profile_refuses_to_train_without_lpips(no_alexnet, tmp_path):
    from persona.data.dataset import FrameDataset
    from persona.data.real_layouts import write_real_layouts
    from persona.runs import RunDir
    from persona.ours.method import build_method

    nerface, _ = write_real_layouts(tmp_path / "data", 1, train_frames=1, test_frames=1, nerface_resolution=16, adnerf_resolution=16)
    train = FrameDataset(nerface[0], "train")
    method = build_method({"profile": "paper", "modality": "3dmm", "device": "cpu", "iterations": 1, "frozen_iterations": 1})
    with pytest.raises(PersonaFileError, match=ALEXNET_FILE):
        method.fit(train, RunDir(tmp_path / "run"))
    # asked for explicitly, L2 only trains and says so in the run's config
    method = build_method({"profile": "paper", "modality": "3dmm", "device": "cpu", "iterations": 1, "frozen_iterations": 1,
                           "lambda_lpips": 0.0, "checkpoint_every": 10, "sample_every": 10})
    run = RunDir(tmp_path / "run-l2")
    method.fit(train, run)
    assert run.read_config()["config"]["loss_used"].startswith("L2 only (lambda_lpips = 0)")


def _random_official_syncnet(path):
    torch.manual_seed(0)
    net = syncnet.SyncNet(syncnet.NET_PROFILES["paper"])
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path


class _GroundTruthMethod(Method):
    """Renders each test frame as the dataset has it (a stand-in for a trained method)."""

    name = "truth"
    supports_novel_views = False

    def __init__(self, dataset):
        self.dataset = dataset

    def render(self, conditions, camera):
        return torch.stack([self.dataset[int(i) - self.dataset[0]["index"]]["image"] for i in conditions["index"]])


def test_official_syncnet_scores_table3_and_is_labelled(tmp_path, monkeypatch):
    from persona.data.dataset import FrameDataset
    from persona.data.real_layouts import write_real_layouts
    from persona.runs import RunDir

    model = _random_official_syncnet(tmp_path / "syncnet_v2.model")
    _, adnerf = write_real_layouts(tmp_path / "data", 1, train_frames=2, test_frames=syncnet.MIN_CLIP_FRAMES, nerface_resolution=16,
                                   adnerf_resolution=32)  # the shortest clip the offset search scores
    test = FrameDataset(adnerf[0], "test")
    run = ex.TrainedRun("Ours Audio", _GroundTruthMethod(test), RunDir(tmp_path / "run"), 1.0)

    rows = ex.synced(run, test, syncnet_model=str(model))
    assert list(rows["scorer"]) == ["SyncNet", "SyncNet"] and rows["lse_d"].notna().all()
    # the rendered video is the ground truth here: same scores
    assert rows.iloc[0]["lse_c"] == pytest.approx(rows.iloc[1]["lse_c"], abs=1e-4)
    assert len(list(run.run.root.glob("sync-*.csv"))) == 1 and ex.synced(run, test, syncnet_model=str(model)).equals(rows)

    # compare() puts them in the SyncNet columns, the table labels them, the note names the file
    monkeypatch.setattr(ex, "trained", lambda *a, **k: run)
    monkeypatch.setattr(ex, "evaluated", lambda *a, **k: pd.DataFrame([{"view": "gt", "psnr": 30.0}]))
    per_frame, _, _ = tables.compare([tables.Row("Ours Audio", "ours", {})], [adnerf[0]], "smoke", novel=False, sync=True,
                                 syncnet_model=str(model))
    assert {"syncnet_c", "syncnet_d"} <= set(per_frame.columns) and "sync" not in per_frame.columns
    metrics = ["psnr", *tables.sync_metrics(str(model))]
    table = report.results_table(per_frame, metrics, ["Ground Truth", "Ours Audio"], paper_key="table3_audio")
    assert {"Sync-C (SyncNet) ↑", "LSE-D (SyncNet) ↓", "Sync-C (SyncNet) ↑ (paper)"} <= set(table.columns)
    assert table.loc["Ground Truth", "Sync-C (SyncNet) ↑ (paper)"] == "7.653"
    assert "official SyncNet (syncnet_v2.model)" in tables.sync_note(str(model)) and "synthetic" in tables.sync_note()
    assert tables.sync_metrics(None) == ["sync"]

    with pytest.raises(PersonaFileError, match="syncnet_model: .*missing.model: file not found"):
        tables.compare([tables.Row("Ours Audio", "ours", {})], [adnerf[0]], "smoke", sync=True, syncnet_model=str(tmp_path / "missing.model"))
