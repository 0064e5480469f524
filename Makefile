# Each target creates .venv (torch 2.14.1 / torchvision 0.29.1 install from this machine's disk) if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test figs figs-gpu bench lint clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

figs: $(STAMP)
	$(BIN)/samrepro-figs

lint: $(STAMP)
	$(BIN)/ruff check .

clean-runs:
	rm -rf runs
