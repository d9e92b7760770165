"""DEER against the AR model, each trained until its validation score stopped improving (early stopping): both
learning curves, the step each run stopped at and the step it kept (its best), and test scores at that step.

    python -m experiments.plateau_report --task bible-de-en --data_dir data/bible-de-en-32 \
        --deer runs/bible-de-en/deer-plateau --ar runs/bible-de-en/ar-plateau --output results/plateau-bible-de-en \
        [--dial results/dial.json]

Each run folder holds the model early stopping kept (`--load_best_model_at_end`), its `learning_curve.jsonl` and
`trainer_state.json`. DEER decodes with the choices saved with it (made on validation); the AR model greedily. A run
that ended on its time limit or step budget instead of early stopping is marked `"plateau": false`: its best step is
a lower bound on where it would have stopped. Writes OUTPUT.json, OUTPUT.md and OUTPUT.png (the curves).
"""

import argparse
import json
import os

import torch
from transformers import AutoTokenizer

from experiments.quality_report import plot_curves, read_curve
from experiments.report import markdown_table
from experiments.tasks import task_metrics
from modeling_deer import DeerForConditionalGeneration
from training.data import read_inputs
from training.decoding import ar_generate_texts, generate_texts, load_ar
from training.metrics import normalize, score


def run_summary(path: str, metric: str, patience: int) -> dict:
    """The curve and the stopping facts of one run: its last step, its best step and score, whether it stopped
    because `patience` evaluations in a row did not improve on the best."""
    with open(os.path.join(path, "trainer_state.json")) as handle:
        state = json.load(handle)
    curve = read_curve(path)
    key = f"eval_{metric}"
    best_step, best = state.get("best_global_step"), state.get("best_metric")
    if best_step is None:  # a run without evaluations: its last step, scored as its knobs were chosen
        best_step, best = state["global_step"], tuned_validation(path, metric)
    after_best = [row for row in curve if row["step"] > best_step]
    return {
        "run": path,
        "stopped_at_step": state["global_step"],
        "best_step": best_step,
        "best_validation": round(best, 2) if best is not None else None,
        "plateau": len(after_best) >= patience,
        "curve": [
            {"step": row["step"], "train_seconds": row["train_seconds"], key: round(row[key], 2)} for row in curve
        ],
    }


def tuned_validation(path: str, metric: str) -> float | None:
    """A DEER run's validation score at the decoding it saved (`tune_generation.json`), if it was tuned."""
    tuned = os.path.join(path, "tune_generation.json")
    if not os.path.exists(tuned):
        return None
    with open(tuned) as handle:
        record = json.load(handle)
    with open(os.path.join(path, "generation_config.json")) as handle:
        saved = json.load(handle)
    return next(
        row[metric]
        for row in record["rounds"]
        if row["refinement"] == saved.get("refinement", "edits") and row["max_iterations"] == saved["max_iterations"]
    )


def update_dial(dial_path: str, report_path: str, report: dict):
    """The dial file's 'plateau' list holds one summary per task's report (the curves stay in the report): this
    report's replaces the one from the same file."""
    with open(dial_path) as handle:
        dial = json.load(handle)
    summary = {
        "file": report_path,
        "command": "make plateau-report",
        **{name: {key: value for key, value in run.items() if key != "curve"} for name, run in report["runs"].items()},
        "deer_minus_ar_test": report["deer_minus_ar_test"],
    }
    dial["plateau"] = [entry for entry in dial.get("plateau", []) if entry.get("file") != report_path] + [summary]
    with open(dial_path, "w") as handle:
        json.dump(dial, handle, indent=2)
        handle.write("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data_dir", required=True, help="holds test.jsonl")
    parser.add_argument("--deer", required=True)
    parser.add_argument("--ar", required=True)
    parser.add_argument("--patience", type=int, default=4, help="the runs' --early_stopping_patience")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", required=True, help="OUTPUT.json, OUTPUT.md and OUTPUT.png are written")
    parser.add_argument("--dial", help="a dial file (results/dial.json) whose 'plateau' list gets this summary")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    metric = task_metrics(args.task)[0]
    sources, targets = read_inputs(os.path.join(args.data_dir, "test.jsonl"), "source", "target")
    sources, targets = list(sources), list(targets)

    report = {"task": args.task, "metric": metric, "patience": args.patience, "runs": {}}
    deer_tokenizer = AutoTokenizer.from_pretrained(args.deer)
    deer = DeerForConditionalGeneration.from_pretrained(args.deer).eval()
    outputs = generate_texts(deer, deer_tokenizer, sources, progress=False)
    report["runs"]["deer"] = {
        **run_summary(args.deer, metric, args.patience),
        "decoding": {"refinement": deer.generation_config.refinement, "rounds": deer.generation_config.max_iterations},
        "test": {name: round(value, 2) for name, value in score(outputs, normalize(deer_tokenizer, targets)).items()},
    }
    ar_tokenizer = AutoTokenizer.from_pretrained(args.ar)
    outputs = ar_generate_texts(load_ar(args.ar), ar_tokenizer, sources, batch_size=32)
    report["runs"]["ar"] = {
        **run_summary(args.ar, metric, args.patience),
        "decoding": "greedy",
        "test": {name: round(value, 2) for name, value in score(outputs, normalize(ar_tokenizer, targets)).items()},
    }
    deer_test, ar_test = (report["runs"][name]["test"][metric] for name in ("deer", "ar"))
    report["deer_minus_ar_test"] = round(deer_test - ar_test, 2)

    with open(args.output + ".json", "w") as handle:
        json.dump(report, handle, indent=2)
    if args.dial:
        update_dial(args.dial, args.output + ".json", report)
    rows = [
        [
            name,
            run["stopped_at_step"],
            run["best_step"],
            "yes" if run["plateau"] else "no (a lower bound)",
            f"{run['best_validation']:.2f}" if run["best_validation"] is not None else "",
            f"{run['test'][metric]:.2f}",
            f"{run['test']['chrf']:.2f}",
        ]
        for name, run in report["runs"].items()
    ]
    table = markdown_table(
        ["system", "stopped at step", "best step", "plateau reached", f"validation {metric}", f"test {metric}",
         "test chrF"],
        rows,
    )  # fmt: skip
    with open(args.output + ".md", "w") as handle:
        handle.write(f"{args.task}: trained until validation stops improving (patience {args.patience})\n\n{table}\n")
    curves = {"DEER": read_curve(args.deer), "AR": read_curve(args.ar)}
    plot_curves(curves, metric, args.task, args.output + ".png")
    print(table)


if __name__ == "__main__":
    main()
