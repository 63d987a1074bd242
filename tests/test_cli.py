"""reproduce.sh and `python -m persona`: help, bad input -> one line and exit 2."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args, env=None, cwd=ROOT, script=ROOT / "reproduce.sh"):
    return subprocess.run(["bash", str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_help():
    out = run_script("--help")
    assert out.returncode == 0
    assert "--profile" in out.stdout and "test" in out.stdout


@pytest.mark.parametrize("args, expected", [
    (["--profile", "huge"], "unknown profile 'huge' (expected smoke, default, paper or paper-dry)"),
    (["--profile", "smoke", "--dry-run"], "--dry-run is the paper profile's"),
    (["--only", "99"], "unknown notebook '99'"),
    (["--frobnicate"], "unknown argument '--frobnicate'"),
    (["--profile"], "--profile needs a value"),
    (["--jobs", "two"], "--jobs expects a whole number from 1, got 'two'"),
    (["--jobs"], "--jobs needs a number"),
])
def test_bad_input_exits_2_with_one_line(args, expected):
    out = run_script(*args)
    assert out.returncode == 2
    assert expected in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_missing_python_exits_2(tmp_path):
    # A copy of the project with no .venv, no active env, and a PATH without any python.
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "reproduce.sh", tmp_path / "reproduce.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sed", "cat", "dirname", "ls", "tr", "sha256sum", "cut", "date", "grep"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    out = subprocess.run([shutil.which("bash"), str(tmp_path / "reproduce.sh"), "--profile", "smoke"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2, out.stderr
    assert "no Python found" in out.stderr


def test_module_cli_unknown_command():
    out = subprocess.run([sys.executable, "-m", "persona", "frobnicate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "unknown command" in out.stderr


def test_module_cli_lists_commands():
    out = subprocess.run([sys.executable, "-m", "persona", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for verb in ("train", "render", "eval", "prior train", "bench generator", "notebooks"):
        assert verb in out.stdout


def test_user_errors_print_one_line_and_exit_2_unless_debug(monkeypatch, capsys):
    import persona.__main__ as cli
    from persona.errors import PersonaInputError

    def boom(argv):
        raise PersonaInputError("x.json: frames[0].img_id: expected an integer, got 'abc'")

    monkeypatch.setitem(cli.COMMANDS, "boom", ("persona.__main__", "_boom", "test"))
    monkeypatch.setattr(cli, "_boom", boom, raising=False)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "persona: error: x.json: frames[0].img_id: expected an integer, got 'abc'"
    with pytest.raises(PersonaInputError):
        cli.main(["boom", "--debug"])


@pytest.mark.parametrize("group, verbs", [("data", ["data build", "data figure"]), ("prior", ["prior train", "prior sample"]),
                                          ("syncnet", ["syncnet train"]), ("bench", ["bench generator", "bench renderer"])])
def test_verb_groups_list_their_verbs(group, verbs, capsys):
    import persona.__main__ as cli

    for argv in ([group], [group, "--help"]):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert all(v in out for v in verbs) and "unknown" not in out
    assert cli.main([group, "nope"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_train_help_shows_defaults_and_one_name_per_idea(capsys):
    from persona.verbs import main_render, main_train

    for main, present in ((main_train, ("--steps", "--batch-size", "--device", "--threads", "(default: ours)")),
                          (main_render, ("--batch-size", "--device", "--threads", "(default: 8)"))):
        with pytest.raises(SystemExit):
            main(["--help"])
        out = capsys.readouterr().out
        assert all(p in out for p in present), out
        assert "--iterations" not in out and "--batch " not in out  # old spellings work but are not advertised


def test_train_refuses_options_of_other_methods_in_one_line(capsys):
    import persona.__main__ as cli

    assert cli.main(["train", "--method", "nerface", "--modality", "3dmm", "--data", "x", "--out", "y"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--modality: not a setting of --method nerface" in err


def test_render_warns_when_alphas_do_not_apply(tmp_path, monkeypatch, capsys):
    from persona import verbs as train

    class NoBasis:
        def render(self, batch, camera):
            return batch["image"]

    monkeypatch.setattr(train, "load_run", lambda run, device=None: (NoBasis(), {"method": "nerface", "config": {}}))
    with pytest.raises(ValueError, match="no 'data' path"):  # stops right after the warning
        train.main_render([str(tmp_path), "--alphas"])
    assert "--alphas ignored: method 'nerface' has no basis coefficients" in capsys.readouterr().err


def test_outputs_are_found_from_the_checkout_being_run(tmp_path, monkeypatch):
    from persona.notebooks import find_root

    checkout = tmp_path / "clone"
    (checkout / "notebooks" / "params").mkdir(parents=True)
    (checkout / "sub").mkdir()
    monkeypatch.delenv("PERSONA_ROOT", raising=False)
    assert find_root(checkout / "sub") == checkout.resolve()
    monkeypatch.setenv("PERSONA_ROOT", str(tmp_path / "elsewhere"))
    assert find_root(checkout) == (tmp_path / "elsewhere").resolve()
    # and a process started in another checkout writes there, not where persona is imported from
    monkeypatch.delenv("PERSONA_ROOT")
    out = subprocess.run([sys.executable, "-c", "from persona.experiments import runs_root; print(runs_root('smoke'))"],
                         cwd=checkout / "sub", capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == str(checkout.resolve() / "runs" / "smoke"), out.stderr


def test_every_option_of_every_verb_has_help(monkeypatch):
    """Each verb's parser (captured as it parses) documents every option."""
    import argparse

    import persona.__main__ as cli

    class Captured(Exception):
        pass

    def capture(self, args=None, namespace=None):
        raise Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    for verb, (module, function, _) in cli.COMMANDS.items():
        import importlib

        with pytest.raises(Captured) as caught:
            getattr(importlib.import_module(module), function)([])
        parser = caught.value.args[0]
        assert isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter), verb
        for action in parser._actions:
            assert action.help, f"{verb}: {action.option_strings or action.dest} has no help text"
