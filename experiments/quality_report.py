"""Quality of several DEER runs against the autoregressive reference, on validation and test, and their learning
curves: the ablation table and the learning-curve figure of the README.

    python -m experiments.quality_report --task bible-de-en --data_dir data/bible-de-en-32 \
        --runs "paper recipe=runs/bible-de-en/deer-paper" "all fixes=runs/bible-de-en/deer-all" \
        --ar runs/bible-de-en/ar [--iterations 0 1 2 4] --output results/bible-de-en-quality

Each DEER run is decoded at every iteration count twice: with its tuned decoding knobs (`blank_penalty`,
`deletion_penalty`, `eos_penalty`, chosen on validation by `training.evaluate --select` and saved with the model) and
with all three at 0 (untuned), so the table shows what the knobs buy. The AR reference decodes greedily. Scores are
BLEU, chrF and ROUGE-L (references normalised as training/metrics says) plus the length ratio (output words /
reference words). Test scores are reported, never used to choose anything.

It writes OUTPUT.json (every row), OUTPUT.md (the table) and, from each run's `learning_curve.jsonl` (the
evaluations by generation on validation during training), OUTPUT-curves.png: the task's metric against training
steps and against training wall-clock.
"""

import argparse
import json
import os
import sys

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from experiments.report import markdown_table
from experiments.tasks import task_metrics
from modeling_deer import DeerForConditionalGeneration, DeerGenerationConfig
from modeling_deer.model_card_deer import METRIC_NAMES
from training.data import read_inputs
from training.decoding import generate_texts
from training.metrics import normalize, score


def scored(outputs: list[str], references: list[str]) -> dict:
    words = sum(len(text.split()) for text in outputs)
    reference_words = sum(len(text.split()) for text in references)
    return {**score(outputs, references), "length_ratio": words / max(reference_words, 1)}


def deer_rows(
    label: str, path: str, tokenizer, splits: dict, iterations: list[int], device: str = "cpu"
) -> list[dict]:
    model = DeerForConditionalGeneration.from_pretrained(path).eval().to(device)
    config = model.generation_config
    names = type(config).REFINEMENTS["edits"]  # the edit rounds' knobs: as tuned, then all at 0
    tuned = {name: getattr(config, name) for name in names}
    rows = []
    for knobs, values in (("tuned", tuned), ("untuned", dict.fromkeys(names, 0.0))):
        for name, value in values.items():
            setattr(config, name, value)
        for split, (sources, references) in splits.items():
            for count in iterations:
                outputs = generate_texts(model, tokenizer, sources, progress=False, max_iterations=count)
                rows.append(
                    {
                        "run": label,
                        "path": path,
                        "knobs": knobs,
                        **values,
                        "split": split,
                        "iterations": count,
                        **scored(outputs, references),
                        "example": outputs[0],
                    }
                )
    return rows


def ar_rows(path: str, tokenizer, splits: dict, device: str = "cpu") -> list[dict]:
    from training.decoding import ar_generate_texts, load_ar

    model = load_ar(path).to(device)
    rows = []
    for split, (sources, references) in splits.items():
        outputs = ar_generate_texts(model, tokenizer, sources, batch_size=32)
        rows.append(
            {
                "run": "AR (BERT2BERT, greedy)",
                "path": path,
                "split": split,
                **scored(outputs, references),
                "example": outputs[0],
            }
        )
    return rows


def quality_table(rows: list[dict], metrics: tuple[str, str], iterations: list[int]) -> str:
    """One line per run and knob setting: the first metric on validation and test at each iteration count, the
    second metric and the length ratio on test at the best validation iteration count."""
    first, second = metrics
    header = (
        ["run", "knobs (blank, deletion, eos)"]
        + [f"val {METRIC_NAMES[first]} it{count}" for count in iterations]
        + [f"test {METRIC_NAMES[first]} it{count}" for count in iterations]
        + ["it chosen on val", f"test {METRIC_NAMES[first]}", f"test {METRIC_NAMES[second]}", "test length ratio"]
    )
    lines = []
    groups = {}
    for row in rows:
        groups.setdefault((row["run"], row.get("knobs")), []).append(row)
    for (run, knobs), group in groups.items():
        cell = {(row["split"], row.get("iterations")): row for row in group}
        if knobs is None:  # the AR model: one value per split
            validation, test = cell[("validation", None)], cell[("test", None)]
            values = [
                "",
                *[f"{validation[first]:.2f}"] * 1,
                *[""] * (len(iterations) - 1),
                f"{test[first]:.2f}",
                *[""] * (len(iterations) - 1),
                "",
                f"{test[first]:.2f}",
                f"{test[second]:.2f}",
                f"{test['length_ratio']:.2f}",
            ]
        else:
            best = max(iterations, key=lambda count: (cell[("validation", count)][first], -count))
            chosen = cell[("test", best)]
            names = DeerGenerationConfig.REFINEMENTS["edits"]
            knob_text = ", ".join(f"{group[0][name]:g}" for name in names)
            knob_text += " (tuned)" if knobs == "tuned" else ""
            values = (
                [knob_text]
                + [f"{cell[('validation', count)][first]:.2f}" for count in iterations]
                + [f"{cell[('test', count)][first]:.2f}" for count in iterations]
                + [str(best), f"{chosen[first]:.2f}", f"{chosen[second]:.2f}", f"{chosen['length_ratio']:.2f}"]
            )
        lines.append([run, *values])
    return markdown_table(header, lines) + "\n"


def read_curve(path: str) -> list[dict]:
    """A run's learning curve, one row per step: the evaluations made during training (the first at a step wins;
    an evaluation after training repeats the last step's, or with early stopping scores the best model)."""
    curve_file = os.path.join(path, "learning_curve.jsonl")
    if not os.path.exists(curve_file):
        return []
    by_step = {}
    with open(curve_file) as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if not row.get("after_training"):
                    by_step.setdefault(row["step"], row)
    return [by_step[step] for step in sorted(by_step)]


def plot_curves(curves: dict[str, list[dict]], metric: str, task: str, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for label, curve in curves.items():
        if not curve:
            continue
        values = [row[f"eval_{metric}"] for row in curve]
        style = "--" if label.startswith("AR") else "-"
        by_step.plot([row["step"] for row in curve], values, style, marker="o", markersize=3, label=label)
        by_time.plot(
            [row["train_seconds"] / 60 for row in curve], values, style, marker="o", markersize=3, label=label
        )
    by_step.set_xlabel("training step")
    by_time.set_xlabel("training wall-clock, minutes (evaluation excluded)")
    for axis in (by_step, by_time):
        axis.set_ylabel(f"validation {METRIC_NAMES[metric]}")
        axis.grid(alpha=0.3)
    by_step.legend(fontsize=8)
    figure.suptitle(
        f"{task}: validation {METRIC_NAMES[metric]} during training (DEER at its training-time "
        "evaluation setting, AR greedy)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data_dir", required=True, help="a directory from experiments.prepare_data")
    parser.add_argument("--runs", nargs="+", required=True, help="LABEL=DIR of DEER checkpoints")
    parser.add_argument("--ar", default=None, help="the BERT2BERT reference's directory")
    parser.add_argument("--iterations", nargs="+", type=int, default=[0, 1, 2, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where to decode: cpu, cuda, ...")
    parser.add_argument("--output", required=True, help="path without extension")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, separator, path = item.partition("=")
        if not separator or not os.path.isdir(path):
            parser.error(f"--runs takes LABEL=DIR with an existing directory, got {item!r}")
        runs[label] = path
    torch.set_num_threads(args.threads)

    splits = {}
    for split in ("validation", "test"):
        sources, targets = read_inputs(os.path.join(args.data_dir, f"{split}.jsonl"), "source", "target")
        splits[split] = (sources, targets)
    rows = []
    for label, path in tqdm(list(runs.items()), desc="runs"):
        tokenizer = AutoTokenizer.from_pretrained(path)
        normalised = {split: (sources, normalize(tokenizer, targets)) for split, (sources, targets) in splits.items()}
        rows += deer_rows(label, path, tokenizer, normalised, args.iterations, args.device)
    if args.ar:
        tokenizer = AutoTokenizer.from_pretrained(args.ar)
        rows += ar_rows(
            args.ar,
            tokenizer,
            {split: (sources, normalize(tokenizer, targets)) for split, (sources, targets) in splits.items()},
            args.device,
        )
    curves = {label: read_curve(path) for label, path in runs.items()}
    ar_curve = {"AR": read_curve(args.ar)} if args.ar else {}

    metrics = task_metrics(args.task)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".json", "w") as handle:
        json.dump(
            {
                "task": args.task,
                "command": "python -m experiments.quality_report " + " ".join(sys.argv[1:] if argv is None else argv),
                "validation_pairs": len(splits["validation"][0]),
                "test_pairs": len(splits["test"][0]),
                "rows": rows,
                "learning_curves": {**curves, **ar_curve},
            },
            handle,
            indent=2,
        )
    table = quality_table(rows, metrics, args.iterations)
    with open(args.output + ".md", "w") as handle:
        handle.write(table)
    print(table)
    plot_curves(
        {**curves, **{"AR (BERT2BERT)": curve for curve in ar_curve.values()}},
        metrics[0],
        args.task,
        args.output + "-curves.png",
    )


if __name__ == "__main__":
    main()
