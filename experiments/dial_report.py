"""The dial DEER promises, measured: what each round count buys over the draft (several seeds), what each pruning
level costs, against the same recipe trained without levels. Writes `results/dial.json` (and a markdown table).

    python -m experiments.dial_report --task bible-de-en --data_dir data/bible-de-en-32 \
        --seeds runs/bible-de-en/deer-all runs/bible-de-en/deer-all-seed1 runs/bible-de-en/deer-all-seed2 \
        --levels runs/bible-de-en/deer-all-levels --no_levels runs/bible-de-en/deer-all \
        [--iterations 0 1 2 4] [--sparsities 0 0.25 0.5 0.75] --output results/dial

Every model decodes with the choices saved with it (`training.evaluate --select ... --save`, made on validation:
the kind of round, its knobs); only the round count and the level vary here. The rounds rows give each seed's
score at every count on validation and test; the levels rows give the levels model at every level, at its saved
round count, and the no-levels model's validation score at its saved round count. Test is reported, never used
to choose. `plateau` (DEER against the AR model trained to a plateau) stays empty until those runs exist.
"""

import argparse
import json
import os

import torch
from transformers import AutoTokenizer

from experiments.report import markdown_table
from experiments.tasks import task_metrics
from modeling_deer import DeerForConditionalGeneration
from training.data import read_inputs
from training.decoding import generate_texts
from training.metrics import normalize, score


def load_splits(data_dir: str, tokenizer) -> dict[str, tuple[list[str], list[str]]]:
    splits = {}
    for split in ("validation", "test"):
        sources, targets = read_inputs(os.path.join(data_dir, f"{split}.jsonl"), "source", "target")
        splits[split] = (list(sources), normalize(tokenizer, list(targets)))
    return splits


def scores_by_count(model, tokenizer, splits: dict, iterations: list[int], metric: str) -> dict:
    """{split: {round count: score}} with the model's saved decoding choices."""
    return {
        split: {
            str(count): round(
                score(generate_texts(model, tokenizer, sources, progress=False, max_iterations=count), references)[
                    metric
                ],
                2,
            )
            for count in iterations
        }
        for split, (sources, references) in splits.items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data_dir", required=True, help="holds validation.jsonl and test.jsonl")
    parser.add_argument("--seeds", nargs="+", required=True, help="DEER runs of one recipe, one per seed")
    parser.add_argument("--levels", default=None, help="the recipe trained with pruning levels")
    parser.add_argument("--no_levels", default=None, help="the same recipe without levels (default: the first seed)")
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", required=True, help="OUTPUT.json and OUTPUT.md are written")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    metric = task_metrics(args.task)[0]
    tokenizer = AutoTokenizer.from_pretrained(args.seeds[0])
    splits = load_splits(args.data_dir, tokenizer)

    report = {"task": args.task, "metric": metric, "rounds": [], "levels": None, "plateau": []}
    for seed, path in enumerate(args.seeds):
        model = DeerForConditionalGeneration.from_pretrained(path).eval()
        saved = {
            "refinement": model.generation_config.refinement,
            "max_iterations": model.generation_config.max_iterations,
        }  # (before scoring sets other counts)
        by_count = scores_by_count(model, tokenizer, splits, args.iterations, metric)
        report["rounds"].append({"seed": seed, "run": path, **saved, **by_count})
        print(f"{path}: {by_count}", flush=True)
    if args.levels:
        no_levels = DeerForConditionalGeneration.from_pretrained(args.no_levels or args.seeds[0]).eval()
        sources, references = splits["validation"]
        outputs = generate_texts(no_levels, tokenizer, sources, progress=False)  # its saved round count
        levels = {
            "run": args.levels,
            "no_levels_run": args.no_levels or args.seeds[0],
            "no_levels_validation": round(score(outputs, references)[metric], 2),
            "validation": {},
            "test": {},
        }
        model = DeerForConditionalGeneration.from_pretrained(args.levels).eval()
        for sparsity in args.sparsities:
            model.set_sparsity(sparsity)
            for split, (sources, references) in splits.items():
                outputs = generate_texts(model, tokenizer, sources, progress=False)  # its saved round count
                levels[split][f"{sparsity:g}"] = round(score(outputs, references)[metric], 2)
        report["levels"] = levels
        print(f"levels: {levels}", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".json", "w") as handle:
        json.dump(report, handle, indent=2)
    counts = [str(count) for count in args.iterations]
    rows = [
        [f"seed {row['seed']}", split]
        + [f"{row[split][count]:.2f}" for count in counts]
        + [f"{max(row[split][count] for count in counts[1:]) - row[split]['0']:+.2f}"]
        for row in report["rounds"]
        for split in ("validation", "test")
    ]
    table = markdown_table(["run", "split"] + [f"{count} rounds" for count in counts] + ["best rounds - draft"], rows)
    with open(args.output + ".md", "w") as handle:
        handle.write(f"{args.task}, {metric}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
