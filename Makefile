# `make demo`: set up and run the whole pipeline on the embedded digits data.
# `make test`: set up and run the test suite (slow/gpu/tensorrt marks skipped).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# A CPU build of torch; an unpinned torch would pull a CUDA build of several GB.
TORCH ?= torch==2.13.0
TORCHVISION ?= torchvision==0.29.1
TIMM ?= timm==1.0.31

.PHONY: setup demo test test-all fuzz bench gpu-check clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[cpu,dali,dev,hf]'
	# torchvision's model definitions only, for the count cross-check (its wheel does not import
	# against the pinned torch); the tests skip it where the package index cannot be reached
	-$(PY) -m pip download -q --no-deps --only-binary :all: -d $(VENV)/wheels "$(TORCHVISION)"
	# timm, on torchvision's model definitions without its compiled operators (timm imports
	# torchvision; its operators link CUDA libraries): `timm:NAME` models run end to end here
	-$(PY) -m pip download -q --no-deps --only-binary :all: -d $(VENV)/wheels "$(TIMM)"
	-$(PY) scripts/models_only_torchvision.py $$(ls $(VENV)/wheels/torchvision-*.whl | tail -1) && \
	  $(PY) -m pip install -q --no-deps $$(ls $(VENV)/wheels/timm-*.whl | tail -1)
	# TensorRT's pure-Python plugin package (the compiled core needs CUDA libraries), 10.13 and 11,
	# which tests/test_tensorrt_plugin.py runs kdforge's plugin through
	-$(PY) -m pip download -q --no-deps --only-binary :all: -d $(VENV)/wheels "tensorrt-cu12-bindings==10.13.3.9.post1"
	-$(PY) -m pip download -q --no-deps --only-binary :all: -d $(VENV)/wheels "tensorrt-cu12-bindings==11.4.0.106"
	# Debian's headless Chromium, in which tests/test_report_page.py renders report.html (installed
	# where setup runs as root with apt-get; the test skips where Chromium is absent)
	-command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1; }
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kdforge run configs/digits_demo.yaml

# two workers: most tests wait on a child process's imports and single-threaded stages, so two
# in turn keep both cores busy (19.6 min in series on a 2-core AVX2 machine)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# the readers of files from outside, fuzzed at length (random examples; a crash is kept in tests/fuzz_regressions/)
fuzz: $(STAMP)
	KDFORGE_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests/test_fuzz.py

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

# on a CUDA machine: what only a GPU shows (gpu/tensorrt tests, kernel timings, ONNX Runtime's CUDA
# provider, DALI's GPU decoding, a ResNet-50 AMP step) into gpu_check.json, within 10 minutes.
# GPU_PYTHON is the Python that has CUDA PyTorch with kdforge installed (pip install -e '.[gpu,dev]'
# or the Docker image); this file's venv has the CPU build.
GPU_PYTHON ?= python3
gpu-check:
	timeout 600 $(GPU_PYTHON) -m kdforge.gpu_check --out gpu_check.json --budget 500

clean:
	rm -rf runs .pytest_cache
