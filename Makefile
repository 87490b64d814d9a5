# `make demo` and `make test` do all the set-up on a fresh machine (a .venv in the repo).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR := logs/demo/latest
export WANDB_MODE ?= offline

.PHONY: install demo test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CUDA builds used on our GPU machines (they run on CPU too)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -rf $(DEMO_DIR)
	$(PY) train.py experiment=demo hydra.run.dir=$(DEMO_DIR)
	$(PY) -m codec.roundtrip --codec $(DEMO_DIR)/codec --image .cache/skimage_samples/val/coffee.png --out-dir $(DEMO_DIR)/roundtrip
	@echo "checkpoints:     $(DEMO_DIR)/checkpoints/last.ckpt"
	@echo "codec package:   $(DEMO_DIR)/codec"
	@echo "W&B offline run: $$(ls -d $(DEMO_DIR)/wandb/offline-run-*)  (wandb sync it, or: wandb leet inspect --summary <dir>)"

test: install
	$(PY) -m pytest -m "not gpu" -q

test-fast: install
	$(PY) -m pytest -m "not gpu and not slow" -q

clean:
	rm -rf logs .cache
