"""The notebooks' parameters: one schema, checked wherever a value comes from.

A value may come from a profile's file (``notebooks/params/<profile>.yaml``), from the command
line (``python -m persona notebooks -p ks='[5,20]'``, ``./reproduce.sh -p ...``), from papermill
(``papermill ... -p ks '[5, 20]'``, which passes such a value as a string) or from an edit of a
notebook's parameters cell. :func:`check` parses strings where the schema wants another type
(YAML syntax: ``[5, 20]``, ``true``, ``null``) and refuses anything else with one line naming the
parameter, what was found and what was expected.

Inside a notebook, :func:`resolve` turns the parameters cell (where a name left at
:data:`FROM_PROFILE` takes the profile's value) into :class:`NotebookParams`: every value, the
ones that differ from the profile, and where the outputs go. A run whose parameters differ from
its profile is a *rerun*: it writes to ``tables/reruns/<name>/`` and ``figures/reruns/<name>/``
(the name spells the changed parameters) and never rewrites the README's results.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from persona.errors import PersonaInputError
from persona.profiles import PROFILE_NAMES

FROM_PROFILE = "from profile"  # a parameters-cell value meaning "take the profile's value"
TABLE_NOTEBOOKS = ("01_reconstruction_vs_pti", "02_3dmm_reenactment", "03_audio_reenactment", "04_ablations")  # Tables 1-4


@dataclass(frozen=True)
class Param:
    """One parameter: ``kind`` is int, float, bool, str or list[int] / list[str]; ``optional``
    allows None (YAML ``null``); ``notebooks`` lists the notebooks that take it (empty: all)."""

    kind: str
    help: str
    optional: bool = False
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    notebooks: tuple[str, ...] = ()


SCHEMA: dict[str, Param] = {
    "profile": Param("str", "sizes of data, models and steps; auto: the profile of the newest runs (see latest_profile)",
                     choices=PROFILE_NAMES + ("auto",)),
    "seed": Param("int", "seed of the synthetic benchmark (its identities and clips); the optimiser's: train_seeds", minimum=0),
    "identities": Param("int", "synthetic identities (videos) per table; more than the profile builds extends its benchmark (only the new ones are rendered)", minimum=1, maximum=100),
    "force": Param("bool", "true: recompute cached runs and data"),
    "eg3d_pkl": Param("str", "official EG3D pickle (paper profile)", optional=True),
    "nerface_dirs": Param("list[str]", "real videos in NerFACE layout (paper profile)"),
    "adnerf_dirs": Param("list[str]", "real videos in AD-NeRF layout (paper profile)"),
    "test_frames": Param("int", "score image metrics on this many evenly spaced test frames (null: all)",
                         optional=True, minimum=1),
    "pti_test_frames": Param("int", "PTI scores this many evenly spaced test frames (null: all)", optional=True,
                             minimum=1, notebooks=("01_reconstruction_vs_pti",)),
    "train_seconds": Param("float", "seconds of each audio video to train on (null: all)", optional=True,
                           minimum=0.1, notebooks=("03_audio_reenactment", "07_cross_identity")),
    "ks": Param("list[int]", "basis sizes of the k ablation", minimum=1, maximum=4096, notebooks=("04_ablations",)),
    "video": Param("str", "your talking-head video (null: a synthetic talking clip with known cameras)",
                   optional=True, notebooks=("06_your_video",)),
    "clip_frames": Param("int", "frames of the synthetic clip", minimum=10, maximum=10_000, notebooks=("06_your_video",)),
    "clip_resolution": Param("int", "pixels of the synthetic clip", minimum=64, maximum=1024, notebooks=("06_your_video",)),
    "size": Param("int", "crop size written by persona preprocess (the tiny prior renders 64 px, EG3D 512)",
                  minimum=16, maximum=4096, notebooks=("06_your_video",)),
    "iterations": Param("int", "training steps of ours on the video (null: the profile's)", optional=True, minimum=1,
                        notebooks=("06_your_video",)),
    "orbit_frames": Param("int", "frames of the orbit render", minimum=2, maximum=120, notebooks=("06_your_video",)),
    "budget_seconds": Param("float", "equal training budget in calibrated seconds (one thread): every method trains "
                            "round(budget_seconds / its seconds per step in persona/assets/budget_calibration.json) steps "
                            "(PTI per test frame); null: each method's own steps (Table 5: the budget Tables 2-3 ran with)",
                            optional=True, minimum=0.001, notebooks=(*TABLE_NOTEBOOKS, "05_explore_basis", "07_cross_identity")),
    "budget_curve": Param("bool", "true: also train every method on the first identity at 1/4 and 1/2 of its budget "
                          "and plot test PSNR against training seconds (<table>_budget_curve)", notebooks=TABLE_NOTEBOOKS),
    "train_seeds": Param("list[int]", "optimiser seeds: every method trains once per seed on each identity and an identity "
                         "scores the mean over its seeds (verdicts still bootstrap over identities); [0]: one run each",
                         minimum=0, maximum=2**31 - 1, notebooks=TABLE_NOTEBOOKS),
    "l2_only": Param("bool", "paper profile: true runs without the AlexNet weights (L2 only; the tables say so)"),
    "syncnet_model": Param("str", "official syncnet_v2.model: Table 3's lip-sync scored by SyncNet (null: the synthetic expert)",
                           optional=True, notebooks=("03_audio_reenactment",)),
}


def names_for(notebook: str | None) -> list[str]:
    """The parameters ``notebook`` takes (all of them for None)."""
    return [n for n, p in SCHEMA.items() if notebook is None or not p.notebooks or notebook in p.notebooks]


def _expected(param: Param) -> str:
    what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "list[int]": "a list of integers", "list[str]": "a list of strings"}[param.kind]
    if param.choices:
        what = "one of " + ", ".join(map(str, param.choices))
    each = "each " if param.kind.startswith("list[") else ""
    if param.minimum is not None and param.maximum is not None:
        what += f", {each}from {param.minimum:g} to {param.maximum:g}"
    elif param.minimum is not None:
        what += f", {each}at least {param.minimum:g}"
    if param.kind == "list[int]":
        what += " (e.g. [5, 20])"
    return what + (", or null" if param.optional else "")


def _scalar_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


def check(name: str, value: Any, source: str = "parameter", parse_strings: bool = True) -> Any:
    """``value`` of parameter ``name`` checked against :data:`SCHEMA` (a string parsed as YAML when
    the schema wants another type and ``parse_strings``); raises :class:`PersonaInputError`
    ``"<source>: <name>: expected ..., got ..."``."""
    if name not in SCHEMA:
        raise PersonaInputError(f"{source}: unknown parameter {name!r}; expected one of {', '.join(SCHEMA)}")
    param = SCHEMA[name]
    original = value
    if parse_strings and isinstance(value, str) and param.kind != "str":
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise PersonaInputError(f"{source}: {name}: expected {_expected(param)}, got {original!r} "
                                    "(not valid YAML)") from None
    bad = PersonaInputError(f"{source}: {name}: expected {_expected(param)}, got {original!r}")
    if value is None:
        if param.optional:
            return None
        raise bad
    if param.kind.startswith("list["):
        if not isinstance(value, (list, tuple)) or not all(_scalar_ok(param.kind[5:-1], v) for v in value):
            raise bad
        items = list(value)
    else:
        if not _scalar_ok(param.kind, value):
            raise bad
        items = [value]
    if param.kind == "float":
        value = float(value)
    for item in items:
        if param.choices and item not in param.choices:
            raise bad
        if param.minimum is not None and item < param.minimum or param.maximum is not None and item > param.maximum:
            raise bad
    if param.kind == "list[int]" and (not items or len(set(items)) != len(items)):
        raise PersonaInputError(f"{source}: {name}: expected a non-empty list without repeats, got {original!r}")
    return items if param.kind.startswith("list[") else value


def check_all(values: Mapping[str, Any], source: str, parse_strings: bool = False) -> dict[str, Any]:
    """Every entry of ``values`` checked (see :func:`check`)."""
    return {name: check(name, value, source, parse_strings) for name, value in values.items()}


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (the ``-p`` option of ``persona notebooks`` and ``reproduce.sh``) -> (name,
    checked value); VALUE is YAML: ``ks=[5,20]``, ``force=true``, ``test_frames=null``."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise PersonaInputError(f"-p {text!r}: expected NAME=VALUE, e.g. -p ks='[5,20]'")
    return name, check(name, raw, source=f"-p {name}")


def rerun_name(profile: str, overrides: Mapping[str, Any]) -> str | None:
    """Folder name of a rerun, spelling its changed parameters (``default-ks-5-20``), None when
    nothing differs from the profile. Long names end in a hash instead."""
    if not overrides:
        return None
    parts = []
    for name in sorted(overrides):
        value = overrides[name]
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{name}-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in text).strip("-"))
    name = f"{profile}-" + "_".join(parts)
    if len(name) > 80:
        digest = hashlib.sha256(repr(sorted(overrides.items())).encode()).hexdigest()[:10]
        name = name[:64].rstrip("-_") + "-" + digest
    return name


@dataclass
class NotebookParams:
    """The resolved parameters of one notebook run."""

    notebook: str
    values: dict[str, Any]
    profile_values: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def profile(self) -> str:
        return self.values["profile"]

    @property
    def rerun(self) -> str | None:
        """Folder name under ``tables/reruns/`` (None: the profile's own outputs)."""
        return rerun_name(self.profile, self.overrides)

    @property
    def updates_readme(self) -> bool:
        """Only the default profile, run with its own parameters, writes the README's results."""
        return self.profile == "default" and not self.overrides

    def summary(self) -> str:
        """Every parameter, changed ones with the profile's value beside them (for provenance)."""
        items = []
        for name, value in self.values.items():
            if name == "profile":
                continue
            changed = f" (profile: {self.profile_values.get(name)!r})" if name in self.overrides else ""
            items.append(f"{name}={value!r}{changed}")
        return ", ".join(items)


def latest_profile(root: Path | None = None, fallback: str = "smoke") -> str:
    """The profile whose runs (``runs/<profile>/*/done.json``) were finished last: what the user ran
    (``./reproduce.sh`` -> default); ``fallback`` when there are none."""
    from persona.notebooks import REPO_ROOT

    newest: dict[str, float] = {}
    for profile in PROFILE_NAMES:
        stamps = [p.stat().st_mtime for p in ((root or REPO_ROOT) / "runs" / profile).glob("*/done.json")]
        if stamps:
            newest[profile] = max(stamps)
    return max(newest, key=newest.get) if newest else fallback


def resolve(notebook: str, namespace: Mapping[str, Any], params_dir: Any = None) -> NotebookParams:
    """The parameters of ``notebook`` from its parameters cell (``namespace``: the notebook's
    globals after papermill's injection): names left at :data:`FROM_PROFILE` take the profile's
    value; the others are checked (strings parsed) and recorded as overrides where they differ."""
    from persona import notebooks as runner

    profile = check("profile", namespace.get("profile", "default"), source=f"{notebook}.ipynb parameters")
    if profile == "auto":
        profile = latest_profile()
    base = runner.load_params(profile, notebook, Path(params_dir) if params_dir else runner.PARAMS_DIR)
    values = dict(base)
    for name in names_for(notebook):
        given = namespace.get(name, FROM_PROFILE)
        if name == "profile" or isinstance(given, str) and given == FROM_PROFILE:
            continue
        values[name] = check(name, given, source=f"{notebook}.ipynb parameters")
    missing = [n for n in names_for(notebook) if n not in values]
    if missing:
        raise PersonaInputError(f"notebooks/params/{profile}.yaml: no value for {', '.join(missing)} "
                                f"(notebook {notebook}); add it to the file")
    overrides = {n: v for n, v in values.items() if n != "profile" and v != base.get(n)}
    return NotebookParams(notebook, values, base, overrides)
