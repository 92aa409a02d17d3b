# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# The installed marker is rewritten whenever pyproject.toml changes, so a new dependency
# reaches an existing venv as well as a fresh one.
STAMP := $(VENV)/.installed

.PHONY: run test test-all test-slurm lint setup clean benchmark

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	# torch is pinned in pyproject.toml (2.14.1 / torchvision 0.29.1) so pip takes the local wheels.
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --workflow-profile profiles/default

# Everything but the SLURM tests and the slow full-demo run; the tiny end-to-end workflow
# test still covers every stage.
test: $(STAMP)
	$(BIN)/pytest -m "not slurm and not slow" tests

test-all: $(STAMP)
	$(BIN)/pytest tests

test-slurm: $(STAMP)
	$(BIN)/pytest -m slurm tests

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

benchmark: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf results demo_data .snakemake report.html
