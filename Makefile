# `make demo` and `make test` do all the set-up on a fresh machine (a .venv in the repo).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR := logs/demo
export WANDB_MODE ?= offline

.PHONY: install demo test test-fast table tables clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CUDA builds used on our GPU machines (they run on CPU too)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The method end to end on photos shipped inside installed packages, on the CPU (training/demo.py):
# a stand-in for SD 2.1 and stage 1 at three λ in parallel, stage 2 and stage 3 on the stand-in,
# then every codec beside JPEG and WebP on held-out photos through real files, and a summary.
demo: install
	$(PY) -m training.demo --out $(DEMO_DIR)

# One of the papers' tables as its whole experiment graph, in miniature on this machine's CPU
# (tables/, conf/scale/miniature.yaml): `make table T=gan_weight` → logs/tables/gan_weight.md (.csv, .tex).
# Toy numbers, and every file says so. `make tables` runs all ten as one graph (each shared stage once).
T ?= gan_weight
table: install
	$(PY) -m tables $(T) scale=miniature executor.parallel=2

tables: install
	$(PY) -m tables all scale=miniature executor.parallel=2

# two workers (pytest-xdist): most slow tests wait on subprocesses, DDP rendezvous or signals
test: install
	$(PY) -m pytest -m "not gpu" -q -n 2

test-fast: install
	$(PY) -m pytest -m "not gpu and not slow" -q

clean:
	rm -rf logs .cache
