# `make demo` and `make test` are all a fresh clone needs; both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUNDLE ?= unetr
DATA_DIR ?= data/mni152
CONFIGS := bundles/$(BUNDLE)/configs
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: install data demo test bench leaderboard segment package export clean

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

# Every bundle and four MONAI baselines under one protocol (about an hour on 2 CPU cores):
# docs/leaderboard.md, docs/leaderboard.png, docs/leaderboard/. On a GPU: PROTOCOL=bench/leaderboard_gpu.json
PROTOCOL ?= bench/leaderboard_cpu.json
leaderboard: data
	$(PY) bench/leaderboard.py --protocol $(PROTOCOL)

clean:
	rm -rf bundles/*/models bundles/*/runs bundles/*/eval dist results leaderboard_runs
