"""Builds the native part (CMakeLists.txt) as ``u2edge._native`` during ``pip install``.

Everything else is in pyproject.toml, but the dependencies (see ``dependencies``). The environment variable
U2EDGE_NATIVE picks what happens:

- ``auto`` (the default): build it where nvcc is found (on PATH, in CUDACXX, or in
  /usr/local/cuda/bin as on JetPack); if nvcc is missing or the build fails, say so and install
  the pure-Python package, which pre- and post-processes on the CPU;
- ``on``: build it, and fail the install if it cannot be built;
- ``off``: do not build it.

U2EDGE_CUDA_ARCHITECTURES (for example ``87`` on a Jetson Orin) builds for those GPUs only,
which is faster than the default list of desktop and Jetson architectures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MODES = ("auto", "on", "off")


def find_nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_cmake() -> str | None:
    try:  # the cmake wheel pip puts in the build environment (pyproject.toml's build requirements)
        import cmake

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        return shutil.which("cmake")


class BuildNative(build_ext):
    """CMake builds the module; setuptools puts it where the package is (or in the source tree,
    for ``pip install -e``)."""

    def run(self) -> None:
        mode = os.environ.get("U2EDGE_NATIVE", "auto").strip().lower()
        if mode not in MODES:
            raise SystemExit(f"U2EDGE_NATIVE={mode!r}: use one of {', '.join(MODES)}")
        nvcc, cmake = find_nvcc(), find_cmake()
        why_not = ("U2EDGE_NATIVE=off" if mode == "off" else
                   "nvcc was not found (set CUDACXX or put the CUDA toolkit's bin on PATH)" if nvcc is None else
                   "cmake was not found" if cmake is None else None)
        if why_not is not None:
            if mode == "on":
                raise SystemExit(f"u2edge: cannot build the native part: {why_not}")
            self.announce(f"u2edge: native part not built ({why_not}); CPU pre/post-processing", level=2)
            self.extensions = []
        self._mode, self._tools = mode, (nvcc, cmake)
        super().run()

    def build_extension(self, ext: Extension) -> None:
        nvcc, cmake = self._tools
        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        build = Path(self.build_temp).resolve() / "native"
        import pybind11

        configure = [cmake, "-S", str(ROOT), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={nvcc}",
                     f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                     f"-DU2EDGE_MODULE_DIR={build / 'module'}"]
        architectures = os.environ.get("U2EDGE_CUDA_ARCHITECTURES")
        if architectures:
            configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={architectures.replace(',', ';')}")
        jobs = str(os.cpu_count() or 2)
        try:
            for cmd in (configure, [cmake, "--build", str(build), "--target", "_native", "-j", jobs]):
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
            built = next((build / "module").glob("_native*"), None)
            if built is None:
                raise RuntimeError(f"the build left no _native module in {build / 'module'}")
        except RuntimeError as exc:
            if self._mode == "on":
                raise SystemExit(f"u2edge: the native part failed to build: {exc}") from exc
            self.announce(f"u2edge: native part not built, CPU pre/post-processing ({exc})", level=3)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


def license_metadata() -> dict:
    """Apache-2.0 as an SPDX expression where setuptools takes one (77 and newer, on Python >= 3.9);
    older ones, which Python 3.8 (JetPack 5) gets, take the License field. The pyproject.toml table
    form fails builds from 2027-02-18 on."""
    major = int(setuptools.__version__.split(".")[0])
    return {"license_expression": "Apache-2.0"} if major >= 77 else {"license": "Apache-2.0"}


# On Linux aarch64 (Jetson) OpenCV and ONNX Runtime come from JetPack and NVIDIA's wheels, so pip must not
# install PyPI builds that would shadow them: see README, "Jetson".
OPENCV = "opencv-python>=4.6; platform_machine != 'aarch64' or sys_platform != 'linux'"
DEPENDENCIES = [
    "numpy>=1.22",
    OPENCV,
    "onnxruntime>=1.16; platform_machine != 'aarch64' or sys_platform != 'linux'",
    # the CPU fast path, there after a plain install: OpenVINO runs INT8 on VNNI/AMX, and onnx makes
    # the INT8 model from the official ONNX on first use (a graph edit; no torch)
    "openvino>=2025.0; (platform_machine == 'x86_64' or platform_machine == 'AMD64') and python_version >= '3.9'",
    "onnx>=1.16",
]
OPENCV_CHOICES = ("pip", "system")


def dependencies() -> list[str]:
    """The runtime's; U2EDGE_OPENCV=system leaves out pip's OpenCV, for an environment made with
    --system-site-packages that uses the system's python3-opencv (built with GStreamer, against the
    system's numpy 1.x): pip's cv2 would shadow it, and pull in numpy 2 (README, "GStreamer")."""
    choice = os.environ.get("U2EDGE_OPENCV", "pip").strip().lower()
    if choice not in OPENCV_CHOICES:
        raise SystemExit(f"U2EDGE_OPENCV={choice!r}: use one of {', '.join(OPENCV_CHOICES)}")
    return [d for d in DEPENDENCIES if choice == "pip" or d != OPENCV]


# optional: setuptools copies it into the source tree (pip install -e) only where it was built
setup(ext_modules=[Extension("u2edge._native", sources=[], optional=True)], cmdclass={"build_ext": BuildNative},
      install_requires=dependencies(), **license_metadata())
