# keras_sparse developer commands. Each target does its own set-up on a fresh
# machine: `make demo` and `make test` create the venv, pip-install the
# package, and apt-get the Fashion-MNIST Debian package when it is missing.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
VENV_PY := $(VENV)/bin/python
EXTRAS ?= test,tflite,bench,examples
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core, 2 to 4; each test file stays in
# one process (module-level caches and fixtures are shared within a file).
# `make test PYTEST_WORKERS=0` runs in this process.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 2 ? 2 : (n > 4 ? 4 : n) )))
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
# The benchmark peer, TF-MOT, only runs under tf_keras (Keras 2): own venv,
# TensorFlow pinned to the main venv's version.
TFMOT_VENV ?= .venv-tfmot
TFMOT_STAMP := $(TFMOT_VENV)/.installed
TF_VERSION ?= 2.21.0
BENCH_ARGS ?=
EXAMPLE_ARGS ?=
# tflite-runtime 2.14 (the legacy device runtime) needs numpy<2: own venv.
TFLRT_VENV ?= .venv-tflrt
TFLRT_STAMP := $(TFLRT_VENV)/.installed
export TFLITE_RUNTIME_PYTHON := $(abspath $(TFLRT_VENV))/bin/python

.PHONY: help venv tflrt-venv data test test-fast test-all demo demo-quick bench-step clean-venv
.PHONY: lint
.PHONY: bench-on-device-dst bench-chase bench-sparse-step
.PHONY: tfmot-venv bench-accuracy bench-accuracy-quick bench-tflite bench-on-device bench-cost test-notebooks notebooks
.PHONY: quickstart export-on-device tost-example
.PHONY: bench-neurrev bench-dormant bench-tost bench-pai

help:
	@echo "make demo        sparse-train the small CNN on Fashion-MNIST (sets everything up)"
	@echo "make test        the CI suite: every test but those marked slow (sets everything up)"
	@echo "make test-fast   edit-loop tier: one case per parametrized test (<= 5 min)"
	@echo "make test-all    all tests, including those marked slow"
	@echo "make lint        ruff check . (CI runs it first)"
	@echo "make bench-step  step-time benchmark, sparse vs dense"
	@echo "make venv        create $(VENV) and pip install -e '.[$(EXTRAS)]'"
	@echo "make tflrt-venv  legacy tflite-runtime 2.14 venv (numpy<2) for runner tests"
	@echo "make data        apt-get install dataset-fashion-mnist if missing"
	@echo "make bench-accuracy        accuracy table (hours, resumable); -quick: < 10 min smoke run"
	@echo "make bench-tflite          TFLite bytes/latency/on-device training benchmark"
	@echo "make bench-on-device       on-device train step vs Keras, head-only, bytes, RSS"
	@echo "make bench-on-device-dst   on-device DST (static/SET/RigL/NeurRev vs dense) in LiteRT, resumable"
	@echo "make bench-chase           Chase vs RigL vs dense: accuracy and LiteRT speed, resumable"
	@echo "make bench-sparse-step     on-device train step of a Dense-heavy net: sparse compute vs dense (minutes)"
	@echo "make bench-cost            cost table: step-time ratios (incl. TF-MOT peer), update latency, TFLite"
	@echo "make quickstart            examples/quickstart.py: static ERK + RigL on Fashion-MNIST"
	@echo "make export-on-device      examples/export_and_train_on_device.py: TFLite export + runner training"
	@echo "make tost-example          examples/tost_on_fixed_mask.py: SNIP/LTH mask trained plainly vs with ToST"
	@echo "make bench-neurrev         NeurRev p x update-interval sweep vs RigL (small CNN, resumable)"
	@echo "make bench-dormant         dormant-neuron fraction and ITOP rate over training, RigL vs NeurRev"
	@echo "make bench-tost            ToST per-tweak breakdown (Table 4) + schedule sweep (~30 min, resumable)"
	@echo "make bench-pai             prune-at-init masks at initialization (signs, dormant channels, logits)"
	@echo "make tfmot-venv            $(TFMOT_VENV): TF-MOT + tf_keras peer for the accuracy table"
	@echo "make notebooks             write examples/*.ipynb from examples/notebooks/*.py (jupytext)"
	@echo "make test-notebooks        execute examples/*.ipynb with small settings"

venv: $(STAMP)

# Re-run pip only when the packaging files change.
$(STAMP): setup.py pyproject.toml
	@test -n "$(PYTHON)" || { echo "No python3.11/python3 found; install Python >= 3.11." >&2; exit 1; }
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --upgrade pip
	$(VENV_PY) -m pip install -e '.[$(EXTRAS)]'
	@touch $@

tflrt-venv: $(TFLRT_STAMP)

$(TFLRT_STAMP):
	@test -x $(TFLRT_VENV)/bin/python || $(PYTHON) -m venv $(TFLRT_VENV)
	$(TFLRT_VENV)/bin/python -m pip install --upgrade pip
	$(TFLRT_VENV)/bin/python -m pip install "numpy<2" "tflite-runtime==2.14.0"
	@touch $@

data:
	@if [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		echo "Fashion-MNIST found in $(FASHION_MNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
		echo "Installing dataset-fashion-mnist with apt-get..."; \
		$$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; \
	else \
		echo "WARNING: $(FASHION_MNIST_DIR) is missing and apt-get is unavailable;"; \
		echo "         keras_sparse.datasets will try keras.datasets (network) instead."; \
	fi

lint: venv
	$(VENV_PY) -m ruff check .

test: venv tflrt-venv data
	$(VENV_PY) -m pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The edit loop (<= 5 min): one case per parametrized test, no end-to-end scripts.
test-fast: venv tflrt-venv data
	$(VENV_PY) -m pytest -q -m "not slow and not full" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# Clear the default `-m "not slow"` from pyproject.toml.
test-all: venv tflrt-venv data
	$(VENV_PY) -m pytest -q -o addopts="" $(PYTEST_ARGS)

demo: venv data
	$(VENV_PY) examples/demo.py

demo-quick: venv data
	$(VENV_PY) examples/demo.py --quick

bench-step: venv data
	$(VENV_PY) -m benchmarks.step_time

clean-venv:
	rm -rf $(VENV) $(TFLRT_VENV)

tfmot-venv: $(TFMOT_STAMP)

$(TFMOT_STAMP):
	@test -x $(TFMOT_VENV)/bin/python || $(PYTHON) -m venv $(TFMOT_VENV)
	$(TFMOT_VENV)/bin/python -m pip install --upgrade pip
	$(TFMOT_VENV)/bin/python -m pip install "tensorflow==$(TF_VERSION)" "tf_keras==$(TF_VERSION)" tensorflow-model-optimization
	@touch $@

# Accuracy table (hours; resumable: rerun to continue). BENCH_ARGS=... to narrow it.
bench-accuracy: venv data tfmot-venv
	$(VENV_PY) -m benchmarks.accuracy $(BENCH_ARGS)

bench-accuracy-quick: venv data tfmot-venv
	$(VENV_PY) -m benchmarks.accuracy --quick $(BENCH_ARGS)

bench-tflite: venv data
	$(VENV_PY) -m benchmarks.tflite_bench $(BENCH_ARGS)

# On-device DST in LiteRT and NeurRev's edge-training claim (hours; resumable).
bench-on-device-dst: venv data
	$(VENV_PY) -m benchmarks.on_device_dst $(BENCH_ARGS)

# On-device train step of a Dense-heavy net: sparse compute vs dense (minutes).
bench-sparse-step: venv
	$(VENV_PY) -m benchmarks.sparse_train_step $(BENCH_ARGS)

# Chase vs RigL vs dense: accuracy, LiteRT latency, bytes, RSS (hours; resumable).
bench-chase: venv data
	$(VENV_PY) -m benchmarks.chase_speed $(BENCH_ARGS)

bench-on-device: venv
	$(VENV_PY) -m benchmarks.on_device_train $(BENCH_ARGS)

# Cost table (docs/benchmark_protocol.md): runs the step-time parts (TF-MOT peer in
# $(TFMOT_VENV)), reads dst_overhead.json and tflite_bench.json.
# BENCH_ARGS="--quick", "--only step peer", "--from-results", "--run-latency".
bench-cost: venv data tfmot-venv
	KERAS_SPARSE_TFMOT_PYTHON=$${KERAS_SPARSE_TFMOT_PYTHON:-$(abspath $(TFMOT_VENV))/bin/python} \
		$(VENV_PY) -m benchmarks.cost $(BENCH_ARGS)

quickstart: venv data
	$(VENV_PY) examples/quickstart.py $(EXAMPLE_ARGS)

export-on-device: venv data
	$(VENV_PY) examples/export_and_train_on_device.py $(EXAMPLE_ARGS)

# EXAMPLE_ARGS="--mask lth --sparsity 0.9", "--quick", ...
tost-example: venv data
	$(VENV_PY) examples/tost_on_fixed_mask.py $(EXAMPLE_ARGS)

# NeurRev's relaxation p x update interval, RigL as the reference (resumable).
bench-neurrev: venv data
	$(VENV_PY) -m benchmarks.neurrev_sweep $(BENCH_ARGS)

bench-dormant: venv data
	$(VENV_PY) -m benchmarks.dormant_itop $(BENCH_ARGS)

# ToST per-tweak breakdown and schedule sweep (resumable). BENCH_ARGS=... to change the budget.
bench-tost: venv data
	$(VENV_PY) -m benchmarks.tost_ablation --sweep $(BENCH_ARGS)

bench-pai: venv data
	$(VENV_PY) -m benchmarks.pai_diagnostics $(BENCH_ARGS)

# examples/<name>.ipynb from its jupytext source examples/notebooks/<name>.py
# (the .py wins; the .ipynb keeps its cell ids and outputs).
notebooks: venv
	@for src in examples/notebooks/*.py; do \
		$(VENV_PY) -m jupytext --update --to ipynb -o "examples/$$(basename "$$src" .py).ipynb" "$$src" || exit 1; \
	done

# Executes the notebooks with small settings (KERAS_SPARSE_NOTEBOOK_QUICK=1).
test-notebooks: venv data
	$(VENV_PY) -m pytest -q -o addopts="" tests/test_examples_notebooks.py
