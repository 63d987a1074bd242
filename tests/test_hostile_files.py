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
    with pytest.raises(UnsafePickleError, match="not plain tensor data"):
        read_official_pickle(tmp_path / "evil.pkl")


def test_a_chain_within_the_depth_cap_still_loads(tmp_path):
    (tmp_path / "ok.pkl").write_bytes(chain_pickle(60))
    assert read_official_pickle(tmp_path / "ok.pkl")["state_dict"] == {}


def test_missing_pickle_is_a_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl: pickle not found"):
        load_official(tmp_path / "nope.pkl", preset="tiny")
