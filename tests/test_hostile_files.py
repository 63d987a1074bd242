"""Adversarial files (issue 18, items 3, 5, 6): each crafted input must be refused with ONE line
that names the file (a :class:`persona.errors.PersonaError`, exit 2 on the command line) - never a
hang, a huge allocation, a bare RecursionError or a traceback. Pickles here are written byte by
byte with pickle opcodes and only ever read by persona's restricted unpickler."""

from __future__ import annotations

import io
import struct
import time

import pytest
import torch

from persona.errors import PersonaError
from persona.eg3d.checkpoint import BadPickleError, UnsafePickleError, load_official, read_official_pickle

# ---------------------------------------------------------------------------------------------- pickle opcodes
PROTO = b"\x80\x02"
MODULE = b"ctorch.nn.modules.module\nModule\n"  # becomes an inert stand-in


def _u(text: str) -> bytes:  # BINUNICODE
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _put(i: int) -> bytes:  # LONG_BINPUT
    return b"r" + struct.pack("<I", i)


def _get(i: int) -> bytes:  # LONG_BINGET
    return b"j" + struct.pack("<I", i)


def _module(children: dict[str, int], extra: bytes = b"") -> bytes:
    """A module (memo 0 holds the class) with state {'_modules': {name: memo[i]}} + extra SETITEMs."""
    kids = b"}(" + b"".join(_u(k) + _get(i) for k, i in children.items()) + b"u"
    return _get(0) + b")\x81" + b"}" + _u("_modules") + kids + b"s" + extra + b"b"


def _snapshot(top: int) -> bytes:
    return b"}" + _u("G_ema") + _get(top) + b"s."


def dag_pickle(depth: int) -> bytes:
    """Module i has children a and b, both module i-1: a few KB, 2**depth paths from the top."""
    ops = PROTO + MODULE + _put(0) + _module({}) + _put(1) + b"0"
    for i in range(2, depth + 2):
        ops += _module({"a": i - 1, "b": i - 1}) + _put(i) + b"0"
    return ops + _snapshot(depth + 1)


def cycle_pickle() -> bytes:
    """A module whose child is itself."""
    ops = PROTO + MODULE + _put(0) + _get(0) + b")\x81" + _put(1)
    ops += b"}" + _u("_modules") + b"}" + _u("self") + _get(1) + b"s" + b"s" + b"b" + b"0"
    return ops + _snapshot(1)


def chain_pickle(depth: int) -> bytes:
    """Modules nested ``depth`` deep, no sharing."""
    ops = PROTO + MODULE + _put(0) + _module({}) + _put(1) + b"0"
    for i in range(2, depth + 2):
        ops += _module({"m": i - 1}) + _put(i) + b"0"
    return ops + _snapshot(depth + 1)


def nested_list_pickle(depth: int) -> bytes:
    """A generator whose rendering_kwargs.ray_start is a list nested ``depth`` deep."""
    nested = b"]" * depth + b"a" * (depth - 1)
    extra = _u("rendering_kwargs") + b"}" + _u("ray_start") + nested + b"s" + b"s"
    return PROTO + MODULE + _put(0) + _module({}, extra) + _put(1) + b"0" + _snapshot(1)


def out_of_bounds_tensor_pickle() -> bytes:
    """A generator whose one parameter claims 1000 elements of a 4-element storage."""
    tensor = __import__("pickle").dumps(torch.zeros(4), protocol=3)[2:-1]  # what torch pickles for a tensor
    size_4_stride_1 = b"K\x04\x85q\x05K\x01\x85"
    assert tensor.count(size_4_stride_1) == 1
    tensor = tensor.replace(size_4_stride_1, b"M\xe8\x03\x85q\x05K\x01\x85")  # size (1000,)
    params = _u("_parameters") + b"}" + _u("weight") + tensor + b"s" + b"s"
    return (PROTO + MODULE + _put(9000) + b"0" + _get(9000) + b")\x81}" + _u("_modules") + b"}s" + params + b"b"
            + _put(9001) + b"0" + b"}" + _u("G_ema") + _get(9001) + b"s.")


def weights_only_refusal_pickle(marker) -> bytes:
    """A storage whose embedded bytes are a pickle calling os.system (torch.load refuses it)."""
    evil = PROTO + b"cos\nsystem\n" + _u(f"touch {marker}") + b"\x85R."
    return PROTO + b"ctorch.storage\n_load_from_bytes\n" + b"C" + bytes([len(evil)]) + evil + b"\x85R."


HOSTILE_PICKLES = {
    "dag-40": lambda tmp: dag_pickle(40),
    "cycle": lambda tmp: cycle_pickle(),
    "chain-3000": lambda tmp: chain_pickle(3000),
    "chain-65": lambda tmp: chain_pickle(65),
    "nested-list-100000": lambda tmp: nested_list_pickle(100_000),
    "ext1": lambda tmp: PROTO + b"\x82\x01.",
    "ext4": lambda tmp: PROTO + b"\x84\xff\xff\xff\x7f.",
    "binbytes-4GB-claim": lambda tmp: b"\x80\x03B" + struct.pack("<I", 2**32 - 1) + b"x" * 10,
    "binbytes8-2^60-claim": lambda tmp: b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"x",
    "binunicode8-claim": lambda tmp: b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"x",
    "empty": lambda tmp: b"",
    "garbage": lambda tmp: bytes(range(256)) * 4,
    "truncated": lambda tmp: dag_pickle(3)[:-9],
    "memo-miss": lambda tmp: PROTO + _get(77) + b".",
    "stack-underflow": lambda tmp: PROTO + b"0.",
    "not-a-dict": lambda tmp: PROTO + b"]" + b".",
    "no-G_ema": lambda tmp: PROTO + b"}" + _u("G") + b"Ns.",
    "no-module-state": lambda tmp: PROTO + b"}" + _u("G_ema") + b"K\x01s.",
    "modules-not-dict": lambda tmp: PROTO + MODULE + b")\x81}" + _u("_modules") + b"K\x05sb" + _put(1) + b"0" + _snapshot(1),
    "param-not-tensor": lambda tmp: PROTO + MODULE + b")\x81}" + _u("_modules") + b"}s" + _u("_parameters") + b"}" + _u("w") + _u("x") + b"ssb" + _put(1) + b"0" + _snapshot(1),
    "out-of-bounds-tensor": lambda tmp: out_of_bounds_tensor_pickle(),
    "weights-only-refusal": lambda tmp: weights_only_refusal_pickle(tmp / "pwned"),
    "numpy-huge-reconstruct": lambda tmp: (PROTO + b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
                                           + b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85" + _u("b") + b"\x87R."),
    "global-eval": lambda tmp: PROTO + b"cbuiltins\neval\n" + _u("1") + b"\x85R.",
    "reduce-OrderedDict-bad-args": lambda tmp: PROTO + b"ccollections\nOrderedDict\n" + b"K\x05\x85R.",
    "rendering_kwargs-not-dict": lambda tmp: PROTO + MODULE + _put(0) + _module({}, _u("rendering_kwargs") + b"K\x03s") + _put(1) + b"0" + _snapshot(1),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PICKLES))
def test_hostile_pickle_is_refused_with_one_line_naming_the_file(name, tmp_path):
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(HOSTILE_PICKLES[name](tmp_path))
    start = time.perf_counter()
    with pytest.raises(PersonaError) as err:
        load_official(path, preset="tiny")
    assert time.perf_counter() - start < 5, "a crafted pickle must not make loading slow"
    text = str(err.value)
    assert str(path) in text and "\n" not in text and len(text) < 2000, text
    assert "weights_only=False" not in text
    assert isinstance(err.value, (BadPickleError, ValueError))
    assert not (tmp_path / "pwned").exists()


def test_dag_cycle_and_depth_errors_say_what_is_wrong(tmp_path):
    for name, data, words in (("dag.pkl", dag_pickle(40), "shared sub-module"), ("cycle.pkl", cycle_pickle(), "a cycle"),
                              ("deep.pkl", chain_pickle(3000), "more than 64 levels")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadPickleError, match=words):
            read_official_pickle(tmp_path / name)
    (tmp_path / "ext.pkl").write_bytes(PROTO + b"\x82\x01.")
    with pytest.raises(BadPickleError, match="EXT1"):
        read_official_pickle(tmp_path / "ext.pkl")
    (tmp_path / "oob.pkl").write_bytes(out_of_bounds_tensor_pickle())
    with pytest.raises(BadPickleError, match="out of bounds"):
        read_official_pickle(tmp_path / "oob.pkl")
    (tmp_path / "evil.pkl").write_bytes(weights_only_refusal_pickle(tmp_path / "pwned"))
    with pytest.raises(UnsafePickleError, match="embedded torch storage .* not a plain torch weights file"):
        read_official_pickle(tmp_path / "evil.pkl")


def test_a_chain_within_the_depth_cap_still_loads(tmp_path):
    (tmp_path / "ok.pkl").write_bytes(chain_pickle(60))
    assert read_official_pickle(tmp_path / "ok.pkl")["state_dict"] == {}


def test_missing_pickle_is_a_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl: pickle not found"):
        load_official(tmp_path / "nope.pkl", preset="tiny")


# ---------------------------------------------------------------------------------------------- .npy / .npz
import json  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402

from persona.data import formats as F  # noqa: E402
from persona.errors import PersonaInputError  # noqa: E402


def _npy_with_header(shape, descr="<f4", payload=b"\0" * 64) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


@pytest.mark.parametrize("name,data,words", [
    ("1.7TB-claim", _npy_with_header((1_000_000_000, 16, 29)), "header claims shape [1000000000, 16, 29]"),
    ("complex", F.npy_bytes(np.ones((2, 16, 29), np.complex64)), "dtype complex64; expected real numbers"),
    ("int", F.npy_bytes(np.ones((2, 16, 29), np.int32)), "dtype int32"),
    ("structured", F.npy_bytes(np.zeros((2, 16, 29), [("a", "<f4")])), "expected real numbers"),
    ("object", _npy_with_header((2, 16, 29), "|O"), "dtype object"),
    ("wrong-shape", F.npy_bytes(np.zeros((2, 29, 16), np.float32)), "expected shape [N,16,29]"),
    ("nan", F.npy_bytes(np.full((2, 16, 29), np.nan, np.float32)), "NaN or Inf"),
    ("float64-beyond-float32", F.npy_bytes(np.full((2, 16, 29), 1e300)), "NaN or Inf"),
    ("truncated", F.npy_bytes(np.zeros((4, 16, 29), np.float32))[:-10], "header claims"),
    ("garbage", b"not a numpy file at all", "not a plain numpy .npy array"),
    ("huge-header", b"\x93NUMPY\x02\x00" + struct.pack("<I", 10**6) + b"{" * 10**6, "not a plain numpy .npy array"),
])
def test_hostile_aud_npy_is_refused_before_loading(tmp_path, name, data, words):
    path = tmp_path / "aud.npy"
    path.write_bytes(data)
    with pytest.raises(PersonaInputError) as err:
        F.read_audio_windows(path)
    assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_plain_aud_npy_still_loads(tmp_path):
    (tmp_path / "aud.npy").write_bytes(F.npy_bytes(np.ones((3, 16, 29), np.float64)))
    arr = F.read_audio_windows(tmp_path / "aud.npy")
    assert arr.shape == (3, 16, 29) and arr.dtype == np.float32


def _flame_npz(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _good_flame_members(v=4, k=380):
    return {"v_template.npy": F.npy_bytes(np.zeros((v, 3), np.float32)), "f.npy": F.npy_bytes(np.array([[0, 1, 2]], np.int64)),
            "shapedirs.npy": F.npy_bytes(np.zeros((v, 3, k), np.float32))}


def test_flame_zip_bomb_is_refused_unopened(tmp_path, monkeypatch):
    from persona.baselines.nha import FlameNpzMesh

    monkeypatch.setattr(F, "MAX_ARRAY_BYTES", 1 << 20)  # scaled down: 2.9 MB -> 3 GB in the issue
    members = _good_flame_members()
    members["padding.npy"] = F.npy_bytes(np.zeros(1 << 19, np.float32))  # 2 MB of zeros: a few KB zipped
    _flame_npz(tmp_path / "bomb.npz", members)
    assert (tmp_path / "bomb.npz").stat().st_size < 50_000
    with pytest.raises(PersonaInputError, match=r"unpacks to .* \(a zip bomb\?\)"):
        FlameNpzMesh(tmp_path / "bomb.npz")


@pytest.mark.parametrize("case,words", [
    ("header-lies", "header claims"), ("faces-out-of-range", "vertex indices"), ("missing", "missing array"),
    ("complex", "dtype complex"), ("not-a-zip", "not a readable .npz"), ("bad-shapedirs", "shapedirs [4, 3, 10]"),
])
def test_hostile_flame_npz_is_refused(tmp_path, case, words):
    from persona.baselines.nha import FlameNpzMesh

    members = _good_flame_members()
    if case == "header-lies":
        members["shapedirs.npy"] = _npy_with_header((100_000, 3, 400))
    elif case == "faces-out-of-range":
        members["f.npy"] = F.npy_bytes(np.array([[0, 1, 99]], np.int64))
    elif case == "missing":
        del members["f.npy"]
    elif case == "complex":
        members["v_template.npy"] = F.npy_bytes(np.zeros((4, 3), np.complex64))
    elif case == "bad-shapedirs":
        members["shapedirs.npy"] = F.npy_bytes(np.zeros((4, 3, 10), np.float32))
    path = tmp_path / "flame.npz"
    if case == "not-a-zip":
        path.write_bytes(b"PK\x03\x04 nonsense")
    else:
        _flame_npz(path, members)
    with pytest.raises(PersonaInputError) as err:
        FlameNpzMesh(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_a_plain_flame_npz_still_loads(tmp_path):
    from persona.baselines.nha import FlameNpzMesh

    _flame_npz(tmp_path / "flame.npz", _good_flame_members())
    mesh = FlameNpzMesh(tmp_path / "flame.npz")
    assert mesh(torch.zeros(1, 76)).shape == (1, 4, 3)


# ---------------------------------------------------------------------------------------------- generator sidecars
@pytest.fixture(scope="module")
def tiny_generator_file(tmp_path_factory):
    from persona.eg3d import build_generator, save_generator

    path = tmp_path_factory.mktemp("gen") / "g.safetensors"
    save_generator(build_generator("tiny"), path)
    return path


@pytest.mark.parametrize("field,value,words", [
    ("z_dim", 200_000, "z_dim: 200000 is out of range"),  # would allocate ~320 GB
    ("plane_resolution", -64, "plane_resolution: -64 is out of range"),
    ("depth_resolution", 1_000_000, "depth_resolution: 1000000 is out of range"),
    ("ray_start", float("nan"), "ray_start: nan is not finite"),
    ("ray_end", 0.5, "ray_end 0.5 <= ray_start"),
    ("sr_channels", [32] * 40, "sr_channels: 40 blocks"),
    ("sr_channels", "32", "sr_channels: expected a list"),
    ("white_back", "false", "white_back: expected true or false"),
    ("w_dim", 12.5, "w_dim: expected an integer"),
    ("noise_mode", "loud", "noise_mode: 'loud'"),
])
def test_hostile_generator_sidecar_is_refused_before_building(tiny_generator_file, tmp_path, field, value, words):
    from persona.eg3d import read_generator

    path = tmp_path / "g.safetensors"
    path.write_bytes(tiny_generator_file.read_bytes())
    meta = json.loads(tiny_generator_file.with_suffix(".json").read_text())
    meta["generator"][field] = value
    path.with_suffix(".json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(PersonaInputError) as err:
        read_generator(path)
    assert time.perf_counter() - start < 5
    assert words in str(err.value) and f"{path.with_suffix('.json')}" in str(err.value)


@pytest.mark.parametrize("case", ["garbage", "huge-header", "empty", "sidecar-not-json", "sidecar-a-list"])
def test_damaged_safetensors_name_the_file(tiny_generator_file, tmp_path, case):
    from persona.eg3d import read_generator

    path = tmp_path / "g.safetensors"
    path.write_bytes(tiny_generator_file.read_bytes())
    path.with_suffix(".json").write_text(tiny_generator_file.with_suffix(".json").read_text())
    if case == "garbage":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    elif case == "huge-header":
        path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "sidecar-not-json":
        path.with_suffix(".json").write_text("{generator: ")
    else:
        path.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(PersonaError) as err:
        read_generator(path)
    assert path.stem in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- WAV, frames, indices
def _wav(rate: int, n: int = 100, bits: int = 16, fmt: int = 1) -> bytes:
    data = b"\0" * (n * bits // 8)
    fmt_chunk = struct.pack("<HHIIHH", fmt, 1, rate, rate * bits // 8, bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("data,words", [(_wav(0), "sample rate 0 Hz"), (_wav(10**9), "sample rate 1000000000 Hz"),
                                        (_wav(16000, n=0), "expected non-empty"), (b"RIFF....WAVEjunk", "not a readable WAV")])
def test_hostile_wav_is_refused(tmp_path, data, words):
    from persona.data.audio import read_wav

    (tmp_path / "aud.wav").write_bytes(data)
    with pytest.raises(PersonaInputError, match=words):
        read_wav(tmp_path / "aud.wav")


def test_negative_frame_index_does_not_wrap_the_audio_window(tmp_path):
    with pytest.raises(PersonaInputError, match="frame index: -1 is out of range"):
        F.audio_index(-1, 10, 10, "aud.npy")
    assert F.audio_index(9, 9, 10, "aud.npy") == 8  # AD-NeRF's one-short count still repeats the last window
    frame = {"file_path": "images/0", "transform_matrix": np.eye(4).tolist(), "expression": [0.0] * 76, "frame_index": -3}
    (tmp_path / "transforms_train.json").write_text(json.dumps({"intrinsics": [10, 10, 0.5, 0.5], "frames": [frame]}))
    with pytest.raises(PersonaInputError, match=r"frames\[0\].frame_index: -3 is out of range"):
        F.read_nerface(tmp_path, "train")


def test_non_square_frames_are_refused_not_squashed(tmp_path):
    from persona.data.dataset import FrameDataset

    frames = []
    for i in range(2):
        F.write_image(tmp_path / "images" / f"{i}.png", np.zeros((12, 16, 3), np.uint8))
        frames.append({"file_path": f"images/{i}", "transform_matrix": np.eye(4).tolist(), "expression": [0.0] * 76,
                       "camera_label": np.r_[np.eye(4).ravel(), [1, 0, 0.5, 0, 1, 0.5, 0, 0, 1]].tolist()})
    (tmp_path / "transforms_train.json").write_text(json.dumps({"intrinsics": [10, 10, 0.5, 0.5], "frames": frames}))
    with pytest.raises(PersonaInputError, match="frames are 16x12 .* expected square frames"):
        FrameDataset(tmp_path, "train", resolution=8)


@pytest.mark.parametrize("text,words", [
    ("[1, 2", "not valid JSON"), ('{"frames": 3, "intrinsics": [1, 1, 0.5, 0.5]}', "'frames' must be a list"),
    ('{"frames": [7], "intrinsics": [1, 1, 0.5, 0.5]}', "expected an object with field 'file_path'"),
    ('{"frames": [], "camera_angle_x": "wide"}', "camera_angle_x: expected a number"),
])
def test_hostile_transforms_json_is_one_line(tmp_path, text, words):
    (tmp_path / "transforms_train.json").write_text(text)
    with pytest.raises(PersonaInputError) as err:
        F.read_nerface(tmp_path, "train")
    assert words in str(err.value) and "transforms_train.json" in str(err.value)


def test_adnerf_ids_must_be_non_negative_integers(tmp_path):
    frame = {"img_id": "abc", "aud_id": 0, "transform_matrix": np.eye(4).tolist()}
    (tmp_path / "transforms_train.json").write_text(json.dumps({"focal_len": 1, "cx": 1, "cy": 1, "frames": [frame]}))
    with pytest.raises(PersonaInputError, match=r"frames\[0\].img_id: expected an integer, got 'abc'"):
        F.read_adnerf(tmp_path, "train")


# ---------------------------------------------------------------------------------------------- torch weights files
@pytest.mark.parametrize("loader", ["syncnet", "alexnet"])
@pytest.mark.parametrize("case", ["code", "garbage", "not-a-state-dict"])
def test_foreign_torch_weights_are_refused_naming_the_file(tmp_path, loader, case):
    from persona import metrics, syncnet

    path = tmp_path / "weights.pth"
    if case == "code":
        path.write_bytes(PROTO + b"cos\nsystem\n" + _u(f"touch {tmp_path / 'pwned'}") + b"\x85R.")
    elif case == "garbage":
        path.write_bytes(b"\x00" * 40)
    else:
        torch.save([torch.zeros(2)], path)
    with pytest.raises(PersonaInputError) as err:
        if loader == "syncnet":
            syncnet.load_official(path)
        else:
            metrics._load_alexnet_trunk(torch.nn.Module(), path)
    text = str(err.value)
    assert str(path) in text and "weights_only=False" not in text and "\n" not in text
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------- notebook params
@pytest.mark.parametrize("text,words", [
    ("profile: smoke\nforce: [unclosed\n", "not valid YAML at line 3"),
    ("profile: smoke\n  bad: indent\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "expected a mapping of parameter names to values, got list"),
    ('force: "false"\n', "force: expected true or false, got 'false'"),
    ("force: 0\n", "force: expected true or false, got 0"),
    ("notebooks:\n  01_x:\n    force: 'no'\n", "notebooks.01_x: force: expected true or false, got 'no'"),
    ("notebooks: [1, 2]\n", "notebooks: expected a mapping"),
    ("notebooks:\n  01_x: 5\n", "notebooks.01_x: expected a mapping"),
    (b"\xff\xfe\x00garbage", "not a UTF-8 text file"),
])
def test_hostile_params_yaml_is_one_line(tmp_path, text, words):
    from persona import notebooks

    path = tmp_path / "smoke.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PersonaInputError) as err:
        notebooks.read_params_yaml(path)
    assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PersonaInputError):
        notebooks.load_params("smoke", params_dir=tmp_path)


def test_shipped_params_files_pass_and_real_bools_are_kept(tmp_path):
    from persona import notebooks

    for profile in ("smoke", "default", "paper"):
        assert isinstance(notebooks.load_params(profile), dict)
    (tmp_path / "smoke.yaml").write_text("force: true\nnotebooks:\n  01_x:\n    force: false\n")
    assert notebooks.load_params("smoke", "01_x", params_dir=tmp_path)["force"] is False


def test_an_image_claiming_a_billion_pixels_is_refused_before_decoding(tmp_path):
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    (tmp_path / "big.png").write_bytes(png)
    with pytest.raises(PersonaInputError, match=r"claims 40000x40000 \(WxH\) pixels"):
        F.read_image(tmp_path / "big.png")
    F.write_image(tmp_path / "ok.png", np.zeros((12, 16, 3), np.uint8))
    assert F.image_header_size(tmp_path / "ok.png") == (12, 16)
    import cv2

    cv2.imwrite(str(tmp_path / "ok.jpg"), np.zeros((12, 16, 3), np.uint8))
    assert F.image_header_size(tmp_path / "ok.jpg") == (12, 16) and F.read_image(tmp_path / "ok.jpg").shape == (12, 16, 3)
