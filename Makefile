# Two commands matter on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data/$(PRESET)
PRESET ?= medium
SEED ?= 7
TRIALS ?= 4

.PHONY: install demo test test-all lint format bench bento-requirements clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m safetyml.demo --data $(DATA) --preset $(PRESET) --seed $(SEED) --trials $(TRIALS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests serving benchmarks
	$(BIN)/ruff format --check src tests serving benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix src tests serving benchmarks
	$(BIN)/ruff format src tests serving benchmarks

# serving/requirements.txt (the bento's pins) from pyproject.toml + constraints.txt; rerun after changing either
bento-requirements: $(STAMP)
	$(BIN)/python serving/make_requirements.py

clean:
	rm -rf $(VENV) .safetyml data .pytest_cache .ruff_cache
