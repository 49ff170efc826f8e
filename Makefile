# edgerec: `make demo` and `make test` set up .venv themselves on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pip prints one harmless warning per package for this machine's local index; hide those.
PIP := $(PY) -m pip install --disable-pip-version-check -q
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: demo quickstart demo-export test lint bench bench-embed arm-check clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ -/'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip $(QUIET)

# Runtime only (numpy, pillow, onnxruntime, ai-edge-litert): enough for the demo.
$(VENV)/.runtime-installed: pyproject.toml | $(PY)
	$(PIP) -e '.[onnx,tflite]' $(QUIET)
	touch $@

# Everything: torch==2.14.1 + torchvision==0.29.1 (from this machine's disk), converters, tests,
# and Ray (the scale extra: the Ray catalog build's tests).
$(VENV)/.all-installed: pyproject.toml | $(PY)
	$(PIP) -e '.[export,dev,scale]' $(QUIET)
	touch $@ $(VENV)/.runtime-installed

demo: $(VENV)/.all-installed  ## the main job end to end on the sample (a --quick export, the shipped student, feed, evaluate, bench) -> build/demo/index.html (~5 min)
	$(PY) examples/demo.py --out build/demo

quickstart: $(VENV)/.runtime-installed  ## wrap the shipped teacher as a bundle, embed the sample, show neighbours (no torch, ~1 min)
	$(PY) examples/quickstart.py --out build/quickstart

demo-export: $(VENV)/.all-installed  ## distil a tiny student on the sample (--quick, ~3 min) and show its report path
	$(VENV)/bin/edgerec export --images examples/sample/images --out build/demo/quick-bundle --quick --force

# One pytest worker per hardware thread (pytest-xdist), each test file on one worker so that
# a module's fixtures (the --quick exports, a local Ray) are built once. TEST_WORKERS=0 runs
# the suite in this process, serially.
TEST_WORKERS ?= logical
test: $(VENV)/.all-installed  ## lint, the layer contracts, the whole test suite (a worker per hardware thread)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.all-installed  ## ruff and the layer contracts (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# `make bench`: the bench extra (faiss-cpu, so the faiss comparison is always there; matplotlib).
$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.runtime-installed
	$(PIP) -e '.[onnx,tflite,bench]' $(QUIET)
	touch $@

BENCH_TEACHER := build/bench/teacher
BENCH_ARGS ?=
bench: $(VENV)/.bench-installed  ## edgerec bench: teacher + shipped student per stage, search scaling with faiss (~15 min)
	test -f $(BENCH_TEACHER)/manifest.json || $(VENV)/bin/edgerec bundle import \
	    examples/sample/teacher/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite \
	    --out $(BENCH_TEACHER) --raw-pixels --name teacher --force
	nice -n 10 $(VENV)/bin/edgerec bench $(BENCH_TEACHER) examples/models/clothing-student \
	    --images examples/sample/images --out benchmarks/results $(BENCH_ARGS)

bench-embed: $(VENV)/.all-installed  ## the older per-engine embedding latency script (needs the export extra)
	$(PY) benchmarks/embed_latency.py

# Not part of `make test`: the first run needs root and downloads from Debian and PyPI.
arm-check: $(VENV)/.runtime-installed  ## embeddings on emulated arm64 (qemu) vs x86, same artifacts (minutes)
	nice -n 10 $(PY) benchmarks/arm_emulated.py

clean:  ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache .ruff_cache
