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

# GPU figures (CUDA + CIFAR-10 in $$SAMREPRO_DATA or ./data): the checkpoints (skipped when done), the sweeps
# through Hydra (any launcher; finished runs are skipped), then their CSVs, figures and CLAIMS.md.
figs-gpu: $(STAMP)
	$(BIN)/samrepro task=cifar10 stage=adversarial_init
	$(BIN)/samrepro task=cifar10 stage=fullbatch_init
	$(BIN)/samrepro -m experiment=dai_fig3
	$(BIN)/samrepro -m experiment=dai_fig5
	$(BIN)/samrepro -m experiment=dai_fig8
	$(BIN)/samrepro-figs --gpu

bench: $(STAMP)
	$(BIN)/python scripts/bench_step.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean-runs:
	rm -rf runs
