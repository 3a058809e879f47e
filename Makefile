# Two commands do everything on a fresh clone:
#   make run    set up the environment (if needed) and run the mini study end to end
#   make test   set up the environment (if needed) and run the test suite
# Both are idempotent: the venv is rebuilt only when envs/requirements.lock or
# pyproject.toml change, and Snakemake reruns only what is out of date.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
KERNEL := irrepro
STAMP := $(VENV)/.installed
BIN := $(abspath $(VENV))/bin

export PATH := $(BIN):$(PATH)
# Offline mirror of the public data files (CI and the machines here keep it beside the clone).
ifneq ($(wildcard ../shared/data),)
export IRREPRO_DATA_MIRROR ?= $(abspath ../shared/data)
endif

.PHONY: setup run test paper-dry-run lint clean-venv

setup: $(STAMP)

$(STAMP): envs/requirements.lock pyproject.toml
	@echo "== creating $(VENV) from envs/requirements.lock"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r envs/requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (irrepro)" >/dev/null
	$(BIN)/irrepro check-params
	touch $(STAMP)

run: setup
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@cat results/$$($(BIN)/python -c "import yaml;print(yaml.safe_load(open('params.yaml'))['profile'])")/report.md

test: setup
	$(BIN)/python -m pytest

paper-dry-run: setup
	$(BIN)/snakemake -n --config profile=paper

lint: setup
	$(BIN)/snakemake --lint

clean-venv:
	rm -rf $(VENV)
