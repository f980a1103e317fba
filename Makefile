# Two commands: `make demo` and `make test`. Each creates or refreshes .venv on its own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-zoo lint docs format bench clean

# uv installs the same pinned wheels as pip, in parallel (about 45 s against 2 min 15 s for
# torch's CUDA wheels); where uv cannot be had, pip does it.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if $(BIN)/python -m pip install --quiet -c constraints.txt uv && \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt torch torchvision && \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e ".[dev,docs]"; \
	then :; else \
	  $(BIN)/python -m pip install --quiet -c constraints.txt torch torchvision && \
	  $(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,docs]"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/captum-layerinf demo

lint: $(STAMP)
	$(BIN)/ruff check captum_layerinf tests benchmarks scripts tutorials
	$(BIN)/ruff format --check captum_layerinf tests benchmarks scripts tutorials
	$(BIN)/python -m mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format captum_layerinf tests benchmarks scripts tutorials
	$(BIN)/ruff check --fix captum_layerinf tests benchmarks scripts tutorials

# pytest-xdist spreads the tests over the cores (one torch thread per worker, tests/conftest.py);
# lint and docs run side by side first.
WORKERS ?= auto

test: $(STAMP)
	$(MAKE) --no-print-directory -j2 -O lint docs
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal

# The API reference from the docstrings; any Sphinx warning is an error.
docs: $(STAMP)
	rm -rf docs/_build
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

# The inner loop: everything but the tests marked slow (subprocesses, solvers, tutorials).
test-fast: lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal -m "not slow and not zoo"

# The torchvision architecture matrix alone (every model, every strategy; part of `make test`).
test-zoo: $(STAMP)
	$(BIN)/python -m pytest -m zoo tests/influence/test_zoo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/exact_vs_captum.py
	$(BIN)/python benchmarks/tracin_vs_captum.py
	$(BIN)/python benchmarks/fidelity.py --small
	$(BIN)/python benchmarks/ekfac_vs_kronfluence.py
	$(BIN)/python benchmarks/vgg16_memory.py
	$(BIN)/python benchmarks/transforms_speed.py
	$(BIN)/python benchmarks/clrp_evaluation.py
	$(BIN)/python benchmarks/store_resume.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .grimp_cache .import_linter_cache *.egg-info docs/_build
