# `make demo` and `make test` do all the set-up on a fresh machine (a .venv in the repo).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR := logs/demo
DEMO_PHOTO := .cache/skimage_samples/val/coffee.png
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

# Stage 1 → 2 → 3 on the embedded photos (small HiFiC, tiny SD-class backbone), each stage
# starting from the previous one's checkpoint, then a photo through the full decode path.
demo: install
	rm -rf $(DEMO_DIR)
	$(PY) train.py experiment=demo hydra.run.dir=$(DEMO_DIR)/stage1
	$(PY) -m codec.roundtrip --codec $(DEMO_DIR)/stage1/codec --image $(DEMO_PHOTO) --out-dir $(DEMO_DIR)/stage1/roundtrip
	$(PY) train.py experiment=demo_stage2 hydra.run.dir=$(DEMO_DIR)/stage2 model.init_from=$(DEMO_DIR)/stage1/checkpoints/last.ckpt
	$(PY) train.py experiment=demo_stage3 hydra.run.dir=$(DEMO_DIR)/stage3 model.init_from=$(DEMO_DIR)/stage2/checkpoints/last.ckpt
	$(PY) -m codec.roundtrip --codec $(DEMO_DIR)/stage3/codec --image $(DEMO_PHOTO) --out-dir $(DEMO_DIR)/stage3/roundtrip
	$(PY) evaluate.py "+codecs.HiFiC-small=[$(DEMO_DIR)/stage1/codec]" "+codecs.SODEC-tiny=[$(DEMO_DIR)/stage3/codec]" \
	  dataset=folder dataset.root=.cache/skimage_samples/val dataset.name=samples \
	  "metrics=[psnr,ms_ssim,ms_ssim_y]" "baselines=[jpeg]" hydra.run.dir=$(DEMO_DIR)/evaluation
	@for stage in stage1 stage2 stage3; do \
	  echo "$$stage: checkpoint $(DEMO_DIR)/$$stage/checkpoints/last.ckpt, codec $(DEMO_DIR)/$$stage/codec, W&B offline run $$(ls -d $(DEMO_DIR)/$$stage/wandb/offline-run-*)"; \
	done
	@echo "(wandb sync <run dir> uploads a run; wandb leet inspect --summary <run dir> reads it here)"

test: install
	$(PY) -m pytest -m "not gpu" -q

test-fast: install
	$(PY) -m pytest -m "not gpu and not slow" -q

clean:
	rm -rf logs .cache
