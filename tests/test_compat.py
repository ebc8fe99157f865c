"""u2edge runs on Python 3.8 (JetPack 5) and newer; vermin checks the syntax and stdlib use."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_code_runs_on_python_3_8():
    if importlib.util.find_spec("vermin") is None:
        pytest.skip("vermin is not installed: pip install -e '.[dev]'")
    cmd = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--no-tips",
           "--no-eval-annotations", "--violations", "-t=3.8-",
           *(str(ROOT / name) for name in ("u2edge", "export", "setup.py"))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def python38():
    """A real Python 3.8 (pyenv's shims are skipped: they fail unless a version is selected)."""
    import glob
    import shutil

    found = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.8*/bin/python3.8")))
    on_path = shutil.which("python3.8")
    if on_path and "/shims/" not in on_path:
        found.insert(0, on_path)
    return found[0] if found else None


@pytest.mark.slow
def test_runtime_on_a_real_python_3_8(tmp_path, official_onnx, photo_paths):
    interpreter = python38()
    if interpreter is None:
        pytest.skip("no Python 3.8 interpreter here to run the runtime on")
    venv = tmp_path / "py38"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["numpy", "opencv-python", "onnxruntime", "onnx"], check=True)
    # the runtime on 3.8 is what is checked here, not a second CUDA build
    subprocess.run(pip + ["--no-deps", "-e", str(ROOT)], check=True, env={**os.environ, "U2EDGE_NATIVE": "off"})
    code = (
        "import importlib, sys\n"
        "for m in ('u2edge.cli', 'u2edge.export.build', 'u2edge.export.precision', 'u2edge.metrics',\n"
        "          'u2edge.trtcompat', 'u2edge.cli.build', 'u2edge.cli.eval'):\n"
        "    importlib.import_module(m)\n"
        "from u2edge.cli import main\n"
        f"assert main(['image', {str(photo_paths[0])!r}, '-o', {str(tmp_path / 'out')!r}, '-q']) == 0\n"
        f"assert main(['export', '-o', {str(tmp_path / 'm.onnx')!r}]) == 0\n"
        "assert sys.version_info[:2] == (3, 8)\n"
    )
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / f"{photo_paths[0].stem}.png").exists()
