"""What both training scripts share (`training.train` for DEER, `training.train_ar` for the AR reference): the
argument parsing, the datasets, the `Seq2SeqTrainer` subclass and its callbacks (glancing schedule, CTC-only phase,
learning curve, time limit), generation metrics, the train / evaluate tail and the push at the end.
"""

import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass

import torch
import transformers
from transformers import (
    EarlyStoppingCallback,
    HfArgumentParser,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
)
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module
from transformers.trainer_callback import ExportableState

from training.arguments import CardArguments, DataArguments, StoppingArguments
from training.cli import METRICS
from training.data import load_split, tokenize_split
from training.metrics import score


logger = logging.getLogger(__name__)
# What the training logs average over the steps since the last log, beside the loss.
EDIT_LOSSES = ("insertion_loss_weight", "word_loss_weight", "deletion_loss_weight")  # DeerConfig's weights
LOGGED_OUTPUTS = (
    "ctc_loss",
    "insertion_loss",
    "word_loss",
    "deletion_loss",
    "sparsity_loss",
    "distillation_loss",
    "num_unfit_targets",
)


def push_run(model, tokenizer, training_args, card_args: CardArguments, metrics: dict | None):
    """Push the trained model, its tokenizer and a card in one commit (DeerForConditionalGeneration.push_to_hub);
    the Trainer's own checkpoint pushing is not used."""
    from modeling_deer.model_card_deer import build_model_card

    repo_id = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
    card = build_model_card(
        model,
        model_name=repo_id,
        base_model=card_args.card_base_model,
        datasets=card_args.card_datasets or None,
        language=card_args.card_language or None,
        license=card_args.card_license,
        trainer_metrics=metrics,
    )
    commit = model.push_to_hub(
        repo_id,
        tokenizer=tokenizer,
        model_card=card,
        token=training_args.hub_token,
        private=training_args.hub_private_repo,
        revision=training_args.hub_revision,
    )
    logger.info(f"pushed to {repo_id}: {commit.commit_url if commit is not None else ''}")


@dataclass
class TrainingSchedule:
    """What changes from step to step in a DEER run, held by the trainer and passed to each training call (forward's
    `glancing_ratio` and `ctc_only`), never written into the model's config (a checkpoint saved mid-run carries the
    config as it was given): the glancing ratio, annealed linearly from `glancing_start` to `glancing_end` over the
    run (DEER: 0.5 -> 0.2), the first `ctc_only_steps` steps training the draft alone (the edit passes skipped;
    None: the first third of the run; 0: none), and the pruning levels trained from step `levels_from_step` on (the
    full size alone before). All depend only on the global step, so a resumed run follows them."""

    glancing_start: float = 0.5
    glancing_end: float = 0.2
    ctc_only_steps: int | None = None
    levels_from_step: int = 0

    def glancing_ratio(self, step: int, max_steps: int) -> float:
        return self.glancing_start + (self.glancing_end - self.glancing_start) * min(1.0, step / max(1, max_steps))

    def ctc_only_until(self, max_steps: int) -> int:
        return int(max_steps / 3) if self.ctc_only_steps is None else self.ctc_only_steps

    def ctc_only(self, step: int, max_steps: int) -> bool:
        return step < self.ctc_only_until(max_steps)

    def edit_heads_untrained(self, step: int, max_steps: int) -> bool:
        """Whether every step before `step` trained the draft alone."""
        return step <= self.ctc_only_until(max_steps)


class LearningCurveCallback(TrainerCallback, ExportableState):
    """Appends one JSON line per evaluation to `learning_curve.jsonl` in the output directory: the step, the seconds
    spent in training steps so far (evaluation excluded, so runs compare by training wall-clock) and the evaluation
    metrics. Each checkpoint records the seconds at its step (`trainer_state.json`), and a resumed run goes on from
    them, also when the checkpoint came after the last evaluation (a run stopped by --max_train_minutes); from a
    checkpoint without them, from the last line of the file at or before the checkpoint's step. An evaluation after
    training (of the final model, or with early stopping of the best one) is marked `"after_training": true`."""

    def __init__(self):
        self.train_seconds, self.step_started, self.training_done = 0.0, None, False

    def state(self) -> dict:
        return {"args": {}, "attributes": {"train_seconds": self.train_seconds}}

    def path(self, args) -> str:
        return os.path.join(args.output_dir, "learning_curve.jsonl")

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_seconds, self.training_done = 0.0, False
        saved = state.stateful_callbacks.get(type(self).__name__) if state.global_step else None
        if isinstance(saved, dict) and "train_seconds" in saved.get("attributes", {}):
            self.train_seconds = saved["attributes"]["train_seconds"]
        elif state.global_step and os.path.exists(self.path(args)):
            with open(self.path(args)) as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
            earlier = [row for row in rows if row["step"] <= state.global_step]
            self.train_seconds = earlier[-1]["train_seconds"] if earlier else 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.step_started is not None:
            self.train_seconds += time.monotonic() - self.step_started
            self.step_started = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        row = {"step": state.global_step, "train_seconds": round(self.train_seconds, 1), **(metrics or {})}
        if self.training_done:
            row["after_training"] = True
        with open(self.path(args), "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        self.training_done = True


class SpecialTokensCallback(TrainerCallback):
    """Puts the model's bos / eos / pad ids (config and generation config) back as they were when the callback was
    made, once training begins. `Trainer.train` first aligns them with the tokenizer's, and some transformers 5
    releases (5.17 among them) copy a missing one too: a BERT tokenizer has no bos or eos ([CLS] and [SEP] play
    those roles), so they became None."""

    NAMES = ("bos_token_id", "eos_token_id", "pad_token_id")

    def __init__(self, model):
        self.holders = [model.config] + (
            [model.generation_config] if getattr(model, "generation_config", None) else []
        )
        self.saved = [{name: getattr(holder, name, None) for name in self.NAMES} for holder in self.holders]

    def on_train_begin(self, args, state, control, **kwargs):
        for holder, values in zip(self.holders, self.saved):
            for name, value in values.items():
                setattr(holder, name, value)


class TimeLimitCallback(TrainerCallback):
    """Stops training once `minutes` of wall time have passed since it began. With several processes they agree on
    the step (the earliest one any process reached the limit at), so none waits forever for the others."""

    def __init__(self, minutes: float):
        self.seconds = 60 * minutes
        self.deadline = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.deadline = time.monotonic() + self.seconds

    def on_step_end(self, args, state, control, **kwargs):
        # On the training device: an NCCL-only process group refuses CPU tensors.
        stop = torch.tensor(float(time.monotonic() >= self.deadline), device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        if stop.item():
            logger.info(f"time limit reached at step {state.global_step}: stopping")
            control.should_training_stop = True
            # A checkpoint at the step it stopped, so that --resume_from_checkpoint goes on from there.
            control.should_save = args.save_strategy != "no"


class SkippedHeadsCallback(TrainerCallback):
    """In a CTC-only step the edit heads take part with a zero gradient (so that DDP, which expects a gradient from
    every trained parameter, reduces one); before the optimizer step their gradients are dropped, so that AdamW
    leaves their moments and step count alone, as if they had not taken part."""

    def __init__(self, trainer: "DeerTrainer"):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.trainer.step_settings().get("ctc_only"):
            deer = self.trainer.accelerator.unwrap_model(model)
            for head in (deer.insertion_head, deer.deletion_head):
                for parameter in head.parameters():
                    parameter.grad = None


class RankUnitsCallback(TrainerCallback):
    """--level_ranking_steps: the units ranked by importance at each of `steps` (those after the first step), on the
    model as trained so far, before that step trains. `rank(ctc_only)` ranks them (on the draft's loss alone while
    the edit heads have not trained). A run resumed past a ranking step has that ranking already: the scores came with
    the checkpoint."""

    def __init__(self, model, schedule: TrainingSchedule, steps: list[int], rank):
        self.model, self.schedule, self.steps, self.rank = model, schedule, sorted(steps), rank
        self.pending = list(self.steps)

    def on_train_begin(self, args, state, control, **kwargs):
        self.pending = [step for step in self.steps if step >= state.global_step]
        if len(self.pending) < len(self.steps):
            self.model.config.units_ranked = True

    def on_step_begin(self, args, state, control, **kwargs):
        if self.pending and state.global_step >= self.pending[0]:
            self.pending.pop(0)
            self.rank(ctc_only=self.schedule.edit_heads_untrained(state.global_step, state.max_steps))


class DeerTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with DEER's pieces: the training `schedule` (None: the model's config as it is), the pruning
    scores' own learning rate, every loss component (and the glancing ratio) in the logs, and evaluation by
    `generate()` with the model's generation config (the draft alone while the schedule trains the draft alone)."""

    def __init__(self, *args, score_learning_rate=None, schedule: TrainingSchedule | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.score_learning_rate, self.schedule = score_learning_rate, schedule
        if schedule is not None:
            self.add_callback(SkippedHeadsCallback(self))
        self._component_sums, self._component_counts = {}, {}
        self._rows, self._unfit_rows, self._warned_unfit = 0, 0, False

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            groups = self.model.optimizer_parameter_groups(self.args.weight_decay, self.score_learning_rate)
            groups = [group for group in groups if any(p.requires_grad for p in group["params"])]
            self.optimizer = optimizer_class(groups, **optimizer_kwargs)
        return self.optimizer

    def step_settings(self) -> dict:
        """This step's schedule, as forward's keyword arguments (none without a schedule)."""
        if self.schedule is None:
            return {}
        step, max_steps = self.state.global_step, self.state.max_steps
        return {
            "glancing_ratio": self.schedule.glancing_ratio(step, max_steps),
            "ctc_only": self.schedule.ctc_only(step, max_steps),
            "train_levels": step >= self.schedule.levels_from_step,
        }

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, **(self.step_settings() if model.training else {}))
        if model.training:
            for name in LOGGED_OUTPUTS:
                value = getattr(outputs, name, None)
                if value is not None:
                    self._component_sums[name] = self._component_sums.get(name, 0.0) + float(value)
                    self._component_counts[name] = self._component_counts.get(name, 0) + 1
            self._rows += inputs["input_ids"].shape[0]
            self._unfit_rows += int(outputs.num_unfit_targets)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._component_counts:
            for name, total in self._component_sums.items():
                logs[name] = round(total / self._component_counts[name], 4)
            ratio = self.step_settings().get("glancing_ratio", self.model.config.glancing_ratio)
            logs["glancing_ratio"] = round(ratio, 4)
            self._component_sums, self._component_counts = {}, {}
            if not self._warned_unfit and self._unfit_rows > 0.01 * self._rows:
                self._warned_unfit = True
                logger.warning(
                    f"{self._unfit_rows} of the {self._rows} training rows so far "
                    f"({100 * self._unfit_rows / self._rows:.1f} %) have targets the draft cannot write (more tokens "
                    f"than its {self.model.config.upsample_ratio:g} x source-length frames allow): the CTC loss "
                    f"leaves "
                    "them out. Raise --upsample_ratio, or filter such pairs out of the data."
                )
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = model(**inputs).loss.detach() if "labels" in inputs else None
        # The generation arguments of evaluate()/predict() (generation_max_length, ...) and, as the parent does,
        # synced_gpus under ZeRO-3 / FSDP, where every process must run the same number of forward passes.
        gen_kwargs = dict(gen_kwargs or getattr(self, "_gen_kwargs", {}))
        gen_kwargs = {name: value for name, value in gen_kwargs.items() if value is not None}
        gen_kwargs.setdefault("synced_gpus", is_deepspeed_zero3_enabled() or is_fsdp_managed_module(self.model))
        deer = self.accelerator.unwrap_model(model)
        # While the edit heads have not trained (the schedule's CTC-only phase, or edit losses weighted 0), their
        # rounds would only rewrite the draft at random: evaluation scores the draft alone until then.
        untrained = not any(getattr(deer.config, name) for name in EDIT_LOSSES) or (
            self.schedule is not None
            and self.schedule.edit_heads_untrained(self.state.global_step, self.state.max_steps)
        )
        settings = {**gen_kwargs, "max_iterations": 0} if untrained else gen_kwargs
        generated = deer.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **settings)
        return loss, generated, inputs.get("labels")


class StateEntriesCallback(TrainerCallback):
    """When training begins, gives the trainer state an entry for each stateful callback it lacks. A state resumed
    from a checkpoint has entries only for the callbacks the checkpoint's run had (not early stopping added on
    resume, nor the learning curve's seconds in a checkpoint from before they were recorded), and the Trainer's next
    save looks each one up by name: a KeyError otherwise."""

    def __init__(self, callbacks: list[TrainerCallback]):
        self.stateful = [callback for callback in callbacks if isinstance(callback, ExportableState)]

    def on_train_begin(self, args, state, control, **kwargs):
        for callback in self.stateful:
            state.stateful_callbacks.setdefault(type(callback).__name__, callback.state())


def run_callbacks(model, max_train_minutes: float | None, stopping: list[TrainerCallback]) -> list[TrainerCallback]:
    """The callbacks both training scripts use: the model's special ids kept, the learning curve, the time limit if
    one is given, `stopping` (`best_model_callbacks`), and their entries in a resumed trainer state."""
    callbacks = [SpecialTokensCallback(model), LearningCurveCallback()] + (
        [TimeLimitCallback(max_train_minutes)] if max_train_minutes is not None else []
    )
    return callbacks + stopping + [StateEntriesCallback(callbacks + stopping)]


def check_fsdp_wrapping(training_args, model) -> None:
    """FSDP that wraps each layer on its own (the Trainer's default auto-wrap, by `_no_split_modules`, or by size)
    trains a model with pruning levels wrong: the levels read every layer's scores before the layers run, outside the
    wrapped forward, and those scores' gradients come out wrong. Refused in one line; wrapping the whole model as one
    unit (`--fsdp_config` naming a JSON file that holds `{"auto_wrap_policy": "NO_WRAP"}`) trains as one process
    does."""
    if not training_args.fsdp or not any(level > 0 for level in model.config.sparsity_levels):
        return
    policy = (training_args.fsdp_config or {}).get("auto_wrap_policy", "TRANSFORMER_BASED_WRAP")
    if policy != "NO_WRAP":
        raise SystemExit(
            f"error: FSDP with auto_wrap_policy {policy} wraps each layer on its own, which trains pruning levels "
            'wrong; wrap the whole model: --fsdp_config FILE holding {"auto_wrap_policy": "NO_WRAP"}'
        )


def best_model_callbacks(training_args, stopping_args: StoppingArguments) -> list[TrainerCallback]:
    """The best checkpoint and early stopping. With --predict_with_generate and no --metric_for_best_model, the
    task's --generation_metric judges checkpoints; with --early_stopping_patience, transformers'
    EarlyStoppingCallback stops training (a resumed run keeps its count of evaluations without gain) and the best
    checkpoint is loaded at the end. Refuses, in one line, what
    cannot work (no evaluation to judge by, checkpoints that miss evaluations)."""
    if stopping_args.generation_metric not in METRICS:
        raise SystemExit(
            f"error: --generation_metric must be one of {', '.join(METRICS)}, not {stopping_args.generation_metric!r}"
        )
    if training_args.predict_with_generate and training_args.metric_for_best_model is None:
        training_args.metric_for_best_model = stopping_args.generation_metric
        training_args.greater_is_better = True
    patience = stopping_args.early_stopping_patience
    if patience is None:
        return []
    if patience < 1:
        raise SystemExit(f"error: --early_stopping_patience must be at least 1, got {patience}")
    if not training_args.do_eval or training_args.eval_strategy == "no":
        raise SystemExit(
            "error: --early_stopping_patience needs evaluations during training: --validation_file and "
            "--eval_strategy steps (or epoch)"
        )
    if training_args.save_strategy != training_args.eval_strategy or (
        training_args.eval_strategy == "steps" and training_args.save_steps % training_args.eval_steps != 0
    ):
        raise SystemExit(
            "error: --early_stopping_patience keeps the best checkpoint, so a checkpoint must be saved at every "
            "evaluation: give --save_strategy as --eval_strategy (and --save_steps equal to --eval_steps)"
        )
    if training_args.metric_for_best_model is None:
        training_args.metric_for_best_model, training_args.greater_is_better = "loss", False
    training_args.load_best_model_at_end = True
    # A resumed run (--resume_from_checkpoint) goes on counting evaluations without gain from where its checkpoint
    # left the count (transformers restarts it at 0 unless asked to restore the callbacks' state).
    training_args.restore_callback_states_from_checkpoint = True
    return [EarlyStoppingCallback(patience, stopping_args.early_stopping_threshold)]


def save_command(output_dir: str, module: str, argv: list[str] | None):
    """The command that made a run, as `run_command.txt` in its output directory (the benchmark reports it)."""
    argv = sys.argv[1:] if argv is None else argv
    with open(os.path.join(output_dir, "run_command.txt"), "w") as handle:
        handle.write(f"python -m {module} {shlex.join(argv)}\n")


def parse_arguments(dataclass_types: tuple, argv: list[str] | None):
    """Command-line flags (or one .json file of them) into the dataclasses; logging set up; the data flags checked.
    Among the dataclasses must be DataArguments and Seq2SeqTrainingArguments."""
    parser = HfArgumentParser(dataclass_types)
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parsed = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    data_args = next(args for args in parsed if isinstance(args, DataArguments))
    training_args = next(args for args in parsed if isinstance(args, Seq2SeqTrainingArguments))
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if (data_args.train_file or data_args.dataset_name) and not training_args.do_train:  # --do_train implied
        training_args.do_train = True
    if training_args.do_train and not (data_args.train_file or data_args.dataset_name):
        raise SystemExit("error: --do_train needs --train_file or --dataset_name")
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise SystemExit(
            "error: nothing to do: give --train_file or --dataset_name (the data to train on), or "
            "--do_eval with --validation_file (or --test_file) to evaluate the model as it is"
        )
    if data_args.test_file and not training_args.do_predict:  # a test file says what to do (--do_predict implied)
        training_args.do_predict = True
    if training_args.do_predict and not (data_args.test_file or data_args.dataset_name):
        raise SystemExit("error: --do_predict needs --test_file or --dataset_name")
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise SystemExit("error: --streaming needs --max_steps (a stream has no length to count epochs by)")
    if training_args.do_eval and not (data_args.validation_file or data_args.dataset_name):
        raise SystemExit("error: --do_eval needs --validation_file or --dataset_name")
    transformers.set_seed(training_args.seed)
    logger.info(f"world size {training_args.world_size}, process {training_args.process_index}")
    return parsed


def load_datasets(data_args: DataArguments, training_args, tokenizer, transform=None, with_test: bool = False):
    """The tokenized train and validation splits that the flags ask for (None where not asked), and with `with_test`
    the test split too; `transform`, if given, maps each."""
    transform = transform or (lambda dataset: dataset)
    splits = []
    roles = [
        (training_args.do_train, data_args.train_file, data_args.max_train_samples, "train"),
        (training_args.do_eval, data_args.validation_file, data_args.max_eval_samples, "validation"),
    ]
    if with_test:
        roles.append((training_args.do_predict, data_args.test_file, data_args.max_predict_samples, "test"))
    with training_args.main_process_first(desc="loading and tokenizing"):
        for wanted, path, max_samples, role in roles:
            if wanted:
                named = data_args.dataset_name is not None and path is None
                split = load_split(
                    data_args.dataset_name if named else path,
                    data_args.source_column,
                    data_args.target_column,
                    max_samples,
                    source_lang=data_args.source_lang,
                    target_lang=data_args.target_lang,
                    split=role,
                    dataset_config_name=data_args.dataset_config_name,
                    named=named,
                    streaming=data_args.streaming and role == "train",
                )
                splits.append(transform(tokenize_split(split, tokenizer, data_args)))
            else:
                splits.append(None)
    return splits


def generation_metrics(tokenizer):
    """`compute_metrics` for evaluation by generation: BLEU, chrF and ROUGE-L of the decoded predictions against the
    decoded label ids (decoding them writes each reference the way the tokenizer writes it: the normalisation)."""

    def compute_metrics(evaluation):
        predictions, labels = torch.as_tensor(evaluation.predictions), torch.as_tensor(evaluation.label_ids)
        predictions = predictions.masked_fill(predictions < 0, tokenizer.pad_token_id)
        labels = labels.masked_fill(labels < 0, tokenizer.pad_token_id)
        return score(
            tokenizer.batch_decode(predictions, skip_special_tokens=True),
            tokenizer.batch_decode(labels, skip_special_tokens=True),
        )

    return compute_metrics


def predict_test(trainer, test_dataset, tokenizer, training_args) -> dict:
    """--do_predict: score the test split (by generation with --predict_with_generate) and, then, write the outputs
    to generated_predictions.txt, one per line in the split's order, as transformers' run_translation.py does."""
    settings = json.dumps(trainer.model.generation_config.to_diff_dict(), sort_keys=True)
    logger.info(f"process {training_args.process_index} predicts with {settings}")
    result = trainer.predict(test_dataset, metric_key_prefix="predict")
    trainer.log_metrics("predict", result.metrics)
    trainer.save_metrics("predict", result.metrics)
    if training_args.predict_with_generate and trainer.is_world_process_zero():
        predictions = torch.as_tensor(result.predictions)
        predictions = predictions.masked_fill(predictions < 0, tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        with open(
            os.path.join(training_args.output_dir, "generated_predictions.txt"), "w", encoding="utf-8"
        ) as handle:
            handle.writelines(text.strip() + "\n" for text in texts)
    return result.metrics


def train_and_evaluate(trainer, training_args, module: str, argv: list[str] | None) -> dict | None:
    """Train (resuming if asked), save the model, metrics, state and the command; then evaluate if asked. Returns
    the evaluation metrics."""
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        if trainer.is_world_process_zero():
            save_command(training_args.output_dir, module, argv)
    metrics = None
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    return metrics
