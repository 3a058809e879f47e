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

.PHONY: help setup run report test rehearse pull paper-dry-run lint clean-venv lock

setup: $(STAMP) ## create .venv from envs/requirements.lock (only when the lock or pyproject.toml changed)

$(STAMP): envs/requirements.lock pyproject.toml
	@echo "== creating $(VENV) from envs/requirements.lock"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	set -o pipefail; $(BIN)/python -m pip install -q -r envs/requirements.lock 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (irrepro)" >/dev/null
	$(BIN)/irrepro check-params
	$(BIN)/python -m irrepro.precompile  # numba-compiles ranx's kernels into its cache (else ~30 s in the first evaluations)
	touch $(STAMP)

# --keep-going: a failed job stops only the jobs that need its output; every other job still
# runs, and the failed rules (with their logs) are listed at the end (exit status non-zero).
run: setup ## run the mini study end to end (keeps going past a failed job, lists failures at the end)
	@profile=$$($(BIN)/python -c "import yaml;print(yaml.safe_load(open('params.yaml'))['profile'])"); \
	out=logs/$$profile/make-run.log; mkdir -p logs/$$profile; \
	set -o pipefail; $(BIN)/snakemake --cores $(CORES) --keep-going 2>&1 | tee $$out; status=$$?; \
	if [ $$status -ne 0 ]; then \
	  echo; echo "== make run: FAILED (every job that did not need a failed one has run):"; \
	  failed=$$(awk '/^Error in rule /{if(r)print "  - " r; r=$$4; sub(/:$$/,"",r); next} \
	                 r && /^    log: /{print "  - " r " (log: " $$2 ")"; r=""} END{if(r)print "  - " r}' $$out); \
	  echo "$${failed:-  (no failed job recorded: see the messages above)}"; \
	  echo "   whole output: $$out"; exit $$status; \
	fi; \
	echo; cat results/$$profile/report.md

# The HTML report of a finished run: result pages + provenance (rule report_pages), then
# Snakemake's report with every figure, page and caption -> results/<profile>/report.html
report: setup ## HTML report of a finished run (results/<profile>/report.html)
	$(BIN)/snakemake --cores $(CORES) report_pages
	$(BIN)/snakemake --report results/$$($(BIN)/python -c "import yaml;print(yaml.safe_load(open('params.yaml'))['profile'])")/report.html report_pages

# Two pytest-xdist workers, a module per worker at a time (tests/conftest.py): most tests use one
# core. `.venv/bin/pytest tests/test_x.py` runs one module in one process.
TEST_WORKERS ?= 2
test: setup ## run the test suite
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# Dress rehearsal of the paper route on CPU (README "Rehearsal"): the paper profile with the sizes of
# workflow/rehearsal.yaml, tiny hub-format checkpoints in a local hub cache (offline), upstream-format
# data files behind the download stage's mirrors, SynTOD's LLM over HTTP from a server on 127.0.0.1
# (started here, stopped on exit; the dummy key lives in this recipe's environment only), then
# `irrepro tools rehearsal-check`. Its numbers check code paths only.
REHEARSAL_CACHE := .cache/rehearsal
REHEARSAL_FAIL_EVERY ?= 7
REHEARSAL_FACTOR ?= 10
rehearse: setup ## dress rehearsal of the paper route on CPU, sizes shrunk (~17 min on 2 cores; README "Rehearsal")
	@set -euo pipefail; mkdir -p logs/rehearsal results/rehearsal $(REHEARSAL_CACHE); \
	export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_CACHE=$(abspath $(REHEARSAL_CACHE))/hub; \
	export OPENAI_API_KEY=rehearsal-dummy-key IRREPRO_LLM_SEND_META=1; \
	test -s $(REHEARSAL_CACHE)/mirror/sources.rehearsal.yaml -a -d $(REHEARSAL_CACHE)/hub \
	  || $(BIN)/irrepro tools rehearsal-fixtures --profile rehearsal --hub-cache $(REHEARSAL_CACHE)/hub \
	       --mirror-out $(REHEARSAL_CACHE)/mirror --log logs/rehearsal/fixtures.log >/dev/null; \
	rm -f $(REHEARSAL_CACHE)/llm.url; \
	$(BIN)/irrepro tools llm-serve --profile rehearsal --fail-every $(REHEARSAL_FAIL_EVERY) --key-env OPENAI_API_KEY \
	  --url-file $(REHEARSAL_CACHE)/llm.url --stats logs/rehearsal/llm-serve.json --log logs/rehearsal/llm-serve.log & \
	server=$$!; trap 'kill $$server 2>/dev/null || true' EXIT; \
	for i in $$(seq 150); do test -s $(REHEARSAL_CACHE)/llm.url && break; sleep 0.2; done; \
	export OPENAI_BASE_URL=$$(cat $(REHEARSAL_CACHE)/llm.url); \
	$(BIN)/snakemake --cores $(CORES) --config profile=rehearsal 2>&1 | tee logs/rehearsal/snakemake.log; \
	$(BIN)/irrepro tools rehearsal-check --profile rehearsal --snakemake-log logs/rehearsal/snakemake.log \
	  --factor $(REHEARSAL_FACTOR) --report results/rehearsal/report.md --log logs/rehearsal/check.log >/dev/null; \
	cat results/rehearsal/report.md

# Restore the published outputs instead of computing them: dvc pull from the default remote
# (../irrepro-dvc-remote) or REMOTE=<name>, then date them so Snakemake sees them up to date.
pull: setup ## restore published outputs from the DVC remote (REMOTE=<name>), dated for Snakemake
	$(BIN)/irrepro tools dvc-pull $(if $(REMOTE),-r $(REMOTE))

paper-dry-run: setup ## list the paper profile's jobs (snakemake -n), no network
	$(BIN)/snakemake -n --config profile=paper

lint: setup ## ruff check, snakefmt --check, snakemake --lint, dvc.yaml generated from the rules (python -m irrepro.dvcgen --check)
	$(BIN)/ruff check workflow tests benchmarks notebooks/make_notebooks.py
	$(BIN)/snakefmt --check Snakefile workflow/rules/
	$(BIN)/snakemake --lint
	$(BIN)/python -m irrepro.dvcgen --check

clean-venv: ## delete .venv
	rm -rf $(VENV)

# Re-resolve envs/requirements.in into envs/requirements.lock (needs the package registry).
lock: ## re-resolve envs/requirements.in into envs/requirements.lock (needs the registry)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade "pip>=24"
	.lock-venv/bin/python -m pip install -q -r envs/requirements.in
	(echo "# Generated by 'make lock' from envs/requirements.in (Python 3.11, CPU torch). Do not edit by hand."; \
	 .lock-venv/bin/python -m pip freeze --exclude-editable) > envs/requirements.lock
	rm -rf .lock-venv

help: ## list the targets
	@echo "make <target>   (CORES=$(CORES); the first run builds .venv)"
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## /{printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "then: source $(VENV)/bin/activate; irrepro --help (start here), irrepro --print-completion bash"
