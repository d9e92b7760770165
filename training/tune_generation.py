"""Pick the decoding's length knobs on validation data and save them in the checkpoint's generation config.

    python -m training.tune_generation --model DIR --validation_file data/bible-de-en-32/validation.jsonl \
        [--iterations 2] [--blank_penalties 0 1 2 3 4 6] [--deletion_penalties 0 1 2 4] \
        [--penalties 0 0.5 1 1.5 2 3] [--metric bleu]

Three knobs set how long DEER writes:
* `blank_penalty` is subtracted from the CTC blank's score at every draft frame: larger values give longer drafts;
* `deletion_penalty` is subtracted from the deletion head's "delete" score in every edit round: larger values delete
  less;
* `eos_penalty` is subtracted from the insertion head's "insert nothing" score in every edit round: larger values
  give longer outputs.
They are tuned one after the other at `--iterations` rounds: first `blank_penalty` (the others at 0), then
`deletion_penalty`, then `eos_penalty`, each at the best values found before it. With `--iterations 0` only
`blank_penalty` matters and only it is tuned.
The best values (ties go to the smaller penalty) are written to the model's generation_config.json with
`max_iterations` set to `--iterations`, the count they were tuned for, so that a plain `generate()`, the benchmark
and a pushed model decode as tuned; every candidate's scores are printed and saved as
tune_generation.json in the model directory. The test split is never looked at.
"""

import json
import os

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.cli import tune_generation_parser
from training.data import read_inputs
from training.decoding import generate_texts
from training.metrics import normalize, score


def tune_penalty(model, tokenizer, sources: list[str], references: list[str], name: str, values: list[float],
                 iterations: int, metric: str, progress: bool = True) -> tuple[float, list[dict]]:
    """Score each value of the generation config's `name` at `iterations` rounds (the other knobs as they are);
    returns the best value and every candidate's scores (with both penalties)."""
    rows = []
    config = model.generation_config
    for value in tqdm(values, desc=f"{name} candidates", disable=not progress):
        setattr(config, name, value)
        outputs = generate_texts(model, tokenizer, sources, iterations, batch_size=32, progress=False)
        words = sum(len(text.split()) for text in outputs) / len(outputs)
        rows.append({"tuned": name, "blank_penalty": config.blank_penalty,
                     "deletion_penalty": config.deletion_penalty, "eos_penalty": config.eos_penalty,
                     **score(outputs, references), "words_per_output": words})
    best = max(rows, key=lambda row: (row[metric], -row[name]))[name]
    setattr(config, name, best)
    return best, rows


def main(argv=None):
    parser = tune_generation_parser()
    args = parser.parse_args(argv)
    if args.iterations < 0:
        parser.error("--iterations must be at least 0")
    if any(penalty < 0 for penalty in args.penalties + args.blank_penalties + args.deletion_penalties):
        parser.error("--penalties, --blank_penalties and --deletion_penalties must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    sources, targets = read_inputs(args.validation_file, args.source_column, args.target_column)
    if targets is None:
        parser.error(f"{args.validation_file} has no '{args.target_column}' column to score against")
    model = DeerForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    references = normalize(tokenizer, targets)
    config = model.generation_config
    config.eos_penalty = config.deletion_penalty = 0.0
    rows = []
    stages = [("blank_penalty", args.blank_penalties)]
    if args.iterations > 0:
        stages += [("deletion_penalty", args.deletion_penalties), ("eos_penalty", args.penalties)]
    for name, values in stages:
        rows += tune_penalty(model, tokenizer, sources, references, name, values, args.iterations, args.metric)[1]
    for row in rows:
        print(f"blank_penalty {row['blank_penalty']:4g} | deletion_penalty {row['deletion_penalty']:4g} | eos_penalty "
              f"{row['eos_penalty']:4g} | BLEU {row['bleu']:6.2f} | chrF {row['chrf']:6.2f} | ROUGE-L "
              f"{row['rougeL']:6.2f} | {row['words_per_output']:.1f} words per output")
    config.max_iterations = args.iterations  # the knobs travel with the round count they were tuned for
    config.save_pretrained(args.model)
    chosen = {name: getattr(config, name) for name in ("blank_penalty", "deletion_penalty", "eos_penalty")}
    with open(os.path.join(args.model, "tune_generation.json"), "w") as handle:
        json.dump({"validation_file": args.validation_file, "iterations": args.iterations, "metric": args.metric,
                   **chosen, "candidates": rows}, handle, indent=2)
    print(", ".join(f"{name} {value:g}" for name, value in chosen.items()) + f" (best {args.metric} on "
          f"{len(sources)} validation pairs at {args.iterations} iterations) and max_iterations {args.iterations} saved to "
          f"{os.path.join(args.model, 'generation_config.json')}")


if __name__ == "__main__":
    main()
