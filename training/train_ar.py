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

from training.arguments import ARModelArguments, DataArguments
from training.train import (
    generation_metrics,
    load_datasets,
    parse_arguments,
    run_callbacks,
    train_and_evaluate,
)


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(bos, eos, pad) of a BERT-family tokenizer: [CLS]/[SEP]/[PAD] or <s>/</s>/<pad>."""
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if bos is None or eos is None or tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path} needs cls/bos, sep/eos and pad tokens.")
    return bos, eos, tokenizer.pad_token_id


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


def load_ar(path: str) -> EncoderDecoderModel:
    return EncoderDecoderModel.from_pretrained(path).eval()


def ar_generate(model: EncoderDecoderModel, input_ids, attention_mask):
    """Greedy decoding with the KV cache, at most the length the model was trained to write."""
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False, num_beams=1,
                          max_length=model.generation_config.max_length)


def ar_generate_texts(model, tokenizer, sources: list[str], batch_size: int) -> list[str]:
    outputs = []
    limit = model.config.encoder.max_position_embeddings
    for start in range(0, len(sources), batch_size):
        batch = tokenizer(sources[start : start + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=limit)
        with torch.no_grad():
            ids = ar_generate(model, batch.input_ids, batch.attention_mask)
        outputs += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return outputs


def trim_ar_vocabulary(model: EncoderDecoderModel, tokenizer, token_ids) -> tuple[EncoderDecoderModel, object]:
    """A copy of a BERT2BERT model and its WordPiece tokenizer with only `token_ids` (plus the special tokens) left,
    renumbered in their old order: the embedding tables and the LM head shrink to those rows. Words the kept pieces
    spell are tokenised exactly as before (WordPiece matches the longest piece, and every piece the full vocabulary
    chose for them is kept); other words read as unk. The AR model's counterpart of DEER's `trim_vocabulary`, which
    keeps the tokenizer and maps ids to rows instead: `EncoderDecoderModel` has no such map, so the ids change."""
    keep = sorted(set(int(i) for i in token_ids) | set(tokenizer.all_special_ids))
    new_id = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece" or spec["post_processor"]["type"] != "TemplateProcessing":
        raise ValueError("trim_ar_vocabulary handles BERT-style WordPiece tokenizers; this one is "
                         f"{spec['model']['type']} with {spec['post_processor']['type']}.")
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
    state = {key: tensor[rows] if tensor.dim() and tensor.shape[0] == old_size and ("word_embeddings" in key or
                                                                              ".predictions." in key) else tensor
             for key, tensor in model.state_dict().items()}
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
    return trimmed.eval(), trimmed_tokenizer


def drop_bos(dataset):
    """Labels [bos w1 .. wn eos] -> [w1 .. wn eos]: the model shifts them right behind decoder_start (= bos)."""
    return dataset.map(lambda row: {"labels": row["labels"][1:]}, desc="labels")


def main(argv=None):
    model_args, data_args, training_args = parse_arguments(
        (ARModelArguments, DataArguments, Seq2SeqTrainingArguments), argv)
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

    train_dataset, eval_dataset = load_datasets(data_args, training_args, tokenizer, transform=drop_bos)

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=None, label_pad_token_id=-100),
        compute_metrics=generation_metrics(tokenizer) if training_args.predict_with_generate else None,
        callbacks=run_callbacks(model_args.max_train_minutes),
    )
    train_and_evaluate(trainer, training_args, "training.train_ar", argv)
    return trainer


if __name__ == "__main__":
    main()
