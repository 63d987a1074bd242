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
    (["--profile", "huge"], "unknown profile 'huge' (expected smoke, default or paper)"),
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
