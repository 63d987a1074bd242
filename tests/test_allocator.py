"""persona.allocator: glibc keeps freed blocks (issue #16) unless the user opts out or set malloc up already."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from persona import allocator

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
PROBE = ("import json, os, subprocess, sys; from persona.allocator import keep_freed_memory; on = keep_freed_memory(); "
         "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"MALLOC_MMAP_THRESHOLD_\"))'], "
         "capture_output=True, text=True).stdout.strip(); "
         "print(json.dumps({'on': on, 'mmap': os.environ.get('MALLOC_MMAP_THRESHOLD_'), 'trim': os.environ.get('MALLOC_TRIM_THRESHOLD_'), 'child': child}))")


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*allocator.ENV, allocator.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_it_applies_the_settings_and_children_inherit_them():
    got = probe()
    assert got["on"] is True
    assert got["mmap"] == str(allocator.MMAP_THRESHOLD) and got["trim"] == str(allocator.TRIM_THRESHOLD)
    assert got["child"] == str(allocator.MMAP_THRESHOLD)  # notebook kernels and pool workers start with them


def test_opting_out_or_settings_of_ones_own_are_left_alone():
    assert probe(PERSONA_MALLOC="system") == {"on": False, "mmap": None, "trim": None, "child": "None"}
    own = probe(MALLOC_MMAP_THRESHOLD_="65536")
    assert own["on"] is False and own["mmap"] == "65536" and own["trim"] is None


def test_every_command_line_run_keeps_freed_memory(monkeypatch, capsys):
    from persona import __main__ as entry

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert entry.main(["--help"]) == 0
    assert calls == [1]
