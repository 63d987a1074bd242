"""persona.params: the notebooks' parameter schema, reruns with changed parameters, both rerun forms
(papermill -p and ``persona notebooks`` / ``reproduce.sh`` -p NAME=VALUE)."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from persona import notebooks as nbr
from persona import params
from persona.errors import PersonaInputError

ROOT = Path(__file__).resolve().parent.parent
UNSET = {name: params.FROM_PROFILE for name in params.SCHEMA if name != "profile"}


def test_papermill_strings_are_parsed_and_bad_values_refused_in_one_line():
    assert params.check("ks", "[5, 20]") == [5, 20]          # papermill -p ks '[5, 20]' passes a string
    assert params.check("force", "true") is True and params.check("test_frames", "null") is None
    assert params.check("train_seconds", 20) == 20.0
    for name, value, expected in [("ks", "[5, 'a']", "ks: expected a list of integers"),
                                  ("ks", "[5,", "not valid YAML"), ("ks", "[5, 5]", "without repeats"),
                                  ("force", 1, "force: expected true or false, got 1"),
                                  ("force", "maybe", "force: expected true or false"),
                                  ("identities", 0, "identities: expected an integer, from 1 to 100"),
                                  ("profile", "huge", "expected one of smoke, default, paper"),
                                  ("seed", None, "seed: expected an integer"), ("kz", 1, "unknown parameter 'kz'")]:
        with pytest.raises(PersonaInputError, match=expected) as err:
            params.check(name, value, source="here")
        assert "\n" not in str(err.value) and str(err.value).startswith("here: ")


def test_profile_file_is_checked_against_the_schema(tmp_path):
    path = tmp_path / "smoke.yaml"
    path.write_text("seed: 0\nforce: 'yes'\n")  # a string is not a bool in the file
    with pytest.raises(PersonaInputError, match=r"smoke.yaml: force: expected true or false, got 'yes'"):
        nbr.load_params("smoke", params_dir=tmp_path)
    path.write_text("seed: 0\nnotebooks:\n  04_ablations: {ks: 5}\n")
    with pytest.raises(PersonaInputError, match=r"notebooks.04_ablations: ks: expected a list"):
        nbr.load_params("smoke", "04_ablations", params_dir=tmp_path)
    path.write_text("seed: [0\n")
    with pytest.raises(PersonaInputError, match=r"smoke.yaml: not valid YAML at line 2"):
        nbr.load_params("smoke", params_dir=tmp_path)


@pytest.mark.parametrize("profile", ["smoke", "default", "paper"])
def test_the_profile_gives_every_value_whatever_runs_the_notebook(profile):
    for name in nbr.notebook_names():
        nb = nbformat.read(nbr.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        namespace: dict = {}
        exec(cell.source, namespace)  # the stored cell, then what `papermill -p profile <profile>` injects
        namespace["profile"] = profile
        resolved = params.resolve(name, namespace)
        assert resolved.values == nbr.load_params(profile, name) and resolved.overrides == {}
        assert resolved.rerun is None and resolved.updates_readme == (profile == "default")
        assert set(resolved.values) == set(params.names_for(name))


def test_a_changed_parameter_is_a_rerun_with_its_own_folder_and_full_provenance():
    resolved = params.resolve("04_ablations", {"profile": "default", **UNSET, "ks": "[5, 20]"})
    assert resolved.overrides == {"ks": [5, 20]} and resolved.rerun == "default-ks-5-20"
    assert not resolved.updates_readme  # never rewrites the README's results
    summary = resolved.summary()
    for name in params.names_for("04_ablations"):
        if name != "profile":
            assert f"{name}=" in summary
    assert "ks=[5, 20] (profile: [5, 10, 20, 50])" in summary
    # a value equal to the profile's is no rerun
    assert params.resolve("04_ablations", {"profile": "default", "ks": [5, 10, 20, 50]}).rerun is None
    long = params.rerun_name("paper", {"eg3d_pkl": "/models/" + "x" * 200 + ".pkl"})
    assert len(long) <= 80 and long.startswith("paper-eg3d_pkl-")


def test_cli_parameters_are_checked_and_belong_to_a_notebook_that_runs():
    names = nbr.resolve("04")
    assert nbr.parameter_overrides(["ks=[5,20]", "force=true"], names) == {"ks": [5, 20], "force": True}
    with pytest.raises(PersonaInputError, match="-p ks: none of the notebooks to run"):
        nbr.parameter_overrides(["ks=[5,20]"], nbr.resolve("03"))
    with pytest.raises(PersonaInputError, match="expected NAME=VALUE"):
        nbr.parameter_overrides(["ks"], names)
    with pytest.raises(PersonaInputError, match="use --profile"):
        nbr.parameter_overrides(["profile=paper"], names)


def test_persona_notebooks_passes_parameters_and_refuses_bad_ones(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(nbr, "run_notebook", lambda name, profile, extra=None, progress=True:
                        calls.append((name, profile, extra)) or nbr.NotebookResult(name, 0.0, Path("x")))
    assert nbr.main(["--profile", "smoke", "--only", "04", "-p", "ks=[5,20]"]) == 0
    assert calls == [("04_ablations", "smoke", {"ks": [5, 20]})]
    assert nbr.main(["--profile", "smoke", "--only", "04", "-p", "ks=[5,'a']"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ks: expected a list of integers" in err
    # side by side, each notebook's own process gets the parameters it takes
    command = nbr.notebook_command("04_ablations", "smoke", {"ks": [5, 20], "test_frames": None})
    assert command[-4:] == ["-p", "ks=[5, 20]", "-p", "test_frames=null"]
    assert "-p" not in nbr.notebook_command("03_audio_reenactment", "smoke", {"ks": [5, 20]})
    assert nbr.executed_dir("smoke", "04_ablations", {"ks": [5, 20]}).parts[-2:] == ("reruns", "smoke-ks-5-20")


def test_reproduce_sh_forwards_parameters(tmp_path):
    """./reproduce.sh --only 04 -p ks='[5,20]' runs `python -m persona notebooks ... -p ks=[5,20]`."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/bash\nif [ "$1" = -c ]; then echo {venv}; elif [ "$1 $2" = "-m pip" ]; then exit 0; '
                    f'else echo "ARGS $*"; fi\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    out = subprocess.run(["bash", str(ROOT / "reproduce.sh"), "--profile", "smoke", "--only", "04", "-p", "ks=[5,20]"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "ARGS -m persona notebooks --profile smoke --only 04 -p ks=[5,20]" in out.stdout
    bad = subprocess.run(["bash", str(ROOT / "reproduce.sh"), "-p", "ks"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=env)
    assert bad.returncode == 2 and "expects NAME=VALUE" in bad.stderr


def test_papermill_form_resolves_inside_the_notebook(tmp_path):
    """papermill nb.ipynb out.ipynb -p profile smoke -p ks '[5, 20]': the string is parsed, the other
    values come from the profile, and the run is named by its changed parameter."""
    papermill = pytest.importorskip("papermill")
    pdir = tmp_path / "params"
    pdir.mkdir()
    shutil.copy(nbr.PARAMS_DIR / "smoke.yaml", pdir / "smoke.yaml")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell('profile = "default"\nks = "from profile"\nidentities = "from profile"')
    cell.metadata["tags"] = ["parameters"]
    nb.cells += [cell, nbformat.v4.new_code_cell(
        "from persona import params\n"
        f"P = params.resolve('04_ablations', globals(), params_dir={str(pdir)!r})\n"
        "globals().update(P.values)\n"
        "assert ks == [5, 20] and identities == 1 and P.rerun == 'smoke-ks-5-20' and not P.updates_readme, P")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               parameters={"profile": "smoke", "ks": "[5, 20]"}, progress_bar=False, cwd=str(ROOT))
    bad = {"profile": "smoke", "ks": "[5, 'a']"}
    with pytest.raises(papermill.PapermillExecutionError, match="ks: expected a list of integers"):
        papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "bad.ipynb"), kernel_name="python3",
                                   parameters=bad, progress_bar=False, cwd=str(ROOT))


def test_auto_profile_is_the_one_the_user_ran(tmp_path, monkeypatch):
    for profile, mtime in (("smoke", 1000), ("default", 2000)):
        done = tmp_path / "runs" / profile / "ours-id00-x" / "done.json"
        done.parent.mkdir(parents=True)
        done.write_text("{}")
        os.utime(done, (mtime, mtime))
    assert params.latest_profile(tmp_path) == "default"
    assert params.latest_profile(tmp_path / "empty") == "smoke"
    monkeypatch.setattr(nbr, "REPO_ROOT", tmp_path)
    assert params.resolve("05_explore_basis", {"profile": "auto", **UNSET}).profile == "default"


def test_default_profile_scores_five_identities_at_one_equal_budget():
    """Issue #19: the default profile's verdicts pair >= 5 identities, and the notebooks whose runs
    are shared (02, 03, their explorer 05 and cross-identity 07) train at one equal budget."""
    assert nbr.load_params("default")["identities"] >= 5
    budgets = {name: nbr.load_params("default", name)["budget_seconds"]
               for name in ("02_3dmm_reenactment", "03_audio_reenactment", "05_explore_basis", "07_cross_identity")}
    assert len(set(budgets.values())) == 1 and None not in budgets.values(), budgets
