"""The layout: the toolchain lives in export/ at the top level and is ``u2edge.export`` everywhere,
through the committed symlink u2edge/export -> ../export: from a source checkout on PYTHONPATH,
from an editable install, and from a wheel, which holds it once, as real files."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLCHAIN = sorted(p.name for p in (REPO / "export").glob("*.py"))


def test_the_toolchain_imports_from_a_checkout(tmp_path):
    """PYTHONPATH=<checkout> alone, without any install: no site (so no editable finder), the
    installed dependencies on the path as plain folders, and another working folder."""
    code = ("import sys, u2edge, u2edge.export, u2edge.export.build\n"
            "print(u2edge.__file__, u2edge.export.__file__, u2edge.export.build.__file__, sep='\\n')\n"
            "print(sorted(type(f).__name__ for f in sys.meta_path if 'Editable' in type(f).__name__))\n")
    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr
    runtime, toolchain, build, finders = proc.stdout.splitlines()
    assert Path(runtime) == REPO / "u2edge" / "__init__.py" and finders == "[]"
    assert Path(toolchain).resolve() == REPO / "export" / "__init__.py"
    assert Path(build).resolve() == REPO / "export" / "build.py"


def test_the_toolchain_is_one_package_of_the_runtime():
    """Type checkers and IDEs see one u2edge.export: the folder that export/ is, not a copy."""
    link = REPO / "u2edge" / "export"
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "export")
    assert link.resolve() == REPO / "export"


@pytest.mark.slow
def test_the_wheel_holds_the_toolchain_once(tmp_path):
    """pip builds the wheel from a copy of the checkout (symlink kept), without the native part."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.so", "tests", "benchmarks",
        "out"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "wheel"), str(source)], capture_output=True, text=True,
                          env={**os.environ, "U2EDGE_NATIVE": "off"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = (tmp_path / "wheel").glob("u2edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert len(names) == len(set(names))
    assert sorted(n.split("/")[-1] for n in names if n.startswith("u2edge/export/")) == TOOLCHAIN
    assert not [n for n in names if n.startswith("export/")]
    assert "u2edge/export/build.py" in names and "u2edge/data/" in " ".join(names)
