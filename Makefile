# Two commands: `make demo` and `make test`. Each creates or refreshes .venv on its own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-zoo lint docs format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,docs]"
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

test: lint docs
	$(BIN)/python -m pytest

# The API reference from the docstrings; any Sphinx warning is an error.
docs: $(STAMP)
	rm -rf docs/_build
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

# The inner loop: everything but the tests marked slow (subprocesses, solvers, tutorials).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow and not zoo"

# The torchvision architecture matrix: every model, every layer, every strategy (long on a CPU).
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
