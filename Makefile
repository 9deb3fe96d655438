# virtio-pm-harness: the entry points.
#   make test-arm64   set up what is missing, then build, boot and suspend/resume the
#                     embedded default kernel (Debian linux-source-6.12) on QEMU virt
#   make check        the test suite (unit tests on captured logs + end-to-end guest tests)
#   make setup        host packages (apt), the Python venv, and the cached downloads

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= results/test-arm64
# Revisions run by test-arm64: baseline-6.12 is the tree without any series;
# any other name is a directory patches/NAME applied with --series.
REVISIONS ?= baseline-6.12 v9-backport-6.12
HARNESS_ARGS ?= --hibernate-cycles 1
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages of the host toolchain (apt-get install; the guest's arm64
# packages are only downloaded, by `harness setup`, into the harness cache).
HOST_PACKAGES := gcc-aarch64-linux-gnu qemu-system-arm ccache bc bison flex cpio kmod \
	libssl-dev libelf-dev git make gcc libc6-dev python3-venv ca-certificates

DEFECTS := $(sort $(patsubst patches/%/defect.yaml,%,$(wildcard patches/defects/*/defect.yaml)))

.PHONY: setup host-packages venv test-arm64 test-defects check check-unit clean-results

setup: host-packages venv
	$(PY) -m harness setup

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
	$(PY) -m pip install -q -e .
	touch $@

test-arm64: setup
	@rc=0; for rev in $(REVISIONS); do \
		series=; [ "$$rev" = baseline-6.12 ] || series="--series patches/$$rev"; \
		echo "=== $$rev"; \
		$(PY) -m harness run $$series --out $(OUT)/$$rev $(HARNESS_ARGS); r=$$?; \
		[ $$r -gt $$rc ] && rc=$$r; \
	done; exit $$rc

# Every injected defect, each expected to be caught by the checks its expect.yaml names.
test-defects:
	$(MAKE) test-arm64 REVISIONS="$(DEFECTS)" OUT=$(OUT)-defects HARNESS_ARGS="--rtc-cycles 2 --pm-test-cycles 1"

check: setup
	$(PY) -m pytest -v -rs $(PYTEST_ARGS)

check-unit: venv
	$(PY) -m pytest -v -m 'not e2e' $(PYTEST_ARGS)

clean-results:
	rm -rf results
