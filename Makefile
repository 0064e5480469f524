# Each target creates .venv if missing, with the versions of constraints.txt (what the tests and results were made with).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test figs figs-gpu figs-gpu-quick gpu-check dai_fig3 dai_fig5 dai_fig8 dai_fig5_quick dai_fig8_quick \
	bench lint clean-runs

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

figs: $(STAMP)
	$(BIN)/samrepro-figs

# GPU figures (CUDA + CIFAR-10 in $$SAMREPRO_DATA or ./data). Two profiles (README, "GPU figures"):
#   make figs-gpu        paper-length: dai_fig3, then stage adversarial_init + dai_fig5, stage fullbatch_init
#                        + dai_fig8 (≈ 4.5 h on one H100, ≤ 6 h at the stage caps: an estimate from FLOPs)
#   make figs-gpu-quick  all three figures and their claims in ≈ 28 min on one H100 (≤ 35 min at the caps; estimate)
# One target per figure (fig3 first: it needs no checkpoint); each checkpoint is a file made by its stage
# (finished phases are skipped). `make -k` goes on past a failing figure. Without CUDA the targets refuse
# in one line; FORCE_CPU=1 runs them on the CPU anyway (a CPU-year at paper length).
figs-gpu: dai_fig3 dai_fig5 dai_fig8
figs-gpu-quick: dai_fig3 dai_fig5_quick dai_fig8_quick

gpu-check: $(STAMP)
	@$(BIN)/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || [ -n "$(FORCE_CPU)" ] || \
	  { echo "make: no CUDA GPU here; the GPU figures take GPU hours (set FORCE_CPU=1 to run them on the CPU)" >&2; exit 2; }

dai_fig3: gpu-check
	$(BIN)/samrepro-figs --gpu --claims dai_fig3

dai_fig5: gpu-check checkpoints/adversarial_init.pt
	$(BIN)/samrepro-figs --gpu --claims dai_fig5

dai_fig8: gpu-check checkpoints/fullbatch_init.pt
	$(BIN)/samrepro-figs --gpu --claims dai_fig8

dai_fig5_quick: gpu-check checkpoints/adversarial_init_quick.pt
	$(BIN)/samrepro-figs --gpu --claims dai_fig5_quick

dai_fig8_quick: gpu-check checkpoints/fullbatch_init_quick.pt
	$(BIN)/samrepro-figs --gpu --claims dai_fig8_quick

# conf/stage/<name>.yaml writes checkpoints/<name>.pt
checkpoints/%.pt: | gpu-check
	$(BIN)/samrepro task=cifar10 stage=$* progress=false

# ms per GD and SAM step, ours and pytorch-optimizer's (the bench extra; its rows are skipped if it does not
# install), on generated CIFAR-shaped data, a row as it is measured: on CUDA resnet18, cnn_tanh and fcn_relu
# at batch 128, on a CPU fcn_relu and cnn_tanh at batch 32 (~20 s). More: make bench BENCH_ARGS="--models resnet18"
BENCH := $(VENV)/.bench
$(BENCH): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[bench]" && touch $(BENCH) || \
	  echo "make: pytorch-optimizer did not install; bench_step.py measures samrepro only" >&2

bench: $(BENCH)
	$(BIN)/python scripts/bench_step.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean-runs:
	rm -rf runs
