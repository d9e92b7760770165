"""The benchmark report's schema, for tables, plots and model cards: how its runs are named, the markdown grid, and
the model-index entries and card section of one model's rows (`training.model_card` puts them in a card)."""

from huggingface_hub import EvalResult

from modeling_deer.model_card_deer import METRIC_NAMES


TASK_TYPES = {"bible-de-en": "translation", "bible-kjv-bbe": "text2text-generation"}


RUN_LABELS = {"deer": "DEER", "deer_random": "DEER (random init)", "deer_distilled": "DEER (distilled data)",
              "ar": "AR (BERT2BERT, greedy)"}


def system_label(row: dict) -> str:
    """A benchmark row's system as the tables and plots name it (its `run`: deer, deer_random, ...)."""
    return RUN_LABELS.get(row.get("run"), "AR (BERT2BERT, greedy)" if row["system"] == "ar" else "DEER")


def results_table(rows: list[dict], metrics: list[str] | tuple[str, ...]) -> str:
    """The benchmark grid as a markdown table: quality, latency per sentence, speed-up over the AR row, memory and
    non-embedding parameters."""
    ar = next((row for row in rows if row["system"] == "ar"), None)
    header = ["system", "sparsity", "iterations", *(METRIC_NAMES.get(m, m) for m in metrics), "ms/sent b1",
              "ms/sent b32"] + (["AR b1 / this b1"] if ar else []) + ["peak RSS MB", "non-emb params"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [system_label(row), "" if row["system"] == "ar" else f"{row['sparsity']:g}",
                 "" if row["iterations"] is None else str(row["iterations"]),
                 *(f"{row[m]:.2f}" for m in metrics), f"{row['latency_ms_b1']:.1f}", f"{row['latency_ms_b32']:.2f}"]
        if ar:
            cells.append(f"{ar['latency_ms_b1'] / row['latency_ms_b1']:.1f}x")
        cells += [f"{row['peak_rss_mb']:.0f}", f"{row['params_nonembedding'] / 1e6:.2f}M"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_eval_results(report: dict, run: str) -> list[EvalResult]:
    """One model-index entry per (metric, iterations, sparsity) of the card's own model: the report's rows of `run`
    (not the other runs or the AR model)."""
    task = report["task"]
    results = []
    for row in report["rows"]:
        if row["system"] != "deer" or row.get("run", "deer") != run:
            continue
        for metric in report["metrics"]:
            results.append(EvalResult(
                task_type=TASK_TYPES.get(task, "text2text-generation"), dataset_type=task, dataset_name=task,
                dataset_split="test", metric_type=metric.lower(), metric_value=round(row[metric], 4),
                metric_name=f"{METRIC_NAMES.get(metric, metric)} ({row['iterations']} iterations, sparsity "
                            f"{row['sparsity']:g})",
                metric_config=f"iterations={row['iterations']},sparsity={row['sparsity']:g}",
            ))
    return results


def report_section(report: dict) -> str:
    """A card section with a report's grid, its hardware, training steps and command."""
    steps = report.get("training_steps", {})
    hardware = report.get("hardware", {})
    return (f"## Results: {report['task']} (test split, {report['test_pairs']} pairs)\n\n"
            f"{results_table(report['rows'], report['metrics'])}\n\n"
            f"Latency: ms per sentence, medians of {report.get('repeats')} rounds on {hardware.get('cpu', 'a CPU')} "
            f"with {hardware.get('threads')} threads. Training steps: {steps}. Command: "
            f"`{report.get('commands', {}).get('benchmark', '')}`")


def card_results(reports: list[dict], run: str = "deer") -> dict:
    """`build_model_card` arguments for benchmark reports: the model-index entries of `run`'s rows (deer,
    deer_distilled, ...; not the other runs or the AR model) and one results section per report."""
    return {"eval_results": [result for report in reports for result in report_eval_results(report, run)],
            "sections": [report_section(report) for report in reports]}
