"""What the pruning levels cost the full size, per training recipe, over seeds: `results/dial.json` "levels".

    python -m experiments.levels_report --task bible-de-en --data_dir data/bible-de-en-32 \
        --runs runs/bible-de-en/deer-full-seed0 runs/bible-de-en/deer-full-seed1 \
        --recipe "the shipped recipe + --full_every_step" --dial results/dial.json \
        [--key levels] [--keep_old_as levels_sandwich_distillation] [--compare_with levels_full_every_step] \
        [--command "make dial-levels ..."] [--sparsities 0 0.25 0.5 0.75] \
        [--seeds 0 1] [--no_levels results/dial-redraft-training.json] \
        [--no_levels_runs 3=runs/bible-de-en/deer-all-seed3] [--add_seeds]

Each run (one seed of the recipe, trained with the levels) decodes with the choices saved with it (`training.evaluate
--select ... --save`, made on validation at the full size); it is scored at every level on validation and test. The
same recipe without levels is read from the "rounds" of `--no_levels` (default: the dial file's, the shipped recipe's
seeds, each at its saved round count on validation), or, for a seed named in `--no_levels_runs`, from that run
(scored here at its saved decoding, in place of the file's row): each run is compared with the run of its seed
(`--seeds`, the training seed of each run; default 0, 1, ... in order) without them. The entry goes under `--key`;
the one that key held before moves to `--keep_old_as`; each level's mean on validation is compared with the entry under
`--compare_with`. With `--add_seeds` the runs are more seeds of the recipe already under `--key`: its rows of the
other seeds are kept, and the mean is taken over all. Test is reported, never used to choose.
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
    parser.add_argument("--key", default="levels", help="where the entry goes in the dial file")
    parser.add_argument("--keep_old_as", help="where the entry --key held before moves (default: it is replaced)")
    parser.add_argument("--compare_with", default="levels_full_every_step", help="the entry to compare levels with")
    parser.add_argument("--command", help="the command that trained the runs, recorded with the entry")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--seeds", type=int, nargs="+", help="each run's training seed (default: 0, 1, ...)")
    parser.add_argument("--no_levels", help="the file whose 'rounds' hold the recipe without levels (default: --dial)")
    parser.add_argument(
        "--no_levels_runs",
        nargs="+",
        default=[],
        metavar="SEED=RUN",
        help="runs without levels, each for its seed (instead of the --no_levels file), scored here on validation",
    )
    parser.add_argument(
        "--add_seeds",
        action="store_true",
        help="the runs are more seeds of the recipe under --key: its rows of other seeds are kept, the mean over all",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    metric = task_metrics(args.task)[0]
    with open(args.dial) as handle:
        dial = json.load(handle)
    run_seeds = args.seeds if args.seeds is not None else list(range(len(args.runs)))
    if len(run_seeds) != len(args.runs):
        parser.error(f"--seeds names {len(run_seeds)} seeds for {len(args.runs)} runs")
    no_levels = dial
    if args.no_levels:
        with open(args.no_levels) as handle:
            no_levels = json.load(handle)
    rounds = {row.get("seed", position): row for position, row in enumerate(no_levels["rounds"])}
    named = {}
    for item in args.no_levels_runs:
        seed, separator, run = item.partition("=")
        if not separator or not seed.isdigit() or not run:
            parser.error(f"--no_levels_runs takes SEED=RUN, not {item!r}")
        named[int(seed)] = run
    kept = []
    if args.add_seeds:
        old = dial.get(args.key)
        if old is None or old.get("recipe") != args.recipe:
            parser.error(f"--add_seeds: {args.dial} holds no entry {args.key!r} of the recipe {args.recipe!r}")
        kept = [row for row in old["seeds"] if row["seed"] not in run_seeds]
    missing = [seed for seed in run_seeds if seed not in rounds and seed not in named]
    if missing:
        parser.error(f"{args.no_levels or args.dial} has no run without levels for seed(s) {missing}")
    splits = load_splits(args.data_dir, AutoTokenizer.from_pretrained(args.runs[0]))
    for seed, run in named.items():  # (a named run is preferred to the file's row of its seed)
        scored = level_scores(run, {"validation": splits["validation"]}, [0.0], metric)
        rounds[seed] = {**scored, "validation": {str(scored["max_iterations"]): scored["validation"]["0"]}}

    seeds = []
    for seed, run in zip(run_seeds, args.runs):
        without = rounds[seed]
        row = level_scores(run, splits, args.sparsities, metric)
        row.update(seed=seed, no_levels_run=without["run"])
        row["no_levels_validation"] = without["validation"][str(without["max_iterations"])]
        row["full_size_cost"] = round(row["no_levels_validation"] - row["validation"]["0"], 2)
        seeds.append(row)
        print(json.dumps(row), flush=True)
    seeds = sorted(kept + seeds, key=lambda row: row["seed"])
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
    if args.command:
        entry["command"] = args.command
    if args.keep_old_as and args.key in dial:
        dial[args.keep_old_as] = dial[args.key]
    previous = dial.get(args.compare_with)
    if previous:  # one run's entry holds "validation", a seeds entry its "mean"
        previous_validation = previous.get("mean", previous)["validation"]
        entry["against_previous_validation"] = {
            level: round(mean["validation"][level] - previous_validation[level], 2)
            for level in mean["validation"]
            if level in previous_validation
        }
    dial[args.key] = entry
    with open(args.dial, "w") as handle:
        json.dump(dial, handle, indent=2)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
