# virtio-pm-harness: the entry points.
#   make test-arm64   set up what is missing, then run a matrix (matrices/$(MATRIX).yaml):
#                     by default the embedded kernels (Debian linux-source-6.12, the LTS,
#                     and the newest linux-source-7.2, the series' era) without and with
#                     the v9 design, s2idle + pm_test + hibernation on QEMU virt;
#                     MATRIX=defects runs every injected defect and error path on both
#   make check        the test suite (unit tests on captured logs + end-to-end guest tests)
#   make setup        host packages (apt), the Python venv, and the cached downloads
#                     (SETUP_ARGS="--tree debian-7.2": only that kernel tree, as CI build jobs do)
#   make setup-run    only what booting prebuilt kernels needs (QEMU, the venv): CI cell jobs
#   make bench        speed and size figures into bench.json (a script, not a test; COLD=1: cold too)

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The matrix run by test-arm64: a name in matrices/ or a path to a matrix file.
MATRIX ?= default
OUT ?= results/test-arm64/$(notdir $(basename $(MATRIX)))
HARNESS_ARGS ?=
# Arguments of `harness setup` in make setup (e.g. --tree debian-7.2).
SETUP_ARGS ?=
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages of the host toolchain (apt-get install; the guest's arm64
# packages are only downloaded, by `harness setup`, into the harness cache),
# headless chromium, in which the tests look at the HTML report, and LAVA's
# schema and dispatcher, with which exported lab jobs are validated and run.
HOST_PACKAGES := gcc-aarch64-linux-gnu qemu-system-arm ccache bc bison flex cpio kmod \
	libssl-dev libelf-dev git make gcc libc6-dev python3-venv ca-certificates \
	chromium fonts-dejavu-core lava-common lava-dispatcher
# What a job that only boots prebuilt kernels (harness matrix --prebuilt) needs.
RUN_PACKAGES := qemu-system-arm git make python3-venv ca-certificates

.PHONY: setup setup-run host-packages venv test-arm64 test-defects check check-unit bench clean-results

# Last, harness doctor checks the result: a table of what is there, the command that fixes
# each gap, and exit 2 (make stops) when something required is still missing.
setup: host-packages venv
	$(PY) -m harness setup $(SETUP_ARGS)
	$(PY) -m harness doctor

setup-run:
	$(MAKE) host-packages HOST_PACKAGES="$(RUN_PACKAGES)"
	$(MAKE) venv

host-packages:
	@missing=$$(for p in $(HOST_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make setup: installing" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test-arm64: setup
	rm -rf $(OUT)
	$(PY) -m harness matrix $(MATRIX) --out $(OUT) $(HARNESS_ARGS)

# Every injected defect and error path (matrices/defects.yaml).
test-defects:
	$(MAKE) test-arm64 MATRIX=defects

check: setup
	$(PY) -m pytest -v -rs --durations=25 $(PYTEST_ARGS)

check-unit: venv
	$(PY) -m pytest -v -m 'not e2e' $(PYTEST_ARGS)

# Speed and size figures (bench/bench.py) on a warm cache, about 5 minutes: the parser's
# throughput and memory against sleepgraph, the cache's size by entry, warm runs' cycle cost and
# overhead, the rebuild after a revision switch, the default matrix at the default -j and its
# 6.12 virt-mmio s2idle and pm_test cells at -j1/-j2, the harness's RSS and CPU over the matrix.
# COLD=1 adds a cold setup and matrix in an empty cache (cold builds; tens of minutes).
BENCH_ARGS ?= --run --switch --sleepgraph --matrix $(if $(COLD),--cold)
bench: venv
	$(PY) bench/bench.py $(BENCH_ARGS)

clean-results:
	rm -rf results
