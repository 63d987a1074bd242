"""persona.notebooks: ordering, parameters per profile and notebook, papermill execution, failures."""

import nbformat
import pytest
import yaml

from persona import notebooks as nbr


def write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, src in enumerate(cells):
        cell = nbformat.v4.new_code_cell(src)
        if i == 0:
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.write(nb, path)


def test_real_notebooks_are_ordered_and_parameterised():
    names = nbr.notebook_names()
    assert names == sorted(names) and names[0].startswith("00_")
    for name in names:
        nb = nbformat.read(nbr.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
        params = nbr.load_params("smoke", name)
        # every profile parameter is declared in the notebook's parameters cell (literals only)
        for key in params:
            assert f"{key} =" in tagged[0].source, f"{name}: parameters cell lacks {key!r}"


def test_profiles_have_the_same_keys():
    keys = [set(nbr.load_params(p)) for p in ("smoke", "default", "paper")]
    assert keys[0] == keys[1] == keys[2]


def test_resolve_by_number_and_unknown():
    first = nbr.notebook_names()[0]
    assert nbr.resolve(first[:2]) == [first]
    with pytest.raises(ValueError, match="unknown notebook '99'"):
        nbr.resolve("99")


def test_load_params_merges_notebook_overrides(tmp_path):
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump({"seed": 1, "notebooks": {"01_x": {"seed": 5}}}))
    assert nbr.load_params("smoke", "00_y", params_dir=tmp_path) == {"seed": 1, "profile": "smoke"}
    assert nbr.load_params("smoke", "01_x", params_dir=tmp_path)["seed"] == 5
    with pytest.raises(ValueError, match="unknown profile"):
        nbr.load_params("huge", params_dir=tmp_path)


def test_run_notebook_injects_profile_and_given_parameters_and_reports_failing_cell(tmp_path):
    # the notebook takes the profile's values itself (persona.params.resolve); the runner injects
    # the profile and the -p parameters the notebook takes
    write_notebook(tmp_path / "00_ok.ipynb", ["seed = 0\nks = 1\nprofile = 'x'",
                                              "assert seed == 7 and ks == 1 and profile == 'smoke'"])
    write_notebook(tmp_path / "01_bad.ipynb", ["seed = 0\nprofile = 'x'", "x = 1", "raise ValueError('boom')"])
    result = nbr.run_notebook("00_ok", "smoke", output_dir=tmp_path / "out", extra={"seed": 7, "ks": [5]},
                              notebook_dir=tmp_path, progress=False)
    assert result.output.is_file()
    with pytest.raises(nbr.NotebookFailed) as err:
        nbr.run_notebook("01_bad", "smoke", output_dir=tmp_path / "out", notebook_dir=tmp_path, progress=False)
    assert "ValueError" in str(err.value) and "boom" in str(err.value)
    assert (tmp_path / "out" / "01_bad.ipynb").is_file()  # kept for inspection


def test_schedule_runs_data_first_and_explorer_last():
    names = ["00_data", "01_a", "02_b", "03_c", "04_d", "05_explore"]
    assert nbr.schedule(names) == [["00_data"], ["01_a", "02_b", "03_c", "04_d"], ["05_explore"]]
    assert nbr.schedule(["03_c"]) == [["03_c"]]


def test_run_parallel_gives_each_notebook_one_thread_and_reports_failures(monkeypatch, capsys):
    import sys

    script = ("import os, sys; print('threads', os.environ['OMP_NUM_THREADS']); "
              "sys.exit(1 if sys.argv[1].startswith('02') else 0)")
    monkeypatch.setattr(nbr, "notebook_command", lambda name, profile: [sys.executable, "-c", script, name])
    done, errors = nbr.run_parallel(["01_ok", "02_bad", "03_ok"], "smoke", jobs=2)
    assert [r.name for r in done] == ["01_ok", "03_ok"]
    assert len(errors) == 1 and "02_bad failed" in errors[0] and "threads 1" in errors[0]
    out = capsys.readouterr().out
    assert "[01] threads 1" in out and "[03] threads 1" in out


def test_schedule_starts_the_profile_start_order_first(tmp_path):
    names = ["00_data", "01_a", "02_b", "03_c", "04_d", "05_explore"]
    assert nbr.schedule(names, ["03", "02"]) == [["00_data"], ["03_c", "02_b", "01_a", "04_d"], ["05_explore"]]
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump({"seed": 0, "start_order": ["03", 2]}))
    assert nbr.start_order("smoke", params_dir=tmp_path) == ["03", "02"]
    assert "start_order" not in nbr.load_params("smoke", params_dir=tmp_path)   # not a notebook parameter
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump({"start_order": "03"}))
    with pytest.raises(ValueError, match="start_order must be a list"):
        nbr.start_order("smoke", params_dir=tmp_path)
