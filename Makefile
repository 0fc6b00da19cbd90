# The two quick-start commands: `make demo` and `make test`. Each sets up the virtual
# environment it needs (idempotently: it is rebuilt only when the build inputs change) and
# then runs. `make demo` installs the runtime set and the `sim` extra; `make test` (and
# `make setup`) the `test` extra, which includes `sim` and so serves the demo too.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-sim
BUILD_INPUTS := pyproject.toml setup.py $(wildcard hami/_core/*.pyx hami/_core/*.pxd native/fakenvml/*.c native/fakenvml/*.h)
PYTEST_WORKERS ?= 2

.PHONY: demo test lint unit bench setup clean native kube kube-or-skip

setup: $(STAMP)

# pip prints what it collects and builds; the first build of the engine takes a minute or two
define install
	@echo "==> $(VENV): a virtual environment with pip"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "==> $(VENV): hami[$(1)], building the Cython engine and the simulated NVML"
	$(BIN)/python -m pip install -e '.[$(1)]'
endef

$(STAMP): $(BUILD_INPUTS)
	$(call install,test)
	touch $(STAMP) $(DEMO_STAMP)
	@echo "==> $(VENV) ready (development set: tests, lint, the demo)"

$(DEMO_STAMP): $(BUILD_INPUTS)
	$(call install,sim)
	touch $(DEMO_STAMP)
	@echo "==> $(VENV) ready (the demo's set; make test adds the test tools)"

demo: $(DEMO_STAMP)
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
