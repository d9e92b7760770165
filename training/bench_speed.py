"""How fast `generate` is, against its floor and against autoregressive decoding, in one run on this machine.

    python -m training.bench_speed [--shapes minilm bert-base] [--threads 2] [--repeats 5] [--output FILE]

For a MiniLM-shaped and a BERT-base-shaped model (random weights of the same shape for every system), at batch 1 and
batch 32 with 48-token sources:
  floor    a plain BertForMaskedLM forward over source + draft tokens (48 + 96): one backbone pass;
  deer-k   DeerForConditionalGeneration.generate with k = 0, 1, 2, 4 rounds (exactly k: stop_when_unchanged=False);
  ar       a BERT2BERT EncoderDecoderModel of the same shape, greedy generate of 32 tokens (min_new_tokens=32) with
           its KV cache: what a transformers user would otherwise pick.
Timings are medians of repeats after a warm-up, the systems taking turns within each repeat, one thread count.

The DEER weights are random, arranged as in bench_pruning (rounds keep every token and insert nothing, so a round
costs one target pass: with nothing deleted the insertion head reuses the deletion pass), with the blank's bias
calibrated so that the 96-frame draft collapses to 32 tokens on average: both systems write outputs of the same
length. With `--trimmed_model DIR` (default: the quickstart's
model) it also times the real tiny model untrimmed against trimmed to bible-de-en's training tokens, on real verses.
"""

import argparse
import json
import os

import torch
from transformers import BertConfig, BertForMaskedLM, BertLMHeadModel, BertModel, EncoderDecoderModel

from training.measure import (
    BERT_CLS,
    BERT_MASK,
    BERT_PAD,
    BERT_SEP,
    BERT_VOCAB,
    SHAPES,
    SOURCE_LENGTH,
    build_model,
    interleaved_medians,
    set_blank_score,
    sources_batch,
)

OUTPUT_LENGTH = 32  # tokens the autoregressive model writes, and the average DEER's draft is calibrated to


def calibrate_output_length(model, sources: torch.Tensor, length: int) -> float:
    """Raise or lower the blank's score until the collapsed draft of `sources` averages `length` tokens, the
    length the autoregressive model is made to write: both systems then produce outputs of the same size.
    Returns the average reached."""
    low, high = -20.0, 20.0
    for _ in range(25):
        middle = (low + high) / 2
        set_blank_score(model, middle)
        produced = (model.generate(input_ids=sources, max_iterations=0) != 0).sum(1).float().mean().item() - 2
        low, high = (middle, high) if produced > length else (low, middle)
    return produced


def build_floor(shape: str) -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=BERT_VOCAB, **SHAPES[shape])).eval()


def build_autoregressive(shape: str) -> EncoderDecoderModel:
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=BERT_VOCAB, **SHAPES[shape]), add_pooling_layer=False)
    decoder = BertLMHeadModel(BertConfig(vocab_size=BERT_VOCAB, is_decoder=True, add_cross_attention=True,
                                         **SHAPES[shape]))
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    model.config.decoder_start_token_id, model.config.pad_token_id = BERT_CLS, BERT_PAD
    model.config.eos_token_id = BERT_SEP
    model.generation_config.decoder_start_token_id = BERT_CLS
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = BERT_PAD, BERT_SEP
    return model


def bench_shape(shape: str, repeats: int) -> list[dict]:
    deer, floor, autoregressive = build_model(shape), build_floor(shape), build_autoregressive(shape)
    sources = sources_batch()
    deer_length = calibrate_output_length(deer, sources, OUTPUT_LENGTH)
    draft_length = int(deer.draft_lengths(torch.tensor([SOURCE_LENGTH]))[0])
    joint = torch.cat([sources, torch.full((32, draft_length), BERT_MASK)], dim=1)  # source + draft placeholders
    rows = []
    for batch_size in (1, 32):
        batch, joint_batch = sources[:batch_size], joint[:batch_size]
        calls = {"floor": torch.no_grad()(lambda: floor(input_ids=joint_batch))}
        for k in (0, 1, 2, 4):
            calls[f"deer-{k}"] = (lambda k=k: deer.generate(input_ids=batch, max_iterations=k,
                                                              stop_when_unchanged=False))
        calls["ar"] = lambda: autoregressive.generate(input_ids=batch, attention_mask=torch.ones_like(batch),
                                                      max_new_tokens=OUTPUT_LENGTH, min_new_tokens=OUTPUT_LENGTH,
                                                      do_sample=False, num_beams=1)
        medians = interleaved_medians(calls, repeats if batch_size == 1 else max(2, repeats // 2))
        for name, milliseconds in medians.items():
            rows.append({"shape": shape, "batch_size": batch_size, "system": name, "latency_ms": milliseconds,
                         "output_tokens": OUTPUT_LENGTH if name == "ar" else round(deer_length, 1)})
    return rows


def bench_trimming(model_dir: str, repeats: int) -> list[dict]:
    """The real tiny model, untrimmed and trimmed to bible-de-en's training tokens, on real held-out verses."""
    from transformers import AutoTokenizer

    from modeling_deer import DeerForConditionalGeneration
    from training.bible import load_bible_pairs

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    untrimmed = DeerForConditionalGeneration.from_pretrained(model_dir).eval()
    trimmed = DeerForConditionalGeneration.from_pretrained(model_dir).eval()
    if trimmed.config.unk_token_id is None:
        trimmed.config.unk_token_id = tokenizer.unk_token_id
    splits = load_bible_pairs("bible-de-en")
    used = set()
    for column in ("source", "target"):
        for ids in tokenizer([pair[column] for pair in splits["train"]])["input_ids"]:
            used.update(ids)
    trimmed.trim_vocabulary(sorted(used))
    test = tokenizer([pair["source"] for pair in splits["test"][:32]], return_tensors="pt", padding=True)
    rows = []
    for batch_size in (1, 32):
        input_ids, attention_mask = test.input_ids[:batch_size], test.attention_mask[:batch_size]
        calls = {}
        for name, model in (("untrimmed", untrimmed), ("trimmed", trimmed)):
            for k in (0, 2):
                calls[f"{name}-{k}"] = (lambda model=model, k=k: model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, max_iterations=k, stop_when_unchanged=False))
        medians = interleaved_medians(calls, repeats)
        for name, milliseconds in medians.items():
            rows.append({"model": model_dir, "vocabulary": trimmed.config.embedding_rows if name.startswith("trimmed")
                         else untrimmed.config.embedding_rows, "batch_size": batch_size, "system": name,
                         "latency_ms": milliseconds})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trimmed_model", default="outputs/quickstart")
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = [row for shape in args.shapes for row in bench_shape(shape, args.repeats)]
    print(f"{args.threads} threads; latency per generate call in ms (median), sources of {SOURCE_LENGTH} tokens; "
          f"outputs: AR {OUTPUT_LENGTH} tokens, DEER " + ", ".join(
              f"{shape} {next(r['output_tokens'] for r in rows if r['shape'] == shape and r['system'] == 'deer-0')}"
              for shape in args.shapes) + " tokens on average")
    print("| shape | batch | floor | deer-0 | deer-1 | deer-2 | deer-4 | AR (32 tokens) | deer-0 / floor | "
          "AR / deer-0 | AR / deer-2 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape in args.shapes:
        for batch_size in (1, 32):
            cell = {r["system"]: r["latency_ms"] for r in rows if r["shape"] == shape and r["batch_size"] == batch_size}
            print(f"| {shape} | {batch_size} | " + " | ".join(f"{cell[name]:.1f}" for name in
                  ("floor", "deer-0", "deer-1", "deer-2", "deer-4", "ar"))
                  + f" | {cell['deer-0'] / cell['floor']:.2f} | {cell['ar'] / cell['deer-0']:.1f}x | "
                  f"{cell['ar'] / cell['deer-2']:.1f}x |")

    trimming = []
    if args.trimmed_model and os.path.isdir(args.trimmed_model):
        trimming = bench_trimming(args.trimmed_model, args.repeats)
        sizes = {row["system"].split("-")[0]: row["vocabulary"] for row in trimming}
        print(f"\nvocabulary trimming, {args.trimmed_model}: {sizes['untrimmed']} -> {sizes['trimmed']} rows")
        print("| batch | iterations | untrimmed ms | trimmed ms | speed-up |")
        print("|---:|---:|---:|---:|---:|")
        for batch_size in (1, 32):
            cell = {r["system"]: r["latency_ms"] for r in trimming if r["batch_size"] == batch_size}
            for k in (0, 2):
                print(f"| {batch_size} | {k} | {cell[f'untrimmed-{k}']:.1f} | {cell[f'trimmed-{k}']:.1f} | "
                      f"{cell[f'untrimmed-{k}'] / cell[f'trimmed-{k}']:.2f}x |")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"threads": args.threads, "repeats": args.repeats, "rows": rows, "trimming": trimming},
                      handle, indent=2)


if __name__ == "__main__":
    main()
