# The two entry points of the README. Each creates the environment on first use
# (a virtualenv in .venv with the package installed in editable mode) and then:
#   make run    runs the workflow: `snakemake --cores all` with config/config.yaml
#   make test   runs the test suite (in parallel: TEST_WORKERS, below)
#   make rehearsal  runs config/paper.yaml on format-faithful stand-ins, offline (rehearsal/)
# Users of conda can instead `conda env create -f environment.yml` and call
# snakemake / pytest directly.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: run test rehearsal env clean-env

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "backsal needs Python >= 3.11 (found %s); set PYTHON=python3.11" % sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[workflow,test]"
	@touch $@

env: $(BIN)/.installed

# The venv's bin/ goes first on PATH: Snakemake runs the figure notebooks with jupyter-nbconvert.
run: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)

# One pytest-xdist worker per CPU, each given whole test modules (module fixtures such as the
# tiny workflow run once), the end-to-end modules first (tests/conftest.py): on two cores the
# rehearsal and the SLURM runs wait on processes and on the cluster, and the other worker's tests
# use that time. TEST_WORKERS=0 runs the suite in one process, without workers.
TEST_WORKERS ?= logical

test: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The paper's whole DAG on stand-ins (noise images, random weights at the real architectures):
# every rule runs, through datasets.<name>.path, models.<name>.checkpoint and a mirror on 127.0.0.1.
rehearsal: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m backsal.rehearsal --root rehearsal --cores $(if $(filter all,$(CORES)),$$(nproc),$(CORES))

clean-env:
	rm -rf $(VENV)
