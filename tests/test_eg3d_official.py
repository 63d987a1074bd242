"""Loading official EG3D pickles safely: the test writes a pickle in the release's persistence
format (each network = torch_utils.persistence._reconstruct_persistent_obj(meta) with module_src
that would create a file and raise if executed), loads it, and checks that nothing ran."""

from __future__ import annotations

import collections
import os
import pickle
import types
from dataclasses import replace

import pytest
import torch

from persona import cameras
from persona.eg3d import build_generator, load_official
from persona.eg3d.checkpoint import UnsafePickleError, read_official_pickle
from persona.eg3d.presets import PRESETS, rendering_kwargs
from persona.eg3d.release_format import modules_registered


def _evil_source(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('executed')\nraise RuntimeError('module_src was executed')\n"


@pytest.fixture
def fake_release(tmp_path):
    """Register stand-ins for the release's torch_utils.persistence and dnnlib.util so that pickle
    can name them; their reconstruct function WOULD exec module_src (as the official one does)."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what the official loader does: exec the source
        exec(meta["module_src"], {})

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    names = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
             "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    with modules_registered(names):
        yield types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict, marker=tmp_path / "executed.txt")


class _Persistent:
    """Pickles as the release does: _reconstruct_persistent_obj(dict(type, version, module_src, class_name, state))."""

    def __init__(self, reconstruct, class_name, state, module_src):
        self.reconstruct, self.meta = reconstruct, dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


def _as_release(module: torch.nn.Module, fake, src: str):
    """Our module tree -> the release's pickled form (persistent objects; torch.nn classes as themselves)."""
    children = collections.OrderedDict((n, _as_release(m, fake, src)) for n, m in module._modules.items())
    if type(module).__module__.startswith("torch.nn"):
        clone = type(module).__new__(type(module))
        clone.__dict__.update(module.__dict__)
        clone.__dict__["_modules"] = children
        return clone
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_modules": children,
        "_init_kwargs": fake.EasyDict(note="kept, never used"),
    }
    return _Persistent(fake.reconstruct, type(module).__name__, state, src)


def _write_release_pickle(path, G, fake, **extra_state):
    src = _evil_source(fake.marker)
    g_ema = _as_release(G, fake, src)
    g_ema.meta["state"]["rendering_kwargs"] = fake.EasyDict(rendering_kwargs(G.config), depth_resolution=20)
    g_ema.meta["state"]["neural_rendering_resolution"] = 24
    g_ema.meta["state"]["renderer"] = _Persistent(fake.reconstruct, "ImportanceRenderer", {"plane_axes": torch.eye(3)}, src)
    g_ema.meta["state"].update(extra_state)
    snapshot = {"G": g_ema, "D": _Persistent(fake.reconstruct, "DualDiscriminator", {"_modules": {}}, src), "G_ema": g_ema,
                "augment_pipe": None, "training_set_kwargs": fake.EasyDict(resolution=64, use_labels=True)}
    with open(path, "wb") as handle:
        pickle.dump(snapshot, handle)


def test_release_format_loads_without_executing_module_src(fake_release, tmp_path):
    torch.manual_seed(0)
    G = build_generator("tiny").eval()
    with torch.no_grad():
        G.backbone.mapping.w_avg.normal_()
    path = tmp_path / "snapshot.pkl"
    _write_release_pickle(path, G, fake_release)
    # the fixture's reconstruct function really would run the source (sanity check of the test itself)
    with pytest.raises(RuntimeError, match="module_src was executed"):
        fake_release.reconstruct({"module_src": _evil_source(tmp_path / "probe.txt")})
    assert (tmp_path / "probe.txt").is_file()

    H = load_official(path, preset="tiny")
    assert not fake_release.marker.exists()  # nothing in the pickle ran
    assert H.neural_rendering_resolution == 24 and H.config.depth_resolution == 20  # read from the pickle
    ours, theirs = G.state_dict(), H.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    c = torch.as_tensor(cameras.camera_label(10.0, 0.0), dtype=torch.float32)[None]
    z = torch.randn(1, G.z_dim)
    G20 = build_generator(replace(G.config, depth_resolution=20)).eval()  # the pickle's rendering options
    G20.load_state_dict(G.state_dict())
    torch.manual_seed(1)
    a = G20.synthesis(G20.mapping(z, c), c, neural_rendering_resolution=24)["image"]
    torch.manual_seed(1)
    b = H(z, c)["image"]
    assert torch.equal(a, b)
    net = read_official_pickle(path)
    assert net["class_name"] == "TriPlaneGenerator" and "backbone.mapping.fc0.weight" in net["state_dict"]


def test_shape_mismatch_gives_a_readable_diff(fake_release, tmp_path):
    path = tmp_path / "tiny.pkl"
    _write_release_pickle(path, build_generator("tiny"), fake_release)
    with pytest.raises(ValueError) as err:
        load_official(path, preset=replace(PRESETS["tiny"], plane_channels=8))
    text = str(err.value)
    assert "shape mismatch" in text and "decoder.net.0.weight" in text and "expected [32, 8], got [32, 16]" in text


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(fake_release, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"G_ema": _Evil(marker)}, handle)
    with pytest.raises(UnsafePickleError, match=r"refused global (posix|os|nt)\.system"):
        load_official(path, preset="tiny")
    assert not marker.exists()
    # hidden inside a persistent object's state: refused too
    path2 = tmp_path / "evil2.pkl"
    with open(path2, "wb") as handle:
        pickle.dump({"G_ema": _Persistent(fake_release.reconstruct, "TriPlaneGenerator", {"x": _Evil(marker)}, "pass")}, handle)
    with pytest.raises(UnsafePickleError, match="refused global"):
        load_official(path2, preset="tiny")
    assert not marker.exists()
    path3 = tmp_path / "evil3.pkl"
    with open(path3, "wb") as handle:
        pickle.dump({"G_ema": eval}, handle)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_official(path3, preset="tiny")


@pytest.mark.parametrize("field,value,words", [
    ("ray_start", float("nan"), "ray_start: nan is not finite"),
    ("ray_end", 1.0, "ray_end 1 <= ray_start 2.25"),  # inverted bounds
    ("depth_resolution", -4, "depth_resolution: -4 is out of range"),
    ("depth_resolution", 10**6, "depth_resolution: 1000000 is out of range"),
    ("depth_resolution_importance", 2.5, "depth_resolution_importance: expected an integer, got 2.5"),
    ("depth_resolution", "48", "depth_resolution: expected an integer, got '48'"),
    ("white_back", "false", "white_back: expected true or false, got 'false'"),
    ("box_warp", 0.0, "box_warp: 0 is out of range"),
    ("avg_camera_pivot", [0.0, "x", 0.2], "avg_camera_pivot[1]: expected a number"),
    ("avg_camera_pivot", 3, "avg_camera_pivot: expected 3 numbers"),
    ("superresolution_noise_mode", "loud", "sr_noise_mode: 'loud'; expected"),
    ("neural_rendering_resolution", -1, "neural_rendering_resolution: -1 is out of range"),
])
def test_bad_rendering_kwargs_are_refused_naming_file_and_field(fake_release, tmp_path, field, value, words):
    path = tmp_path / "tiny.pkl"
    G = build_generator("tiny")
    if field == "neural_rendering_resolution":
        _write_release_pickle(path, G, fake_release, neural_rendering_resolution=value)
    else:
        kwargs = fake_release.EasyDict(rendering_kwargs(G.config))
        kwargs[field] = value
        _write_release_pickle(path, G, fake_release, rendering_kwargs=kwargs)
    from persona.errors import PersonaInputError

    with pytest.raises(PersonaInputError) as err:
        load_official(path, preset="tiny")
    assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    assert not fake_release.marker.exists()
