# Two commands on a fresh machine: `make run` and `make test`. Everything installs into
# project-local folders (.venv, .virtufin/bootstrap); nothing is installed system-wide.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := $(shell sed -n 's/^UV_VERSION=//p' versions.env)
BOOT := .virtufin/bootstrap
UV := $(BOOT)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.virtufin-synced
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_LINK_MODE := copy

.PHONY: setup run test lint bench ui proto native test-tools clean
.DEFAULT_GOAL := run

$(UV): versions.env
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	touch $(UV)

$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --python $(PYTHON) --quiet
	touch $(STAMP)

proto: $(STAMP)
	$(PY) -m virtufin.proto.build

native:
	$(MAKE) -s -C native

setup: $(STAMP) proto native

run: setup
	$(VENV)/bin/virtufin run $(ARGS)

# Tools the tests drive from Debian's packages: `nix` for the flake's evaluation tests (nixpkgs
# is never fetched) and Chromium to open the HTML report as a person would.
test-tools:
	@missing=""; command -v nix >/dev/null || missing="$$missing nix-bin"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "make: missing$$missing; the tests that need them will say how to install" >&2; fi; \
	fi

test: setup test-tools
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check virtufin pipelines services workers tests bench
	$(VENV)/bin/ruff check virtufin pipelines services workers tests bench
	$(VENV)/bin/mypy virtufin

bench: setup
	$(PY) -m bench

ui: setup
	$(VENV)/bin/virtufin ui

clean:
	rm -rf $(VENV) .virtufin virtufin/proto/gen
	$(MAKE) -s -C native clean
