# etcd-backup-agent: newcomer entry points. `make demo` and `make test` install what they need.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PKGS := age zstd prometheus lintian binutils python3-venv systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv demo test lint typecheck pytest deb bench clean config-docs

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)

venv: $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'

setup: apt venv

demo: setup
	$(BIN)/python tests/demo.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q

# after changing a config key (agent/etcd_backup_agent/config_schema.py)
config-docs:
	PYTHONPATH=agent $(BIN)/python -m etcd_backup_agent.config_reference docs/config.md config/example.toml

deb: setup
	bash packaging/build-deb.sh

clean:
	rm -rf dist build *.egg-info agent/*.egg-info .pytest_cache .mypy_cache
