"""Which attention heads and FFN neurons each pruning level keeps, per layer, beside the level's validation score:
why a level holds on one seed and collapses on another.

    python -m experiments.level_units --dial results/dial.json \
        --keys levels levels_learned_scores levels_full_every_step_seeds levels_sandwich_distillation \
        --output results/level-units

Reads each seed's run folder and scores from the dial file's entries (`experiments.levels_report` wrote them), loads
the run and ranks its units at every level (no decoding). Writes OUTPUT.json and OUTPUT.md: one row per run and level
with the heads and neurons kept per layer, the run's level ranking and its head scores. A run whose folder is gone
(runs live outside the repository) keeps the units an earlier OUTPUT.json recorded for it; a run in neither place is
an error.
"""

import argparse
import json
import os

from experiments.report import markdown_table
from modeling_deer import DeerForConditionalGeneration


def run_units(run: str, levels: list[str]) -> dict:
    """{"level_ranking", "head_scores", "levels": {level: {"heads", "neurons"}}} of one run."""
    model = DeerForConditionalGeneration.from_pretrained(run)
    units = {}
    for level in levels:
        report = model.sparsity_report(float(level))
        units[level] = {"heads": report.heads_per_layer, "neurons": report.neurons_per_layer}
    return {
        "level_ranking": model.config.level_ranking,
        "head_scores": [
            [round(float(s), 4) for s in layer.attention.head_scores.detach()] for layer in model.model.layers
        ],
        "levels": units,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dial", default="results/dial.json", help="the dial file whose entries list the runs")
    parser.add_argument("--keys", nargs="+", required=True, help="entries of the dial file (each with its seeds)")
    parser.add_argument("--output", required=True, help="OUTPUT.json and OUTPUT.md are written")
    args = parser.parse_args(argv)
    with open(args.dial) as handle:
        dial = json.load(handle)
    missing = [key for key in args.keys if key not in dial or "seeds" not in dial[key]]
    if missing:
        parser.error(f"{args.dial} has no entry with seeds under {', '.join(missing)}")

    recorded = {}  # run folder -> its units, from an earlier report
    if os.path.exists(args.output + ".json"):
        with open(args.output + ".json") as handle:
            for runs in json.load(handle)["entries"].values():
                recorded.update({run["run"]: run for run in runs})
    rows, entries = [], {}
    for key in args.keys:
        entries[key] = []
        for seed in dial[key]["seeds"]:
            levels = list(seed["validation"])
            if os.path.isdir(seed["run"]):
                units = run_units(seed["run"], levels)
            elif seed["run"] in recorded:
                units = {name: recorded[seed["run"]][name] for name in ("level_ranking", "head_scores", "levels")}
            else:
                parser.error(
                    f"{seed['run']} ({key}, seed {seed['seed']}) is gone and {args.output}.json has no record of it"
                )
            entries[key].append({"run": seed["run"], "seed": seed["seed"], **units, "validation": seed["validation"]})
            for level in levels:
                kept = units["levels"][level]
                rows.append(
                    [key, seed["seed"], units["level_ranking"], level, kept["heads"], kept["neurons"],
                     f"{seed['validation'][level]:.2f}"]
                )  # fmt: skip
    with open(args.output + ".json", "w") as handle:
        json.dump({"dial": args.dial, "entries": entries}, handle, indent=2)
    table = markdown_table(
        ["entry", "seed", "ranking", "level", "heads kept per layer", "neurons kept per layer", "validation"], rows
    )
    with open(args.output + ".md", "w") as handle:
        handle.write(f"The units each pruning level keeps, per run of {args.dial}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
