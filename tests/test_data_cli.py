"""The data figure command and the renderer benchmark."""

import numpy as np

from persona.data import bench, cli
from persona.data import formats as F


def test_figure_writes_png_and_pdf(tmp_path):
    out = tmp_path / "figs" / "overview.png"
    assert cli.main_figure(["--out", str(out), "--identities", "2", "--resolution", "24"]) == 0
    assert out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    img = F.read_image(out)
    assert img.shape[0] > 100 and img.shape[1] > 300 and img.std() > 20  # a grid of faces, not blank


def test_renderer_benchmark_counts_frames():
    r = bench.measure(16, 4, seconds=0.05)
    assert r["frames"] >= 4 and r["fps_wall"] > 0 and r["fps_cpu"] > 0 and r["resolution"] == 16
    assert np.isfinite(r["fps_cpu"])


# --- `data build --out` never deletes what persona did not write (issue 18, item 1) ---------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from persona.__main__ import main as persona_main  # noqa: E402
from persona.data import world as S  # noqa: E402
from persona.errors import PersonaInputError  # noqa: E402

TINY = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=4, mono_test_frames=2,
                         audio_train_frames=4, audio_test_frames=2, val_frames=1, novel_every=2,
                         prior_images=2, render_batch=8)
REPO = Path(__file__).resolve().parent.parent


def test_build_refuses_a_folder_of_the_users_files_exactly_as_the_issue_ran_it(tmp_path):
    # mkdir mine; echo keep > mine/precious.txt; python -m persona data build --profile smoke --out mine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep\n")
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "persona", "data", "build", "--profile", "smoke", "--out", "mine"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "mine" in lines[0] and "not a persona benchmark" in lines[0]
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing built, nothing moved aside


def test_build_with_out_dot_in_a_foreign_folder_is_refused_before_building(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert persona_main(["data", "build", "--profile", "smoke", "--out", "."]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.parent.iterdir() if ".building-" in p.name or ".old-" in p.name]


def test_build_refuses_a_file_as_out(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PersonaInputError, match="is a file"):
        S.build_benchmark(tmp_path / "f", "smoke", config=TINY)
    assert (tmp_path / "f").read_text() == "x"


def test_build_into_an_empty_current_folder_and_rebuild_keeps_foreign_leftovers(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert S.build_benchmark(".", "smoke", config=TINY) == Path(".")
    assert S.is_complete(here) and (here / S.OWNER_MARKER).is_file() and S.is_owned(here)
    (here / "my_notes.txt").write_text("keep")  # the user adds a file to the benchmark folder
    (here / "id07").mkdir()  # a leftover of a bigger earlier build: persona's name, replaced
    S.build_benchmark(".", "smoke", config=TINY, seed=1)
    assert (here / "my_notes.txt").read_text() == "keep" and not (here / "id07").exists()
    assert S.is_complete(here) and '"seed": 1' in (here / "benchmark.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]  # no .old / .building left


def test_an_earlier_build_without_the_marker_still_counts_as_persona_s(tmp_path):
    root = tmp_path / "b"
    S.build_benchmark(root, "smoke", config=TINY)
    (root / S.OWNER_MARKER).unlink()  # builds made before the marker existed
    assert S.is_owned(root)
    S.build_benchmark(root, "smoke", config=TINY, seed=2)
    assert (root / S.OWNER_MARKER).is_file()
