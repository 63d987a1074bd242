"""persona._torchvision: the fallback runs only for the 'torchvision::nms does not exist' failure."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _run_with_fake_torchvision(tmp_path: Path, init_source: str) -> subprocess.CompletedProcess:
    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(init_source))
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from persona import _torchvision
        try:
            tv = _torchvision.import_torchvision()
            print("OK", getattr(tv, "MARK", None), _torchvision.used_fallback())
        except RuntimeError as err:
            print("RAISED", err)
        """
    )
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)


def test_matching_torchvision_is_untouched(tmp_path):
    out = _run_with_fake_torchvision(tmp_path, "MARK = 'plain'\n")
    assert out.stdout.split() == ["OK", "plain", "False"], out.stderr


def test_fallback_defines_missing_schemas_and_retries(tmp_path):
    # Behaves like the CUDA wheel: fails unless torchvision::nms has a schema.
    out = _run_with_fake_torchvision(tmp_path, """
        import torch
        try:
            torch.ops.torchvision.nms.default
        except (AttributeError, RuntimeError):
            raise RuntimeError("operator torchvision::nms does not exist")
        MARK = 'retried'
    """)
    assert out.stdout.split() == ["OK", "retried", "True"], out.stderr


def test_other_runtime_errors_propagate(tmp_path):
    out = _run_with_fake_torchvision(tmp_path, "raise RuntimeError('something else broke')\n")
    assert out.stdout.startswith("RAISED something else broke"), out.stdout + out.stderr


def test_real_lpips_imports():
    from persona._torchvision import import_lpips

    lpips = import_lpips()
    assert hasattr(lpips, "LPIPS")
