"""The autoregressive reference: a BERT2BERT `EncoderDecoderModel` warm-started from the same masked LM as DEER,
fine-tuned on the same data with `Seq2SeqTrainer`; it decodes greedily with its KV cache.

    python -m training.train_ar \
        --model_name_or_path PATH            # the BERT-family MLM the DEER run started from
        --train_file train.jsonl --validation_file validation.jsonl \
        --output_dir runs/ar --max_steps 1000 --per_device_train_batch_size 16 --do_train

It takes the same data flags as `training.train` (and every `Seq2SeqTrainingArguments` flag), so the two runs can be
given identical steps, batch size, learning rate and data. The encoder and the decoder both start from the MLM
(the decoder's cross-attention is new, randomly initialised); the decoder's LM head is the MLM's. The decoder starts
from the tokenizer's bos ([CLS] / <s>) and learns to end with its eos ([SEP] / </s>).
"""

import copy
import json
import logging
import warnings

import tokenizers
import torch
import transformers
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EncoderDecoderModel,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from training.arguments import ARModelArguments, DataArguments, StoppingArguments
from training.data import map_rows
from training.decoding import special_ids
from training.trainer import (
    best_model_callbacks,
    generation_metrics,
    load_datasets,
    parse_arguments,
    predict_test,
    run_callbacks,
    train_and_evaluate,
)


logger = logging.getLogger(__name__)


def load_model(model_args: ARModelArguments, tokenizer, max_target_length: int) -> EncoderDecoderModel:
    path = model_args.model_name_or_path
    if transformers.AutoConfig.from_pretrained(path).model_type == "encoder-decoder":
        return EncoderDecoderModel.from_pretrained(path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    bos, eos, pad = special_ids(tokenizer)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = bos, eos, pad
    model.config.vocab_size = model.config.decoder.vocab_size
    model.generation_config.max_length = max_target_length
    model.generation_config.num_beams = 1
    model.generation_config.do_sample = False
    return model


def trim_ar_vocabulary(model: EncoderDecoderModel, tokenizer, token_ids) -> tuple[EncoderDecoderModel, object, dict]:
    """A copy of a BERT2BERT model and its WordPiece tokenizer with only `token_ids` (plus the special tokens) left,
    renumbered in their old order: the embedding tables and the LM head shrink to those rows. Words the kept pieces
    spell are tokenised exactly as before (WordPiece matches the longest piece, and every piece the full vocabulary
    chose for them is kept); other words read as unk. The AR model's counterpart of DEER's `trim_vocabulary`, which
    keeps the tokenizer and maps ids to rows instead: `EncoderDecoderModel` has no such map, so the ids change.
    Returns the model, the tokenizer and the map old id -> new id (of the kept ids)."""
    keep = sorted({int(i) for i in token_ids} | set(tokenizer.all_special_ids))
    new_id = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece" or spec["post_processor"]["type"] != "TemplateProcessing":
        raise ValueError(
            "trim_ar_vocabulary handles BERT-style WordPiece tokenizers; this one is "
            f"{spec['model']['type']} with {spec['post_processor']['type']}."
        )
    token_of = {index: token for token, index in spec["model"]["vocab"].items()}
    spec["model"]["vocab"] = {token_of[old]: new for new, old in enumerate(keep)}
    for added in spec["added_tokens"]:
        added["id"] = new_id[added["id"]]
    for special in spec["post_processor"]["special_tokens"].values():
        special["ids"] = [new_id[index] for index in special["ids"]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    trimmed_tokenizer = copy.deepcopy(tokenizer)
    trimmed_tokenizer._tokenizer = tokenizers.Tokenizer.from_str(json.dumps(spec))

    old_size = model.config.decoder.vocab_size
    rows = torch.tensor(keep)
    state = {
        key: tensor[rows]
        if tensor.dim() and tensor.shape[0] == old_size and ("word_embeddings" in key or ".predictions." in key)
        else tensor
        for key, tensor in model.state_dict().items()
    }
    config = copy.deepcopy(model.config)
    config.vocab_size = config.encoder.vocab_size = config.decoder.vocab_size = len(keep)
    generation_config = copy.deepcopy(model.generation_config)
    for holder in (config, generation_config):
        for name in ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(holder, name, None) is not None:
                setattr(holder, name, new_id[getattr(holder, name)])
    for sub in (config.encoder, config.decoder):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(sub, name, None) is not None and getattr(sub, name) in new_id:
                setattr(sub, name, new_id[getattr(sub, name)])
    trimmed = EncoderDecoderModel(config=config)
    trimmed.load_state_dict(state)
    trimmed.generation_config = generation_config
    return trimmed.eval(), trimmed_tokenizer, new_id


def renumber(dataset, new_ids: dict, unk_id: int):
    """A tokenized split in a trimmed vocabulary's ids (`trim_ar_vocabulary`'s map; ids it dropped read as
    `unk_id`, a new id): the same ids as tokenizing its texts again with the trimmed tokenizer."""

    def convert(row):
        return {column: [new_ids.get(i, unk_id) for i in row[column]] for column in ("input_ids", "labels")}

    return map_rows(dataset, convert, "renumbering to the trimmed vocabulary")


def drop_bos(dataset):
    """Labels [bos w1 .. wn eos] -> [w1 .. wn eos]: the model shifts them right behind decoder_start (= bos)."""
    return map_rows(dataset, lambda row: {"labels": row["labels"][1:]}, "labels")


def main(argv=None):
    model_args, data_args, stopping_args, training_args = parse_arguments(
        (ARModelArguments, DataArguments, StoppingArguments, Seq2SeqTrainingArguments), argv
    )
    stopping = best_model_callbacks(training_args, stopping_args)
    transformers.utils.logging.set_verbosity_error()  # the new cross-attention weights are expected, not news
    # EncoderDecoderModel warns on every step with labels that its loss moved out of the decoder in v4.12.
    warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)

    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    model = load_model(model_args, tokenizer, data_args.max_target_length)
    limit = model.config.encoder.max_position_embeddings
    if max(data_args.max_source_length, data_args.max_target_length) > limit:
        raise SystemExit(f"error: --max_source_length/--max_target_length must be at most {limit} for this model")
    if training_args.generation_max_length is None:
        training_args.generation_max_length = data_args.max_target_length

    datasets = load_datasets(data_args, training_args, tokenizer, transform=drop_bos, with_test=True)
    if model_args.trim_vocabulary:
        if datasets[0] is None:
            raise SystemExit("error: --trim_vocabulary needs --do_train and --train_file (it keeps their tokens)")
        if data_args.streaming:
            raise SystemExit("error: --trim_vocabulary reads every training token first: not with --streaming")
        used = {bos} if (bos := model.config.decoder_start_token_id) is not None else set()
        for column in ("input_ids", "labels"):
            for ids in datasets[0][column]:
                used.update(ids)
        before = len(tokenizer)
        model, tokenizer, new_ids = trim_ar_vocabulary(model, tokenizer, used)
        datasets = [
            renumber(split, new_ids, tokenizer.unk_token_id) if split is not None else None for split in datasets
        ]
        logger.info(f"vocabulary trimmed to the training data's tokens: {before} -> {len(tokenizer)}")
    train_dataset, eval_dataset, test_dataset = datasets

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=None, label_pad_token_id=-100),
        compute_metrics=generation_metrics(tokenizer) if training_args.predict_with_generate else None,
        callbacks=run_callbacks(model, model_args.max_train_minutes, stopping),
    )
    train_and_evaluate(trainer, training_args, "training.train_ar", argv)
    if training_args.do_predict:
        predict_test(trainer, test_dataset, tokenizer, training_args)
    return trainer


if __name__ == "__main__":
    main()
