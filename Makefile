# The two commands of the README:
#   make demo   cuts real photos out with the official U2-NetP on the CPU (writes out/)
#   make test   runs the test suite
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
PHOTOS := astronaut.png chelsea.png coffee.png rocket.jpg motorcycle_left.png

.PHONY: demo test clean

# runtime only (numpy, OpenCV, ONNX Runtime) plus scikit-image for its sample photos
$(VENV)/.demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e . scikit-image
	touch $@

# everything the tests use; torch is pinned first so pip takes the CPU build, not CUDA packages
$(VENV)/.test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[export,dev,rtx]'
	touch $@

demo: $(VENV)/.demo
	@photos=$$($(PY) -c 'import os, skimage.data; print(os.path.dirname(skimage.data.__file__))'); \
	set -x; $(VENV)/bin/u2edge image $(addprefix $$photos/,$(PHOTOS)) -o out --mode cutout

test: $(VENV)/.test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out
