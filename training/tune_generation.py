"""Pick the decoding's `eos_penalty` on validation data and save it in the checkpoint's generation config.

    python -m training.tune_generation --model DIR --validation_file data/bible-de-en-32/validation.jsonl \
        [--iterations 2] [--penalties 0 0.5 1 1.5 2 3] [--metric bleu]

`eos_penalty` is subtracted from the insertion head's "insert nothing" score in every edit round: larger values give
longer outputs. A model trained briefly writes too short (its CTC draft merges neighbouring words), and a penalty
chosen on validation data wins part of that back. The best value (ties go to the smaller penalty) is written to the
model's generation_config.json, so `generate()`, the benchmark and a pushed model use it; every candidate's scores
are printed and saved as tune_generation.json in the model directory. The test split is never looked at.
"""

import argparse
import json
import os

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.generate import generate_texts, read_inputs
from training.metrics import normalize, score


def tune_eos_penalty(model, tokenizer, sources: list[str], references: list[str], penalties: list[float],
                     iterations: int, metric: str, progress: bool = True) -> tuple[float, list[dict]]:
    """Score each penalty at `iterations` rounds; returns the best one and every candidate's scores."""
    rows = []
    for penalty in tqdm(penalties, desc="eos_penalty candidates", disable=not progress):
        model.generation_config.eos_penalty = penalty
        outputs = generate_texts(model, tokenizer, sources, iterations, batch_size=32, progress=False)
        words = sum(len(text.split()) for text in outputs) / len(outputs)
        rows.append({"eos_penalty": penalty, **score(outputs, references), "words_per_output": words})
    best = max(rows, key=lambda row: (row[metric], -row["eos_penalty"]))
    return best["eos_penalty"], rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a DEER checkpoint directory (with its tokenizer)")
    parser.add_argument("--validation_file", required=True, help="JSON lines / CSV / TSV with source and target")
    parser.add_argument("--source_column", default="source")
    parser.add_argument("--target_column", default="target")
    parser.add_argument("--iterations", type=int, default=2, help="edit rounds to tune for")
    parser.add_argument("--penalties", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--metric", choices=["bleu", "chrf", "rougeL"], default="bleu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1: eos_penalty acts in the edit rounds only")
    if any(penalty < 0 for penalty in args.penalties):
        parser.error("--penalties must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    sources, targets = read_inputs(args.validation_file, args.source_column, args.target_column)
    if targets is None:
        parser.error(f"{args.validation_file} has no '{args.target_column}' column to score against")
    model = DeerForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    best, rows = tune_eos_penalty(model, tokenizer, sources, normalize(tokenizer, targets), args.penalties,
                                  args.iterations, args.metric)
    for row in rows:
        print(f"eos_penalty {row['eos_penalty']:4g} | BLEU {row['bleu']:6.2f} | chrF {row['chrf']:6.2f} | "
              f"ROUGE-L {row['rougeL']:6.2f} | {row['words_per_output']:.1f} words per output")
    model.generation_config.eos_penalty = best
    model.generation_config.save_pretrained(args.model)
    with open(os.path.join(args.model, "tune_generation.json"), "w") as handle:
        json.dump({"validation_file": args.validation_file, "iterations": args.iterations, "metric": args.metric,
                   "eos_penalty": best, "candidates": rows}, handle, indent=2)
    print(f"eos_penalty {best:g} (best {args.metric} on {len(sources)} validation pairs) saved to "
          f"{os.path.join(args.model, 'generation_config.json')}")


if __name__ == "__main__":
    main()
