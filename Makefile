# The two quick-start commands: `make demo` and `make test`. Each sets up its own
# virtual environment (idempotently: it is rebuilt only when the build inputs change)
# and then runs.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUILD_INPUTS := pyproject.toml setup.py $(wildcard hami/_core/*.pyx hami/_core/*.pxd native/fakenvml/*.c native/fakenvml/*.h)
PYTEST_WORKERS ?= 2

.PHONY: demo test lint unit bench setup clean native kube kube-or-skip

setup: $(STAMP)

$(STAMP): $(BUILD_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hami demo

lint: $(STAMP)
	$(BIN)/ruff check hami tests benches
	$(BIN)/lint-imports

unit: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q

test: lint kube-or-skip unit

# etcd, kube-apiserver and kube-scheduler of the release in hack/kube/VERSION, built from the Go
# module proxy into ~/.cache/hami/kube/<version>/bin (HAMI_KUBE_CACHE moves it); instant when built.
kube:
	hack/kube/build.sh

# `make test` builds them when missing, but a failed build (no Go, no network with a cold module
# cache) does not stop the suite: tests/realkube then skip, each naming the build log.
# HAMI_REQUIRE_REAL_KUBE=1 turns those skips into failures.
kube-or-skip:
	@hack/kube/build.sh || echo "*** make test: real Kubernetes binaries NOT built; tests/realkube will SKIP (log above)"

bench: $(STAMP)
	mkdir -p bench-results
	$(BIN)/python -m pytest benches --benchmark-only --benchmark-json=bench-results/bench.json -q

# the simulated libnvidia-ml alone (the package build does the same)
native:
	$(PYTHON) setup.py build_ext --inplace -q

clean:
	rm -rf $(VENV) build hami/_core/*.so hami/_core/*.c hami/sim/_lib
