# `make demo` and `make test` are all a fresh clone needs; both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUNDLE ?= unetr
# TASK: a data set under data/ (make data writes mni152, brain MRI, and vertebrae_ct, lumbar CT).
TASK ?= mni152
DATA_DIR ?= data/$(TASK)
CONFIGS := bundles/$(BUNDLE)/configs
# The brain demo runs the bundles' own configs and writes models/, runs/ and eval/ of the bundle;
# any other task is planned first (python -m common plan, ROI within the CPU demo's 48^3 voxels)
# and writes under models/<task>/, runs/<task>/ and eval/<task>/, so the brain's weights stay.
ifeq ($(TASK),mni152)
TASK_DIR :=
PLAN :=
else
TASK_DIR := /$(TASK)
PLAN := ,'$(DATA_DIR)/plan.json'
endif
MODELS := bundles/$(BUNDLE)/models$(TASK_DIR)
RUNS := bundles/$(BUNDLE)/runs$(TASK_DIR)
EVAL := bundles/$(BUNDLE)/eval$(TASK_DIR)
DEMO_ROI_VOXELS := 110592
ON_TASK := --dataset_dir $(DATA_DIR) --ckpt_dir $(MODELS)
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: install pacs-install browser-install data configs demo test bench robustness leaderboard segment package export label label-pacs label-install test-label clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

data: install
	$(PY) -m common prepare_data --data_dir data

# Every bundle's configs, written from configs/shared (one template per config) and configs/networks.
configs: install
	$(PY) configs/generate.py

# The main job: train BUNDLE on TASK's data with the CPU-sized demo override (and the task's plan),
# evaluate it on the held-out case, segment it with the weights alone, and say where everything is.
demo: data
ifneq ($(TASK),mni152)
	$(PY) -m common plan --dataset_dir $(DATA_DIR) --max_roi_voxels $(DEMO_ROI_VOXELS)
endif
	$(PY) -m monai.bundle run --config_file "['$(CONFIGS)/train.json','$(CONFIGS)/demo.json'$(PLAN)]" $(ON_TASK) --output_dir $(RUNS)
	$(PY) -m monai.bundle run --config_file "['$(CONFIGS)/train.json','$(CONFIGS)/demo.json'$(PLAN),'$(CONFIGS)/evaluate.json']" $(ON_TASK) --output_dir $(EVAL)
	$(PY) -m monai.bundle run --config_file $(CONFIGS)/inference.json $(ON_TASK) --output_dir $(EVAL)
	@echo "checkpoint:    $(MODELS)/model.pt"
	@echo "tensorboard:   $(VENV)/bin/tensorboard --logdir $(RUNS)"
	@echo "metrics:       $(EVAL)/metrics.json"
	@echo "segmentations: $(EVAL)/*_seg.nii.gz"

# The clinician's command on one scan, with the weights `make demo` trained (they carry their settings).
SCAN ?= $(DATA_DIR)/imagesTr/mni152_right.nii.gz
OUT ?= results
segment: install
	$(PY) -m common segment --bundle bundles/$(BUNDLE) --input $(SCAN) --output $(OUT) --checkpoint $(MODELS)/model.pt

# A self-contained zip of the trained bundle for a partner site, checked against its manifest.
package: install
	$(PY) -m common package bundles/$(BUNDLE) --checkpoint $(MODELS)/model.pt
	$(PY) -m common verify dist/$(BUNDLE)-$$($(PY) -c "import json; print(json.load(open('$(CONFIGS)/metadata.json'))['version'])").zip

# TorchScript and ONNX exports of the trained bundle, each checked against the eager network.
export: install
	$(PY) -m common export bundles/$(BUNDLE) --checkpoint $(MODELS)/model.pt

# A real PACS for tests/test_pacs.py: Debian's Orthanc and its DICOMweb plugin, through apt-get (as
# root), once; the tests start their own server on a free loopback port and stop it.
ORTHANC_DICOMWEB := /usr/share/orthanc/plugins/libOrthancDicomWeb.so
pacs-install: $(ORTHANC_DICOMWEB)

$(ORTHANC_DICOMWEB):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb

test: install pacs-install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -q

# Attention layers against their plain formulations; then segment's wall time and peak memory per
# bundle at 1 mm and 0.5 mm (needs the demo weights: make demo BUNDLE=...; skipped without them).
bench: install
	$(PY) bench/attention.py
	$(PY) bench/segment_cost.py

# Each bundle's brain demo weights (make demo BUNDLE=...) on the held-out hemisphere under controlled
# shifts: a table (docs/robustness.md holds the measured ones). VARIANTS=",_noaug" adds weights trained without the augmentation policy
# into models/_noaug (--augmentation False --ckpt_dir bundles/<b>/models/_noaug).
VARIANTS ?=
robustness: install
	$(PY) bench/robustness.py --variants "$(VARIANTS)"

# Every bundle and four MONAI baselines under one protocol (about 2 hours a seed on 2 CPU cores):
# docs/<task>/leaderboard.md, leaderboard.png, leaderboard.json (every run) and leaderboard/. On a GPU:
# PROTOCOL=bench/leaderboard_gpu.json. SEEDS=0,1,2 trains each entry once per seed; ONLY=a,b limits the
# entries; a stopped run goes on where it stopped. RETIME=1 then measures every entry's network alone again,
# one after another on this machine, when the runs were spread over machines. Any TASK but the brain is
# planned first, as make demo does (vertebrae_ct: bench/leaderboard_ct.json).
SEEDS ?=
ONLY ?=
RETIME ?=
ON_LEADERBOARD_TASK := --dataset_dir $(DATA_DIR) --work_dir leaderboard_runs/$(TASK) --docs_dir docs/$(TASK)
ifeq ($(TASK),mni152)
PROTOCOL ?= bench/leaderboard_cpu.json
else
PROTOCOL ?= bench/leaderboard_ct.json
ON_LEADERBOARD_TASK += --plan $(DATA_DIR)/plan.json
endif
leaderboard: data
ifneq ($(TASK),mni152)
	$(PY) -m common plan --dataset_dir $(DATA_DIR) --max_roi_voxels $(DEMO_ROI_VOXELS)
endif
	$(PY) bench/leaderboard.py --protocol $(PROTOCOL) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(ONLY),--only "$(ONLY)") $(if $(RETIME),--retime) $(ON_LEADERBOARD_TASK)

# MONAI Label, in its own environment (.venv-label, about 8 GB: monailabel needs torchvision, so a
# CUDA build of torch 2.14.1). `make label` serves every bundle to 3D Slicer; the bundles
# that have weights (make demo BUNDLE=...) are served for inference, all of them for training.
LABEL_VENV ?= .venv-label
LABEL_PY := $(LABEL_VENV)/bin/python
LABEL_STAMP := $(LABEL_VENV)/.installed
MONAILABEL_VERSION := 0.8.5
STUDIES ?= data/label_studies/$(TASK)
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

# STUDIES may also be a PACS's DICOMweb root (http://127.0.0.1:8042/dicom-web): served as it is.
label: data label-install
ifeq ($(filter http://% https://%,$(STUDIES)),)
	$(LABEL_PY) label_app/studies.py --dataset_dir $(DATA_DIR) --studies_dir $(STUDIES)
endif
	@echo "MONAI Label server: http://$(LABEL_HOST):$(LABEL_PORT) (3D Slicer: MONAI Label module, Server field)"
	$(LABEL_PY) -m monailabel.main start_server --app label_app --studies $(STUDIES) --host $(LABEL_HOST) --port $(LABEL_PORT) $(LABEL_CONF)

# The annotator's stack in a browser: Orthanc (loopback only, a password made per session) holding TASK's held-out
# scans as DICOM series, MONAI Label serving every bundle that has weights from it, and the OHIF viewer MONAI Label
# ships; prints the viewer's address (http://127.0.0.1:LABEL_PORT/ohif/). Ctrl-C stops both.
LABEL_PACS_DIR ?= data/label_pacs/$(TASK)
ORTHANC_PORT ?= 8042
label-pacs: data label-install pacs-install
	$(LABEL_PY) label_app/pacs.py --dataset_dir $(DATA_DIR) --work_dir $(LABEL_PACS_DIR) --label_port $(LABEL_PORT) --orthanc_port $(ORTHANC_PORT)

# Debian's Chromium for the browser test of make test-label (headless, driven by Playwright), through apt-get (as root), once.
CHROMIUM := /usr/bin/chromium
browser-install: $(CHROMIUM)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

test-label: install label-install pacs-install browser-install
	LABEL_PYTHON=$(abspath $(LABEL_PY)) $(PY) -m pytest -q tests/test_label.py tests/test_viewer.py

clean:
	rm -rf bundles/*/models bundles/*/runs bundles/*/eval dist results leaderboard_runs
