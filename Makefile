# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
RAGPERF := $(VENV)/bin/ragperf
PROFILE ?= demo
LAB_PORT ?= 8888
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup demo test lint lab lab-up lab-down lab-status bench clean

setup:
	@bash scripts/setup.sh

# The whole investigation on the lab: every phase notebook in one run directory, then the report.
demo: setup
	$(RAGPERF) lab up --profile $(PROFILE)
	$(RAGPERF) run all --profile $(PROFILE)
	$(RAGPERF) report

test: setup
	$(VENV)/bin/ruff check lib lab tests benchmarks
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check lib lab tests benchmarks
	$(VENV)/bin/ruff format --check lib lab tests benchmarks

# JupyterLab on the workbench (the phase notebooks beside it). It refuses root without --allow-root; as root
# (CI, containers) it is given.
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
		--no-browser --MappingKernelManager.default_kernel_name=ragperf \
		--LabApp.default_url=/lab/tree/workbench.ipynb $(ALLOW_ROOT)

lab-up: setup
	$(RAGPERF) lab up --profile $(PROFILE)

lab-down:
	$(RAGPERF) lab down

lab-status:
	$(RAGPERF) lab status

bench: setup
	$(PY) benchmarks/llm_simulator_bench.py
	$(PY) benchmarks/cache_hit_overhead.py

clean: lab-down
	rm -rf .lab
