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
    levels = result("results/dial.json")["levels"]
    figures = {
        "AR best step": f"{plateau['runs']['ar']['best_step']:,}",
        "AR test": f"{plateau['runs']['ar']['test']['bleu']:.2f}",
        "DEER test": f"{plateau['runs']['deer']['test']['bleu']:.2f}",
        "levels' full-size cost": f"{levels['mean_full_size_cost']:.2f}",
    }
    readme = read("README.md")
    missing = {name: text for name, text in figures.items() if text not in readme}
    assert not missing, f"the README does not quote these figures of results/: {missing}"
