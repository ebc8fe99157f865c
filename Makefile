# The two commands of the README:
#   make demo   cuts real photos out with the official U2-NetP on the CPU (writes out/)
#   make test   runs the test suite
# Both create the virtual environment .venv on first use. Also:
#   make bench  u2edge bench against rembg and PyTorch on the CPU (writes bench.json and bench.png)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
PHOTOS := astronaut.png chelsea.png coffee.png rocket.jpg motorcycle_left.png

.PHONY: demo test bench native system-packages clean

# The GStreamer tests run u2edge beside the system's OpenCV (Debian's python3-opencv, built with
# GStreamer, standing in for JetPack's), in an environment of its own that sees the system's packages
# and keeps its numpy; the RTSP tests serve streams with the system's GStreamer RTSP server.
SYSTEM_PYTHON ?= /usr/bin/python3
SYSTEM_VENV ?= .venv-system
SYSTEM_PACKAGES := python3-opencv python3-venv python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav ffmpeg
HAS_GSTREAMER_OPENCV := $(SYSTEM_PYTHON) -c 'import cv2, re, sys; \
	sys.exit(not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))'

# runtime only (numpy, OpenCV, ONNX Runtime) plus scikit-image for its sample photos; the demo
# runs on the CPU, so it skips compiling the CUDA part (make native adds it)
$(VENV)/.demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	U2EDGE_NATIVE=off $(PIP) -e . scikit-image
	touch $@

# everything the tests and the benchmark use; torch is pinned first so pip takes the CPU build,
# not CUDA packages; rembg, the benchmark's peer, gets a virtual environment of its own
$(VENV)/.test: pyproject.toml benchmarks/setup_rembg.sh
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[export,train,dev,rtx,cpu,ros,h264,ray,triton-client]'
	benchmarks/setup_rembg.sh $(PY)
	touch $@

# u2edge without pip's OpenCV (U2EDGE_OPENCV=system, see setup.py), numpy held at the system's version
$(SYSTEM_VENV)/.test: pyproject.toml setup.py
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(SYSTEM_VENV)
	$(SYSTEM_PYTHON) -c 'import numpy; print("numpy==" + numpy.__version__)' > $(SYSTEM_VENV)/constraints.txt
	U2EDGE_OPENCV=system U2EDGE_NATIVE=off PIP_CONSTRAINT=$(SYSTEM_VENV)/constraints.txt \
		$(SYSTEM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

# the tritonserver that pytriton bundles, for the Triton tests: pytriton pins numpy<2 for its whole
# environment, so it gets one of its own and the test environment keeps numpy 2
TRITON_VENV ?= .venv-triton
$(TRITON_VENV)/.test: pyproject.toml setup.py
	$(PYTHON) -m venv $(TRITON_VENV)
	U2EDGE_NATIVE=off $(TRITON_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[triton]'
	touch $@

demo: $(VENV)/.demo
	@photos=$$($(PY) -c 'import os, skimage.data; print(os.path.dirname(skimage.data.__file__))'); \
	set -x; $(VENV)/bin/u2edge image $(addprefix $$photos/,$(PHOTOS)) -o out --mode cutout

test: $(VENV)/.test $(TRITON_VENV)/.test
	@if $(HAS_GSTREAMER_OPENCV) 2>/dev/null; then $(MAKE) --no-print-directory $(SYSTEM_VENV)/.test; \
	else echo "make test: $(SYSTEM_PYTHON) has no OpenCV with GStreamer, so the GStreamer tests skip (make system-packages)"; fi
	U2EDGE_SYSTEM_VENV=$(SYSTEM_VENV) U2EDGE_TRITON_VENV=$(TRITON_VENV) $(PY) -m pytest

# what the GStreamer, RTSP and H.264 tests need from Debian (root; CI runs it)
system-packages:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES)

# the CUDA kernels as u2edge/_native*.so: pip install builds them where nvcc is found; this
# rebuilds them and fails loudly if they cannot be built (set U2EDGE_CUDA_ARCHITECTURES=87 for
# one GPU only)
native: $(VENV)/.test
	U2EDGE_NATIVE=on $(PIP) --no-deps -e .

bench: $(VENV)/.test
	$(VENV)/bin/u2edge bench --json-out bench.json --plot bench.png

clean:
	rm -rf $(VENV) $(SYSTEM_VENV) $(TRITON_VENV) out bench.json bench.png build u2edge/_native*.so
