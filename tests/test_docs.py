"""What a user reads is what was measured: the README's figures against the result files they come from."""

import json
import os

from experiments.report import headline_table


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path: str) -> str:
    with open(os.path.join(REPOSITORY, path), encoding="utf-8") as handle:
        return handle.read()


def result(path: str) -> dict:
    return json.loads(read(path))


def test_the_readme_headline_table_is_the_shipped_pairs_report():
    """The table under "What it buys" is `python -m experiments.report HEADLINE results/bible-de-en-shipped.json`."""
    assert headline_table(result("results/bible-de-en-shipped.json")) in read("README.md")


def test_the_readme_figures_come_from_the_result_files():
    """Each figure the README quotes in its prose, formatted from its result file."""
    plateau = result("results/plateau-bible-de-en.json")
    dial = result("results/dial.json")
    levels, shipped_recipe = dial["levels"], dial["levels_full_every_step_seeds"]
    shipped = result("results/bible-de-en-shipped.json")["rows"]
    grid = {(row["sparsity"], row["iterations"]): row["bleu"] for row in shipped if row["run"] != "ar"}
    figures = {
        "AR best step": f"{plateau['runs']['ar']['best_step']:,}",
        "AR test": f"{plateau['runs']['ar']['test']['bleu']:.2f}",
        "DEER test": f"{plateau['runs']['deer']['test']['bleu']:.2f}",
        "levels' full-size cost": f"{levels['mean_full_size_cost']:.2f}",
        "the shipped recipe's levels' full-size cost": f"{shipped_recipe['mean_full_size_cost']:.2f}",
        "the shipped quarter size's gap at one round": f"{grid[(0.0, 1)] - grid[(0.75, 1)]:.2f}",
    }
    readme = read("README.md")
    missing = {name: text for name, text in figures.items() if text not in readme}
    assert not missing, f"the README does not quote these figures of results/: {missing}"


def test_the_shipped_cards_figures_come_from_the_result_files():
    """The figures of checkpoints/bible-de-en/{deer,ar}/README.md, each formatted from the file it comes from:
    (card, figure, source)."""
    from experiments.report import levels_sentence

    report = result("results/bible-de-en-shipped.json")
    ar = next(row for row in report["rows"] if row["run"] == "ar")
    plateau = result("results/plateau-bible-de-en.json")["runs"]
    deer_rounds = result("checkpoints/bible-de-en/deer/generation_config.json")["max_iterations"]
    deer_card, ar_card = read("checkpoints/bible-de-en/deer/README.md"), read("checkpoints/bible-de-en/ar/README.md")
    figures = [
        ("deer", "the levels' cost and speed-up", levels_sentence(report, deer_rounds), deer_card),
        (
            "deer",
            "the AR row of its grid",
            f"| {ar['bleu']:.2f} | {ar['chrf']:.2f} | {ar['latency_ms_b1']:.1f} |",
            deer_card,
        ),
        ("ar", "test BLEU and chrF", f"BLEU {ar['bleu']:.2f}, chrF {ar['chrf']:.2f}", ar_card),
        (
            "ar",
            "latency",
            f"{ar['latency_ms_b1']:.1f} ms per sentence at batch 1 and {ar['latency_ms_b32']:.2f}",
            ar_card,
        ),
        ("ar", "stopping step", f"training ended at step {plateau['ar']['stopped_at_step']}", ar_card),
        ("ar", "best step", f"the best one, step {plateau['ar']['best_step']}", ar_card),
    ]
    missing = [(card, name, text) for card, name, text, document in figures if not text or text not in document]
    assert not missing, f"figures the cards do not quote as their result files give them: {missing}"
