"""u2edge runs on Python 3.8 (JetPack 5) and newer; vermin checks the syntax and stdlib use."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_code_runs_on_python_3_8():
    if importlib.util.find_spec("vermin") is None:
        pytest.skip("vermin is not installed: pip install -e '.[dev]'")
    cmd = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--no-tips",
           "--no-eval-annotations", "--violations", "-t=3.8-", str(ROOT / "u2edge"), str(ROOT / "export")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
