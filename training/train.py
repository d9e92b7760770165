"""Fine-tune DEER with the transformers Trainer, on one process or several (`accelerate launch`).

    python -m training.train \
        --model_name_or_path PATH            # a BERT-family MLM (converted with from_mlm) or a DEER checkpoint
        --train_file train.jsonl --validation_file validation.jsonl   # JSON lines, CSV or TSV
        --output_dir outputs/run --max_steps 1000 --per_device_train_batch_size 32 \
        --do_train --do_eval --eval_strategy steps --eval_steps 500 \
        --predict_with_generate --max_iterations 2 \
        [--ctc_only_steps 0 --edit_loss_weight 1]   # the paper; the defaults are the recipe that beat BERT2BERT

    accelerate launch --multi_gpu --num_processes 2 -m training.train ... --use_cpu   # several processes, gloo
    torchrun --nproc_per_node 2 -m training.train ... --use_cpu                         # the same without accelerate

(accelerate's `--cpu` flag starts several processes only through mpirun with --mpirun_hostfile; without MPI it
runs one process. Its `--multi_gpu` launcher is torchrun, and `--use_cpu` keeps every process on the CPU.)

Every standard `Seq2SeqTrainingArguments` flag works (`--resume_from_checkpoint`, `--save_steps`, `--seed`, ...).
The tokenizer is saved with the model; metrics go to `*_results.json` in the output directory. Evaluation by
generation reports BLEU, chrF and ROUGE-L against references normalised as training/metrics/__init__.py says.
"""

import itertools
import logging

import datasets
import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, Seq2SeqTrainingArguments

from modeling_deer import DeerForConditionalGeneration, DeerGenerationConfig
from training.arguments import CardArguments, DataArguments, ModelArguments, StoppingArguments
from training.cli import CANDIDATES, MAX_ITERATIONS_CANDIDATES, METRICS
from training.data import DeerDataCollator, read_texts
from training.decoding import set_decoding, tune_knobs
from training.trainer import (
    EDIT_LOSSES,
    DeerTrainer,
    RankUnitsCallback,
    TrainingSchedule,
    best_model_callbacks,
    check_fsdp_wrapping,
    generation_metrics,
    load_datasets,
    parse_arguments,
    predict_test,
    push_run,
    run_callbacks,
    train_and_evaluate,
)


logger = logging.getLogger(__name__)
# The ModelArguments that set the DeerConfig field of their name (where given).
CONFIG_FLAGS = ("upsample_ratio", "sparsity_weight", "draft_input", "draft_edit_ratio", "edit_rows_ratio")
CONFIG_FLAGS += ("redraft_ratio", "full_every_step", "sandwich_rule", "distillation_weight", "level_loss_weight")
CONFIG_FLAGS += ("level_ranking",)


def load_model(model_args: ModelArguments) -> DeerForConditionalGeneration:
    overrides = {"glancing_ratio": model_args.glancing_start}
    if model_args.sparsity_levels is not None:  # (unset: a DEER checkpoint keeps its own levels)
        overrides["sparsity_levels"] = list(model_args.sparsity_levels)
    for name in CONFIG_FLAGS:
        if getattr(model_args, name) is not None:
            overrides[name] = getattr(model_args, name)
    if model_args.edit_loss_weight is not None:
        overrides.update(dict.fromkeys(EDIT_LOSSES, model_args.edit_loss_weight))
    if AutoConfig.from_pretrained(model_args.model_name_or_path).model_type == "deer":
        model = DeerForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
        if model_args.separate_blank_head not in (None, model.config.separate_blank_head):
            raise SystemExit("error: --separate_blank_head changes the architecture; it applies to a new model only")
        for name, value in overrides.items():
            setattr(model.config, name, value)
        model.config.validate()
    else:
        if model_args.separate_blank_head is not None:
            overrides["separate_blank_head"] = model_args.separate_blank_head
        model = DeerForConditionalGeneration.from_mlm(model_args.model_name_or_path, **overrides)
    if model_args.random_init:
        model = DeerForConditionalGeneration(model.config)  # post_init draws every weight afresh
        logger.info("random_init: every weight is drawn afresh (the MLM gives only the shape and the specials)")
    model.freeze_unused_scores()  # the levels may have changed above
    return model


def training_rows(train_dataset, seed: int, rows: int, columns: tuple[str, ...]) -> list[dict]:
    """`rows` training rows (their `columns`) drawn with `seed`, the same on every process; from a stream, its first
    rows."""
    if isinstance(train_dataset, datasets.IterableDataset):
        chosen = itertools.islice(train_dataset, rows)
    else:
        generator = torch.Generator().manual_seed(seed)
        chosen = (train_dataset[i] for i in torch.randperm(len(train_dataset), generator=generator)[:rows].tolist())
    return [{column: row[column] for column in columns} for row in chosen]


def calibrate_blank(model, train_dataset, pad_token_id: int, seed: int, rows: int = 64):
    """`model.calibrate_blank` on `rows` training sources (`training_rows`)."""
    features = training_rows(train_dataset, seed, rows, ("input_ids",))
    batch = DeerDataCollator(pad_token_id)(features)
    bias = model.calibrate_blank(batch["input_ids"], batch["attention_mask"])
    logger.info(f"blank calibrated on {len(features)} training sources: bias {bias:.3f}")


def rank_units(model, train_dataset, pad_token_id: int, seed: int, batch_size: int, ctc_only: bool, rows: int = 512):
    """`model.rank_units` on `rows` training pairs (`training_rows`, so every process ranks alike), in batches of
    `batch_size`; again if ranked already (the caller decides when)."""
    features = training_rows(train_dataset, seed, rows, ("input_ids", "labels"))
    collate = DeerDataCollator(pad_token_id)
    batches = [collate(features[start : start + batch_size]) for start in range(0, len(features), batch_size)]
    with torch.random.fork_rng():  # the ranking's glancing draws leave training's random stream as it was
        torch.manual_seed(seed)
        model.rank_units(batches, ctc_only=ctc_only, force=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for score in model.pruning_scores():  # the first process's ranking on every process, whatever rounding did
            torch.distributed.broadcast(score.data, src=0)
    heads = [f"{level:g}: {model.sparsity_report(level).heads_per_layer}" for level in model.config.sparsity_levels]
    logger.info(
        f"units ranked by importance on {len(features)} training pairs; heads kept per layer at {', '.join(heads)}"
    )


def check_level_ranking_steps(steps: list[int], model, training_args) -> None:
    """--level_ranking_steps: steps the run reaches, for a model with levels ranked by importance; ranking during
    training not under FSDP (whose sharded scores it does not gather)."""
    if steps == [0]:
        return
    if not steps or min(steps) < 0 or len(set(steps)) < len(steps):
        raise SystemExit(f"error: --level_ranking_steps must be distinct steps, 0 or more, not {steps}")
    if not model.units_ranked_by_importance():
        raise SystemExit("error: --level_ranking_steps needs --sparsity_levels and --level_ranking importance")
    if 0 < training_args.max_steps <= max(steps):
        raise SystemExit(
            f"error: --level_ranking_steps {max(steps)} is not below --max_steps {training_args.max_steps}: that "
            "ranking would never be trained with"
        )
    if training_args.fsdp:
        raise SystemExit("error: --level_ranking_steps other than 0 is not supported with FSDP")


def tune_decoding(model, tokenizer, data_args: DataArguments, metric: str, output_dir: str, progress: bool = True):
    """--tune_decoding: the knobs and round count chosen on the validation file after training and saved with the
    model."""
    sources, targets = read_texts(data_args.validation_file, data_args, "validation")
    if targets is None:
        logger.warning(f"--tune_decoding: {data_args.validation_file} has no targets; the knobs stay as they are")
        return
    if data_args.max_eval_samples is not None:
        sources, targets = sources[: data_args.max_eval_samples], targets[: data_args.max_eval_samples]
    model.eval()
    summary = tune_knobs(
        model,
        tokenizer,
        sources,
        targets,
        metric,
        data_args.max_iterations,
        CANDIDATES,
        MAX_ITERATIONS_CANDIDATES,
        save_dir=output_dir,
        validation_file=data_args.validation_file,
        progress=progress,
    )
    logger.info(f"decoding knobs chosen: {summary}")


def share_generation_config(model):
    """With several processes, the first one's generation config (the knobs it tuned) on every process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    payload = [model.generation_config.to_dict()]
    torch.distributed.broadcast_object_list(payload, src=0)
    model.generation_config = DeerGenerationConfig.from_dict(payload[0])


def main(argv=None):
    model_args, data_args, stopping_args, card_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, StoppingArguments, CardArguments, Seq2SeqTrainingArguments), argv
    )
    # --push_to_hub pushes once, at the end, with the tokenizer and a model card (not the Trainer's checkpoints).
    push, training_args.push_to_hub = training_args.push_to_hub, False
    transformers.utils.logging.set_verbosity_warning()

    stopping = best_model_callbacks(training_args, stopping_args)
    if model_args.tune_decoding is None:
        model_args.tune_decoding = stopping_args.generation_metric
    if model_args.tune_decoding not in METRICS + ("none",):
        raise SystemExit(
            f"error: --tune_decoding must be one of {', '.join(METRICS)} or none, not {model_args.tune_decoding!r}"
        )
    if model_args.level_ranking_rows < 1:
        raise SystemExit(f"error: --level_ranking_rows must be at least 1, not {model_args.level_ranking_rows}")
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    model = load_model(model_args)
    check_fsdp_wrapping(training_args, model)
    check_level_ranking_steps(model_args.level_ranking_steps, model, training_args)
    limit = model.config.max_sequence_length
    if max(data_args.max_source_length, data_args.max_target_length) > limit:
        raise SystemExit(f"error: --max_source_length/--max_target_length must be at most {limit} for this model")

    set_decoding(model, max_iterations=data_args.max_iterations)  # what evaluation by generation decodes with
    train_dataset, eval_dataset, test_dataset = load_datasets(data_args, training_args, tokenizer, with_test=True)

    if model_args.trim_vocabulary:
        if train_dataset is None:
            raise SystemExit("error: --trim_vocabulary needs --do_train and --train_file (it keeps their tokens)")
        if data_args.streaming:
            raise SystemExit("error: --trim_vocabulary reads every training token first: not with --streaming")
        if model.config.unk_token_id is None:
            model.config.unk_token_id = tokenizer.unk_token_id
        used = set()
        for column in ("input_ids", "labels"):
            for ids in train_dataset[column]:
                used.update(ids)
        before = model.config.embedding_rows
        model.trim_vocabulary(sorted(used))
        logger.info(f"vocabulary trimmed to the training data's tokens: {before} -> {model.config.embedding_rows}")

    if train_dataset is not None and model.blank_head is not None and not model.config.blank_calibrated:
        calibrate_blank(model, train_dataset, tokenizer.pad_token_id, training_args.seed)
    config = model.config
    steps = sorted(model_args.level_ranking_steps)
    schedule = TrainingSchedule(
        model_args.glancing_start, model_args.glancing_end, model_args.ctc_only_steps, steps[0]
    )
    callbacks = run_callbacks(model, model_args.max_train_minutes, stopping)
    if train_dataset is not None and model.units_ranked_by_importance():
        batch_size = training_args.per_device_train_batch_size
        rows = model_args.level_ranking_rows
        seed = training_args.seed

        def rank(ctc_only: bool):
            rank_units(model, train_dataset, tokenizer.pad_token_id, seed, batch_size, ctc_only, rows)

        if steps[0] == 0 and not config.units_ranked:  # (a ranked checkpoint trained further keeps its ranking)
            rank(ctc_only=model_args.ctc_only_steps != 0)  # (unset: the first third of the run)
        later = [step for step in steps if step > 0]
        if later:
            callbacks.append(RankUnitsCallback(model, schedule, later, rank))

    trainer = DeerTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DeerDataCollator(tokenizer.pad_token_id),
        compute_metrics=generation_metrics(tokenizer) if training_args.predict_with_generate else None,
        callbacks=callbacks,
        score_learning_rate=model_args.score_learning_rate,
        schedule=schedule,
    )

    metrics = train_and_evaluate(trainer, training_args, "training.train", argv)
    if model_args.tune_decoding != "none" and training_args.do_train and data_args.validation_file:
        if trainer.is_world_process_zero():  # tuned once...
            tune_decoding(
                model,
                tokenizer,
                data_args,
                model_args.tune_decoding,
                training_args.output_dir,
                progress=not training_args.disable_tqdm,
            )
        share_generation_config(model)  # ...and every process decodes the test split with what was chosen
    if training_args.do_predict:  # as a plain generate() decodes: the knobs and round count saved with the model
        predict_test(trainer, test_dataset, tokenizer, training_args)
    if push and trainer.is_world_process_zero():
        push_run(model, tokenizer, training_args, card_args, metrics)
    return trainer


if __name__ == "__main__":
    main()
