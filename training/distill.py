"""Sequence-level knowledge distillation: replace the targets of a data file with a trained autoregressive model's
greedy outputs, for DEER to learn from.

    python -m training.distill --teacher runs/bible-de-en/ar --input data/bible-de-en-32/train.jsonl \
        --output data/bible-de-en-32-distilled/train.jsonl [--batch_size 64]
    torchrun --nproc_per_node 4 -m training.distill ...   # the sources split between 4 processes, one file written

Non-autoregressive models learn much better from a teacher's outputs than from human references: one consistent
rendering per source instead of many possible ones (Kim & Rush 2016; nearly every NAT system, DEER's evaluation
included, trains on distilled data). The teacher is an `EncoderDecoderModel` from `training.train_ar`; the output
file keeps every other column, with the original target kept as `reference`. Only training data should be
distilled: evaluation keeps the human references.
"""

import argparse
import json
import os

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from training.cli import add_data_arguments
from training.data import load_split
from training.decoding import ar_generate_texts, generate_across_processes, load_ar, process_device


def distill(teacher, tokenizer, sources: list[str], batch_size: int, progress: bool = True) -> list[str]:
    """The teacher's greedy output for every source, in order (batches of similar length, less padding)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs = [None] * len(sources)
    for start in tqdm(range(0, len(order), batch_size), desc="distilling", disable=not progress):
        indices = order[start : start + batch_size]
        for i, text in zip(indices, ar_generate_texts(teacher, tokenizer, [sources[i] for i in indices], batch_size)):
            outputs[i] = text
    return outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="an EncoderDecoderModel checkpoint (training.train_ar)")
    parser.add_argument(
        "--input", required=True, help="the training split with source and target (any form deer-train reads)"
    )
    parser.add_argument("--output", required=True, help="JSON lines to write")
    add_data_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        parser.error("--output must differ from --input: the references would be lost")
    if args.threads:
        torch.set_num_threads(args.threads)

    # Any form deer-train reads; the rows are written back as JSON lines, the targets replaced.
    rows = load_split(
        args.input,
        args.source_column,
        args.target_column,
        None,
        source_lang=args.source_lang,
        target_lang=args.target_lang,
        split="train",
    ).to_list()
    sources = [row[args.source_column] for row in rows]
    teacher = load_ar(args.teacher).to(process_device())  # several processes: a GPU each, where there are
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    outputs = generate_across_processes(lambda share: distill(teacher, tokenizer, share, args.batch_size), sources)
    if outputs is None:  # another process writes the file
        return
    empty = sum(not text.strip() for text in outputs)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        for row, text in zip(rows, outputs):
            if not text.strip():  # nothing to learn from an empty output: keep the human reference
                text = row[args.target_column]
            row = {**row, "reference": row[args.target_column], args.target_column: text}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(
        f"{len(rows)} targets distilled by {args.teacher} into {args.output}"
        + (f" ({empty} empty outputs kept their reference)" if empty else "")
    )


if __name__ == "__main__":
    main()
