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

import warnings

import transformers
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EncoderDecoderModel,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from training.arguments import ARModelArguments, DataArguments
from training.data import map_rows
from training.decoding import special_ids
from training.trainer import (
    generation_metrics,
    load_datasets,
    parse_arguments,
    predict_test,
    run_callbacks,
    train_and_evaluate,
)


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


def drop_bos(dataset):
    """Labels [bos w1 .. wn eos] -> [w1 .. wn eos]: the model shifts them right behind decoder_start (= bos)."""
    return map_rows(dataset, lambda row: {"labels": row["labels"][1:]}, "labels")


def main(argv=None):
    model_args, data_args, training_args = parse_arguments(
        (ARModelArguments, DataArguments, Seq2SeqTrainingArguments), argv
    )
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

    train_dataset, eval_dataset, test_dataset = load_datasets(
        data_args, training_args, tokenizer, transform=drop_bos, with_test=True
    )

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=None, label_pad_token_id=-100),
        compute_metrics=generation_metrics(tokenizer) if training_args.predict_with_generate else None,
        callbacks=run_callbacks(model, model_args.max_train_minutes),
    )
    train_and_evaluate(trainer, training_args, "training.train_ar", argv)
    if training_args.do_predict:
        predict_test(trainer, test_dataset, tokenizer, training_args)
    return trainer


if __name__ == "__main__":
    main()
