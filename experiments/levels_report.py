"""What the pruning levels cost the full size, per training recipe, over seeds: `results/dial.json` "levels".

    python -m experiments.levels_report --task bible-de-en --data_dir data/bible-de-en-32 \
        --runs runs/bible-de-en/deer-sandwich-distill-seed0 runs/bible-de-en/deer-sandwich-distill-seed1 \
        --recipe "sandwich rule + in-place distillation (weight 1)" --dial results/dial.json \
        [--previous_key levels_full_every_step] [--sparsities 0 0.25 0.5 0.75]

Each run (one seed of the recipe, trained with the levels) decodes with the choices saved with it (`training.evaluate
--select ... --save`, made on validation at the full size); it is scored at every level on validation and test. The
same recipe without levels is read from the dial file's "rounds" (the shipped recipe's seeds, each at its saved round
count on validation): seed i of the levels is compared with seed i without them. The entry that "levels" held before
is kept under `--previous_key`. Test is reported, never used to choose.
"""

import argparse
import json
import statistics

import torch
from transformers import AutoTokenizer

from experiments.dial_report import load_splits
from experiments.tasks import task_metrics
from modeling_deer import DeerForConditionalGeneration
from training.decoding import generate_texts
from training.metrics import score


def level_scores(run: str, splits: dict, sparsities: list[float], metric: str) -> dict:
    """{split: {level: score}} of one run at its saved decoding choices."""
    model = DeerForConditionalGeneration.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    scores = {split: {} for split in splits}
    for sparsity in sparsities:
        model.set_sparsity(sparsity)
        for split, (sources, references) in splits.items():
            outputs = generate_texts(model, tokenizer, sources, progress=False)
            scores[split][f"{sparsity:g}"] = round(score(outputs, references)[metric], 2)
    return {
        "run": run,
        "refinement": model.generation_config.refinement,
        "max_iterations": model.generation_config.max_iterations,
        **scores,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data_dir", required=True, help="holds validation.jsonl and test.jsonl")
    parser.add_argument("--runs", nargs="+", required=True, help="the recipe trained with levels, one run per seed")
    parser.add_argument("--recipe", required=True, help="what the runs were trained with, in words")
    parser.add_argument("--dial", default="results/dial.json", help="the dial file to update")
    parser.add_argument("--previous_key", default="levels_full_every_step", help="where the old entry is kept")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    metric = task_metrics(args.task)[0]
    with open(args.dial) as handle:
        dial = json.load(handle)
    if len(dial["rounds"]) < len(args.runs):
        parser.error(f"{args.dial} has {len(dial['rounds'])} seeds without levels; {len(args.runs)} runs given")
    splits = load_splits(args.data_dir, AutoTokenizer.from_pretrained(args.runs[0]))

    seeds = []
    for seed, run in enumerate(args.runs):
        without = dial["rounds"][seed]
        row = level_scores(run, splits, args.sparsities, metric)
        row.update(seed=seed, no_levels_run=without["run"])
        row["no_levels_validation"] = without["validation"][str(without["max_iterations"])]
        row["full_size_cost"] = round(row["no_levels_validation"] - row["validation"]["0"], 2)
        seeds.append(row)
        print(json.dumps(row), flush=True)
    mean = {
        split: {level: round(statistics.mean(row[split][level] for row in seeds), 2) for level in seeds[0][split]}
        for split in ("validation", "test")
    }
    entry = {
        "recipe": args.recipe,
        "metric": metric,
        "seeds": seeds,
        "mean": mean,
        "mean_full_size_cost": round(statistics.mean(row["full_size_cost"] for row in seeds), 2),
    }
    old = dial.get("levels")
    if old and "recipe" not in old and args.previous_key not in dial:  # the old entry moves once, then stays
        dial[args.previous_key] = old
    previous = dial.get(args.previous_key)
    if previous:
        entry["against_previous_validation"] = {
            level: round(mean["validation"][level] - previous["validation"][level], 2)
            for level in mean["validation"]
            if level in previous["validation"]
        }
    dial["levels"] = entry
    with open(args.dial, "w") as handle:
        json.dump(dial, handle, indent=2)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
