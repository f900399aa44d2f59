# `make demo` and `make test` are all a fresh clone needs; both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUNDLE ?= unetr
DATA_DIR ?= data/mni152
CONFIGS := bundles/$(BUNDLE)/configs
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: install data demo test bench leaderboard segment package export label label-install test-label clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

data: install
	$(PY) -m common prepare_data --output_dir $(DATA_DIR)

# The main job: train BUNDLE on the embedded data with the CPU-sized demo override, evaluate it on
# the held-out hemisphere, segment one scan, and say where everything is.
demo: data
	$(PY) -m monai.bundle run --config_file "['$(CONFIGS)/train.json','$(CONFIGS)/demo.json']" --dataset_dir $(DATA_DIR)
	$(PY) -m monai.bundle run --config_file "['$(CONFIGS)/train.json','$(CONFIGS)/demo.json','$(CONFIGS)/evaluate.json']" --dataset_dir $(DATA_DIR)
	$(PY) -m monai.bundle run --config_file "['$(CONFIGS)/inference.json','$(CONFIGS)/demo.json']" --dataset_dir $(DATA_DIR)
	@echo "checkpoint:   bundles/$(BUNDLE)/models/model.pt"
	@echo "tensorboard:  $(VENV)/bin/tensorboard --logdir bundles/$(BUNDLE)/runs"
	@echo "metrics:      bundles/$(BUNDLE)/eval/metrics.json"
	@echo "segmentation: bundles/$(BUNDLE)/eval/mni152_right_seg.nii.gz"

# The clinician's command on one scan, with the weights `make demo` trained (sized by demo.json).
SCAN ?= $(DATA_DIR)/imagesTr/mni152_right.nii.gz
OUT ?= results
segment: install
	$(PY) -m common segment --bundle bundles/$(BUNDLE) --input $(SCAN) --output $(OUT) --overrides $(CONFIGS)/demo.json

# A self-contained zip of the trained bundle for a partner site, checked against its manifest.
package: install
	$(PY) -m common package bundles/$(BUNDLE) --overrides $(CONFIGS)/demo.json
	$(PY) -m common verify dist/$(BUNDLE)-$$($(PY) -c "import json; print(json.load(open('$(CONFIGS)/metadata.json'))['version'])").zip

# TorchScript and ONNX exports of the trained bundle, each checked against the eager network.
export: install
	$(PY) -m common export bundles/$(BUNDLE) --overrides $(CONFIGS)/demo.json

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) -q

bench: install
	$(PY) bench/attention.py

# Every bundle and four MONAI baselines under one protocol (about 2 hours on 2 CPU cores):
# docs/leaderboard.md, docs/leaderboard.png, docs/leaderboard/. On a GPU: PROTOCOL=bench/leaderboard_gpu.json
PROTOCOL ?= bench/leaderboard_cpu.json
leaderboard: data
	$(PY) bench/leaderboard.py --protocol $(PROTOCOL)

# MONAI Label, in its own environment (.venv-label, about 8 GB: monailabel needs torchvision, so a
# CUDA build of torch 2.14.1). `make label` serves every bundle to 3D Slicer; the bundles
# that have weights (make demo BUNDLE=...) are served for inference, all of them for training.
LABEL_VENV ?= .venv-label
LABEL_PY := $(LABEL_VENV)/bin/python
LABEL_STAMP := $(LABEL_VENV)/.installed
MONAILABEL_VERSION := 0.8.5
STUDIES ?= data/label_studies
LABEL_HOST ?= 127.0.0.1
LABEL_PORT ?= 8000
LABEL_CONF ?=

label-install: $(LABEL_STAMP)

$(LABEL_STAMP): requirements-label.txt pyproject.toml
	$(PYTHON) -m venv $(LABEL_VENV)
	$(LABEL_PY) -m pip install --quiet -r requirements-label.txt
	SAM2_BUILD_CUDA=0 $(LABEL_PY) -m pip install --quiet --no-build-isolation monailabel==$(MONAILABEL_VERSION)
	$(LABEL_PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

label: data label-install
	$(LABEL_PY) label_app/studies.py --dataset_dir $(DATA_DIR) --studies_dir $(STUDIES)
	@echo "MONAI Label server: http://$(LABEL_HOST):$(LABEL_PORT) (3D Slicer: MONAI Label module, Server field)"
	$(LABEL_PY) -m monailabel.main start_server --app label_app --studies $(STUDIES) --host $(LABEL_HOST) --port $(LABEL_PORT) $(LABEL_CONF)

test-label: install label-install
	LABEL_PYTHON=$(abspath $(LABEL_PY)) $(PY) -m pytest -q tests/test_label.py

clean:
	rm -rf bundles/*/models bundles/*/runs bundles/*/eval dist results leaderboard_runs
