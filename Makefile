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

.PHONY: demo test bench native clean

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
	$(PIP) -e '.[export,train,dev,rtx,cpu]'
	benchmarks/setup_rembg.sh $(PY)
	touch $@

demo: $(VENV)/.demo
	@photos=$$($(PY) -c 'import os, skimage.data; print(os.path.dirname(skimage.data.__file__))'); \
	set -x; $(VENV)/bin/u2edge image $(addprefix $$photos/,$(PHOTOS)) -o out --mode cutout

test: $(VENV)/.test
	$(PY) -m pytest

# the CUDA kernels as u2edge/_native*.so: pip install builds them where nvcc is found; this
# rebuilds them and fails loudly if they cannot be built (set U2EDGE_CUDA_ARCHITECTURES=87 for
# one GPU only)
native: $(VENV)/.test
	U2EDGE_NATIVE=on $(PIP) --no-deps -e .

bench: $(VENV)/.test
	$(VENV)/bin/u2edge bench --json-out bench.json --plot bench.png

clean:
	rm -rf $(VENV) out bench.json bench.png build u2edge/_native*.so
