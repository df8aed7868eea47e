# Every target that needs the environment depends on the install stamp, so on a fresh clone
# `make train` and `make test` install what is missing first. `make install` installs Python
# packages into .venv only; the system packages that only the test suite needs (ffmpeg, SLURM,
# chromium) are `make install-test-system`, which `make test` runs first and which says what it
# installs before asking for sudo (it asks for nothing when they are there).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
EXP ?= tiny_gr1
ARGS ?=
NPROC ?= 1
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29500

.PHONY: install install-test-system train dryrun list test test-fast lint generate eval \
	clean-venv sweep slurm

install: $(STAMP)

install-test-system:
	@bash launch/install_system.sh

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch that lies on this disk; no torchvision
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# A process killed by SIGKILL (bash: 137) cannot say why itself; on a training box that is
# usually the kernel's out-of-memory killer, so say that in its place.
KILLED := error: the training process was killed by SIGKILL, what the kernel out-of-memory \
	killer sends when host memory runs out (dmesg says whether it did): lower data.num_workers \
	or data.batch_size, or give the job more host memory, then run the same command again to \
	resume from the last checkpoint.

train: $(STAMP)
ifeq ($(NPROC)$(NNODES),11)
	$(PY) -m launch.train "$(EXP)" $(ARGS) || { code=$$?; [ $$code -ne 137 ] || \
	  echo '$(KILLED)' >&2; exit $$code; }
else
# One process checks the config and the files first: a mistake is then one message, not every
# rank's plus torchrun's own traceback.
	@$(PY) -m launch.train $(EXP) $(ARGS) --check >/dev/null
	$(VENV)/bin/torchrun --nproc_per_node=$(NPROC) --nnodes=$(NNODES) --node_rank=$(NODE_RANK) \
	  --master_addr=$(MASTER_ADDR) --master_port=$(MASTER_PORT) -m launch.train "$(EXP)" $(ARGS)
endif

# A sweep in Hydra syntax, e.g. make sweep EXP=tiny_gr1 ARGS="'optim.lr=1e-3,2e-3' --dry"
sweep: $(STAMP)
	$(PY) -m launch.sweep $(EXP) $(ARGS)

# One SLURM job, e.g. make slurm EXP=groot_gr1_480 ARGS='--nodes 4 --gpus-per-node 8 --dry'
slurm: $(STAMP)
	$(PY) -m launch.slurm $(EXP) $(ARGS)

dryrun: $(STAMP)
	$(PY) -m launch.train "$(EXP)" $(ARGS) --dryrun

list: $(STAMP)
	@$(PY) -m launch.train --list

# The whole suite (CI runs this). test-fast leaves out the tests marked slow (subprocesses,
# torchrun, SLURM, Chromium, long runs) and needs no system packages; docs/performance.md has
# both timings.
test: $(STAMP) install-test-system
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow' $(ARGS)

LINT_DIRS := framework experiments launch data_prep tests bench

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)
	$(VENV)/bin/mypy

# With no ARGS: the default tiny job's latest checkpoint on a held-out frame. The guidance
# defaults to what the model was trained for (0 for tiny_gr1, trained without caption dropout;
# 7 otherwise), with or without ARGS.
generate: $(STAMP)
	$(PY) -m framework.inference.video2world $(ARGS)

eval: $(STAMP)
	$(PY) -m framework.eval $(ARGS)

clean-venv:
	rm -rf $(VENV)
