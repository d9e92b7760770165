"""The step cost of each way to train the pruning levels: one optimizer step (forward, backward, AdamW) of a trained
DEER checkpoint on the same real training batch, for each recipe, the recipes taking turns (medians), in the
joint phase (edit losses on) and in the CTC-only phase.

    python -m experiments.level_recipes --model checkpoints/bible-de-en/deer --threads 1 --repeats 10 \
        --output results/level-recipes-step-cost

Recipes: no levels; one level drawn per step (four levels 0 / 0.25 / 0.5 / 0.75); the full size every step beside
one smaller level (`full_every_step`); the sandwich rule (the full size, the smallest level and one between:
`sandwich_rule`); each of the last two with in-place distillation (`distillation_weight` 1). Writes OUTPUT.json and
OUTPUT.md.
"""

import argparse
import copy
import json

import torch
from transformers import AutoTokenizer

from experiments.measure import interleaved_medians, optimizer_step, training_batch
from experiments.report import markdown_table
from modeling_deer import DeerForConditionalGeneration


LEVELS = [0.0, 0.25, 0.5, 0.75]
RECIPES = {
    "no levels": {},
    "one level per step": {"sparsity_levels": LEVELS},
    "full size + one level (full_every_step)": {"sparsity_levels": LEVELS, "full_every_step": True},
    "full_every_step + distillation": {"sparsity_levels": LEVELS, "full_every_step": True, "distillation_weight": 1.0},
    "sandwich rule": {"sparsity_levels": LEVELS, "sandwich_rule": True},
    "sandwich rule + distillation": {"sparsity_levels": LEVELS, "sandwich_rule": True, "distillation_weight": 1.0},
}
EDIT_WEIGHTS = ("insertion_loss_weight", "word_loss_weight", "deletion_loss_weight")


# Every recipe sets all four fields (the checkpoint's own config may have been trained with any of them).
NO_LEVELS = {"sparsity_levels": [], "full_every_step": False, "sandwich_rule": False, "distillation_weight": 0.0}


def recipe_model(model: DeerForConditionalGeneration, settings: dict, edit_weight: float):
    recipe = copy.deepcopy(model)
    for name, value in {**NO_LEVELS, **settings}.items():
        setattr(recipe.config, name, value)
    for name in EDIT_WEIGHTS:
        setattr(recipe.config, name, edit_weight)
    recipe.freeze_unused_scores()
    return recipe


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="checkpoints/bible-de-en/deer")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", required=True, help="OUTPUT.json and OUTPUT.md are written")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = DeerForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    batch = training_batch(AutoTokenizer.from_pretrained(args.model), args.batch_size, 32)
    rows = []
    for phase, edit_weight in (("joint", model.config.insertion_loss_weight or 0.5), ("CTC only", 0.0)):
        torch.manual_seed(0)
        calls = {
            name: optimizer_step(recipe_model(model, settings, edit_weight), batch)
            for name, settings in RECIPES.items()
        }
        medians = interleaved_medians(calls, args.repeats)
        for name, milliseconds in medians.items():
            rows.append(
                {
                    "phase": phase,
                    "recipe": name,
                    "step_ms": round(milliseconds, 1),
                    "vs_no_levels": round(milliseconds / medians["no levels"], 2),
                }
            )
            print(rows[-1], flush=True)
    report = {
        "model": args.model,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "rows": rows,
    }
    with open(args.output + ".json", "w") as handle:
        json.dump(report, handle, indent=2)
    table = markdown_table(
        ["phase", "recipe", "ms per step", "x no levels"],
        [[row["phase"], row["recipe"], f"{row['step_ms']:.0f}", f"{row['vs_no_levels']:.2f}"] for row in rows],
    )
    with open(args.output + ".md", "w") as handle:
        handle.write(f"{args.model}, batch {args.batch_size}, {args.threads} thread(s)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
