"""Tables and the benchmark report's schema, for tables, plots and model cards: the one markdown table writer every
script uses, how the benchmark's runs are named, its grid, and the model-index entries and card section of one
model's rows (`experiments.model_card` puts them in a card)."""

import json
import os

from huggingface_hub import EvalResult

from experiments.tasks import task_type
from modeling_deer.model_card_deer import METRIC_NAMES


RUN_LABELS = {
    "deer": "DEER",
    "deer_random": "DEER (random init)",
    "deer_distilled": "DEER (distilled data)",
    "ar": "AR (BERT2BERT, greedy)",
}


def run_info(path: str) -> dict:
    """Training steps and the command of a run directory (as training.train / training.train_ar leave them)."""
    info = {"path": path}
    state = os.path.join(path, "trainer_state.json")
    if os.path.exists(state):
        with open(state) as handle:
            info["steps"] = json.load(handle).get("global_step")
    command = os.path.join(path, "run_command.txt")
    if os.path.exists(command):
        with open(command) as handle:
            info["command"] = handle.read().strip()
    return info


def markdown_table(header: list[str], rows: list[list], numeric: bool = False) -> str:
    """A markdown table; cells are written as given (format numbers first). `numeric` right-aligns every column
    but the first."""
    line = lambda cells: "| " + " | ".join(str(cell) for cell in cells) + " |"
    rule = "|---|" + ("---:|" if numeric else "---|") * (len(header) - 1)
    return "\n".join([line(header), rule, *map(line, rows)])


def system_label(row: dict) -> str:
    """A benchmark row's system as the tables and plots name it (its `run`: deer, deer_random, ...)."""
    return RUN_LABELS.get(row.get("run"), "AR (BERT2BERT, greedy)" if row["system"] == "ar" else "DEER")


def results_table(rows: list[dict], metrics: list[str] | tuple[str, ...]) -> str:
    """The benchmark grid as a markdown table: quality, latency per sentence, speed-up over the AR row, memory and
    non-embedding parameters."""
    ar = next((row for row in rows if row["system"] == "ar"), None)
    header = (
        ["system", "sparsity", "iterations", *(METRIC_NAMES.get(m, m) for m in metrics), "ms/sent b1", "ms/sent b32"]
        + (["AR b1 / this b1"] if ar else [])
        + ["peak RSS MB", "non-emb params"]
    )
    lines = []
    for row in rows:
        cells = [
            system_label(row),
            "" if row["system"] == "ar" else f"{row['sparsity']:g}",
            "" if row["iterations"] is None else str(row["iterations"]),
            *(f"{row[m]:.2f}" for m in metrics),
            f"{row['latency_ms_b1']:.1f}",
            f"{row['latency_ms_b32']:.2f}",
        ]
        if ar:
            cells.append(f"{ar['latency_ms_b1'] / row['latency_ms_b1']:.1f}x")
        cells += [f"{row['peak_rss_mb']:.0f}", f"{row['params_nonembedding'] / 1e6:.2f}M"]
        lines.append(cells)
    return markdown_table(header, lines)


def report_eval_results(report: dict, run: str) -> list[EvalResult]:
    """One model-index entry per (metric, iterations, sparsity) of the card's own model: the report's rows of `run`
    (not the other runs or the AR model)."""
    task = report["task"]
    results = []
    for row in report["rows"]:
        if row["system"] != "deer" or row.get("run", "deer") != run:
            continue
        for metric in report["metrics"]:
            results.append(
                EvalResult(
                    task_type=task_type(task),
                    dataset_type=task,
                    dataset_name=task,
                    dataset_split="test",
                    metric_type=metric.lower(),
                    metric_value=round(row[metric], 4),
                    metric_name=f"{METRIC_NAMES.get(metric, metric)} ({row['iterations']} iterations, sparsity "
                    f"{row['sparsity']:g})",
                    metric_config=f"iterations={row['iterations']},sparsity={row['sparsity']:g}",
                )
            )
    return results


def report_section(report: dict) -> str:
    """A card section with a report's grid, its hardware, training steps and command."""
    steps = report.get("training_steps", {})
    hardware = report.get("hardware", {})
    return (
        f"## Results: {report['task']} (test split, {report['test_pairs']} pairs)\n\n"
        f"{results_table(report['rows'], report['metrics'])}\n\n"
        f"Latency: ms per sentence, medians of {report.get('repeats')} rounds on {hardware.get('cpu', 'a CPU')} "
        f"with {hardware.get('threads')} threads. Training steps: {steps}. Command: "
        f"`{report.get('commands', {}).get('benchmark', '')}`"
    )


def card_results(reports: list[dict], run: str = "deer") -> dict:
    """`build_model_card` arguments for benchmark reports: the model-index entries of `run`'s rows (deer,
    deer_distilled, ...; not the other runs or the AR model) and one results section per report."""
    return {
        "eval_results": [result for report in reports for result in report_eval_results(report, run)],
        "sections": [report_section(report) for report in reports],
    }


def plot(rows: list[dict], metric: str, title: str, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    deer = [row for row in rows if row["system"] == "deer"]
    levels = sorted({row["sparsity"] for row in deer})
    # The other runs as one curve each (unpruned), so that the figure stays readable; the table has all of it.
    for run, style, sparsities in (
        ("deer", "-o", levels),
        ("deer_distilled", "--s", levels[:1]),
        ("deer_random", ":x", levels[:1]),
    ):
        for sparsity in sparsities:
            curve = sorted(
                (row for row in deer if row["run"] == run and row["sparsity"] == sparsity),
                key=lambda row: row["iterations"],
            )
            if not curve:
                continue
            xs, ys = [row["latency_ms_b1"] for row in curve], [row[metric] for row in curve]
            (line,) = axis.plot(
                xs,
                ys,
                style,
                label=f"{system_label(curve[0])}, sparsity {sparsity:g}",
                alpha=1.0 if run != "deer_random" else 0.6,
            )
            for row, x, y in zip(curve, xs, ys):
                axis.annotate(
                    str(row["iterations"]),
                    (x, y),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=7,
                    color=line.get_color(),
                )
    ar = next(row for row in rows if row["system"] == "ar")
    axis.plot([ar["latency_ms_b1"]], [ar[metric]], "r*", markersize=14, label="AR (BERT2BERT, greedy)")
    axis.set_xscale("log")
    axis.set_xlabel("ms per sentence at batch 1 (log scale; labels: iterations)")
    axis.set_ylabel(METRIC_NAMES[metric] + " (test)")
    axis.set_title(title, fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- experiments.bench's tables ---------------------------------------------------------------------------------------


def rounds_text(rounds: dict) -> str:
    """How realistic experiments.bench's rounds were: edits per row, and passes per round (3 = all ran)."""
    return (
        f"{rounds['deletions_per_row']:g} deleted + {rounds['insertions_per_row']:g} inserted per row, "
        f"passes/round b1 {rounds['passes_per_round_b1']:g}, b32 {rounds['passes_per_round_b32']:g}"
    )


def bench_tables(results: dict, shapes: list[str]) -> str:
    """experiments.bench's tables, as the README shows them."""
    threads, parts = results["threads"], []
    source_length, output_length = results["source_length"], results["output_length"]
    if "speed" in results:
        rows = results["speed"]
        cells = {}  # (shape, device, dtype, batch) -> {system: ms}
        for row in rows:
            cells.setdefault((row["shape"], row["device"], row["dtype"], row["batch_size"]), {})[row["system"]] = row[
                "latency_ms"
            ]
        lines = []  # a line for eager DEER, and one for compiled DEER where it was timed (same floor, AR)
        for (shape, device, dtype, size), c in cells.items():
            for compiled, prefix in ((False, "deer-"), (True, "deer-compiled-")):
                if f"{prefix}0" in c:
                    deer = [c[f"{prefix}{k}"] for k in (0, 1, 2, 4)]
                    lines.append(
                        [
                            shape,
                            device,
                            dtype,
                            "yes" if compiled else "no",
                            size,
                            *(f"{ms:.1f}" for ms in (c["floor"], *deer, c["ar"])),
                            f"{deer[0] / c['floor']:.2f}",
                            *(f"{c['ar'] / deer[k]:.1f}x" for k in (0, 2, 3)),
                        ]
                    )
        parts.append(
            f"{threads} threads; latency per generate call in ms (median), sources of {source_length} "
            f"tokens; outputs: AR {output_length} tokens, DEER "
            + ", ".join(f"{shape} {next(r['output_tokens'] for r in rows if r['shape'] == shape)}" for shape in shapes)
            + " tokens on average; every round deletes and inserts: "
            + "; ".join(
                f"{shape} {rounds_text(next(r['rounds'] for r in rows if r['shape'] == shape))}" for shape in shapes
            )
            + "\n"
            + markdown_table(
                [
                    "shape",
                    "device",
                    "dtype",
                    "DEER compiled",
                    "batch",
                    "floor",
                    "deer-0",
                    "deer-1",
                    "deer-2",
                    "deer-4",
                    f"AR ({output_length} tokens)",
                    "deer-0 / floor",
                    "AR / deer-0",
                    "AR / deer-2",
                    "AR / deer-4",
                ],
                lines,
                numeric=True,
            )
        )
    if "training" in results:
        rows = results["training"]
        steps = {(r["shape"], r["device"], r["dtype"], r["batch_size"]): {} for r in rows}
        for row in rows:
            steps[row["shape"], row["device"], row["dtype"], row["batch_size"]][row["system"]] = row["step_ms"]
        parts.append(
            "training steps (forward, backward, AdamW), random 48-token sources and 32-token targets\n"
            + markdown_table(
                [
                    "shape",
                    "device",
                    "dtype (autocast)",
                    "batch",
                    "DEER ms/step",
                    "AR ms/step",
                    "DEER steps/s",
                    "AR steps/s",
                    "DEER / AR step time",
                ],
                [
                    [
                        *key,
                        f"{c['deer']:.1f}",
                        f"{c['ar']:.1f}",
                        f"{1000 / c['deer']:.2f}",
                        f"{1000 / c['ar']:.2f}",
                        f"{c['deer'] / c['ar']:.2f}",
                    ]
                    for key, c in steps.items()
                ],
                numeric=True,
            )
        )
    if "memory" in results:

        def extra(row):
            return f"{row['extra_mb']:.0f}" if "extra_mb" in row else "failed"

        lines = [
            [row["shape"], row["vocabulary"], row["batch"], row["call"], f"{row.get('model_mb', 0):.0f}", extra(row)]
            for row in results["memory"]
        ]
        parts.append(
            f"memory beyond the model: peak resident MB of a fresh process minus its size once the model is "
            f"built, {source_length}-token sources, generate = draft + 2 rounds, training = forward + "
            f"backward on {output_length}-token targets\n"
            + markdown_table(
                ["shape", "vocabulary", "batch", "call", "model MB", "beyond the model MB"], lines, numeric=True
            )
        )
    if "checkpointing" in results:
        rows = results["checkpointing"]
        parts.append(
            f"a training step (forward and backward) at batch {rows[0]['batch']}, {source_length}-token sources, "
            f"{output_length}-token targets, vocabulary {rows[0]['vocabulary']}: peak resident MB beyond the model, "
            "each in a fresh process\n"
            + markdown_table(
                ["shape", "gradient checkpointing", "model MB", "beyond the model MB", "step s"],
                [
                    [
                        row["shape"],
                        "yes" if row["gradient_checkpointing"] else "no",
                        f"{row.get('model_mb', 0):.0f}",
                        f"{row['extra_mb']:.0f}" if "extra_mb" in row else "failed",
                        f"{row['seconds']:.1f}" if "seconds" in row else "",
                    ]
                    for row in rows
                ],
                numeric=True,
            )
        )
    if "anatomy" in results:
        for shape in dict.fromkeys(row["shape"] for row in results["anatomy"]):
            rows = [row for row in results["anatomy"] if row["shape"] == shape]
            steps = {row["part"]: row for row in rows if row["table"] == "training"}
            ar_step = steps["AR step"]
            step_lines = [
                [
                    part,
                    f"{row['ms']:.1f}",
                    f"{row['ms'] / ar_step['ms']:.2f}",
                    f"{row['macs'] / 1e9:.2f}" if row["macs"] else "",
                    f"{row['macs'] / ar_step['macs']:.2f}" if row["macs"] else "",
                    f"{row['macs'] / 1e6 / row['ms']:.1f}" if row["macs"] else "",
                ]
                for part, row in steps.items()
            ]
            step_table = markdown_table(
                ["part", "ms", "/ AR step", "GMAC", "GMAC / AR step's", "GMAC/s"], step_lines, numeric=True
            )
            generate = {row["part"]: row for row in rows if row["table"] == "generate"}
            if not generate:  # the shipped checkpoints: a training step only
                parts.append(
                    f"{shape}, {threads} threads: training at batch {rows[-1]['batch_size']} (forward, "
                    f"backward, AdamW; real training pairs, sources and targets of at most 32 tokens)\n" + step_table
                )
                continue
            draft, ar = generate["draft (0 rounds)"]["ms"], next(r["ms"] for p, r in generate.items() if "AR" in p)
            sizes = next(row["tokens"] for row in rows if "tokens" in row)
            lines = [
                [
                    part,
                    f"{row['ms']:.1f}",
                    f"{row['ms'] / draft:.2f}",
                    f"{row['macs'] / 1e9:.3f}" if row["macs"] else "",
                    f"{row['macs'] / 1e6 / row['ms']:.1f}" if row["macs"] else "",
                ]
                for part, row in generate.items()
            ]
            parts.append(
                f"{shape} shape, {threads} threads: generate at batch 1 in parts, each timed alone (median ms); the "
                f"draft has {sizes['frames']} frames, the round deletes {sizes['draft'] - sizes['kept']} of "
                f"{sizes['draft']} tokens and fills {sizes['placeholders']} placeholders; draft + 2 rounds = "
                f"{draft + 2 * generate['round']['ms']:.1f} ms, AR / (draft + 2 rounds) = "
                f"{ar / (draft + 2 * generate['round']['ms']):.1f}x\n"
                + markdown_table(["part", "ms", "/ draft", "GMAC", "GMAC/s"], lines, numeric=True)
                + f"\n\ntraining at batch {rows[-1]['batch_size']} (forward, backward, AdamW; {source_length}-token "
                f"sources, {output_length}-token targets)\n" + step_table
            )
    if "batch" in results:
        cells = {}  # (models, variant) -> {system: ms}
        for row in results["batch"]:
            cells.setdefault((row["models"], row["variant"]), {})[row["system"]] = row["latency_ms"]
        parts.append(
            "batch 32 on this CPU: ms per generate call (median), DEER at exactly 0 and 2 realistic rounds, AR "
            "greedy; each variant's AR model under the same settings\n"
            + markdown_table(
                ["models", "variant", "deer-0", "deer-2", "AR", "AR / deer-0", "AR / deer-2"],
                [
                    [
                        *key,
                        f"{c['deer-0']:.0f}",
                        f"{c['deer-2']:.0f}",
                        f"{c['ar']:.0f}",
                        f"{c['ar'] / c['deer-0']:.2f}x",
                        f"{c['ar'] / c['deer-2']:.2f}x",
                    ]
                    for key, c in cells.items()
                ],
                numeric=True,
            )
        )
    if "trimming" in results:
        rows = results["trimming"]
        cell = {(r["system"], r["batch_size"]): r["latency_ms"] for r in rows}
        sizes = {r["system"].split("-")[0]: r["vocabulary"] for r in rows}
        parts.append(
            f"vocabulary trimming, {rows[0]['model']}: {sizes['untrimmed']} -> {sizes['trimmed']} rows\n"
            + markdown_table(
                ["batch", "iterations", "untrimmed ms", "trimmed ms", "speed-up"],
                [
                    [
                        size,
                        k,
                        f"{cell[f'untrimmed-{k}', size]:.1f}",
                        f"{cell[f'trimmed-{k}', size]:.1f}",
                        f"{cell[f'untrimmed-{k}', size] / cell[f'trimmed-{k}', size]:.2f}x",
                    ]
                    for size in (1, 32)
                    for k in (0, 2)
                ],
                numeric=True,
            )
        )
    if "pruning" in results:
        rows = results["pruning"]
        timings = [key for key in rows[0] if key.startswith("latency_ms")]
        base = {r["shape"]: r for r in rows if r["level"] == 0.0}
        ratio = lambda row, key, text: f"{text} (x{row[key] / base[row['shape']][key]:.2f})"
        parts.append(
            f"{threads} threads; generate latency in ms (median), x = ratio to level 0 of the same shape\n"
            + markdown_table(
                ["shape", "level", "non-emb params", "peak RSS MB"]
                + [key.removeprefix("latency_ms_") for key in timings]
                + ["rounds"],
                [
                    [
                        row["shape"],
                        f"{row['level']:g}",
                        ratio(row, "params_nonembedding", f"{row['params_nonembedding'] / 1e6:.1f}M"),
                        ratio(row, "peak_rss_mb", f"{row['peak_rss_mb']:.0f}"),
                        *(ratio(row, key, f"{row[key]:.1f}") for key in timings),
                        rounds_text(row["rounds"]),
                    ]
                    for row in rows
                ],
            )
        )
    if "concurrency" in results:
        parts.append(
            "two requests on one model: two Python threads at once against one after the other, one torch thread, "
            "ms per pair of generate calls (median), exactly 2 realistic rounds\n"
            + markdown_table(
                ["shape", "batch", "levels", "serial ms", "two threads ms", "two threads / serial", "rounds"],
                [
                    [
                        row["shape"],
                        row["batch_size"],
                        row["levels"],
                        f"{row['serial_ms']:.0f}",
                        f"{row['two_threads_ms']:.0f}",
                        f"{row['ratio']:.2f}",
                        rounds_text(row["rounds"]),
                    ]
                    for row in results["concurrency"]
                ],
                numeric=True,
            )
        )
    if "basic" in results:
        basic = results["basic"]
        compiled = basic["compile_seconds"] is not None
        parts.append(
            f"model: {basic['model']}; {threads} threads; median of {results['repeats']} after warm-up\n"
            f"training step (batch 16, source {tuple(basic['source_shape'])}, labels {tuple(basic['labels_shape'])}, "
            f"forward + backward + AdamW): {basic['train_step_ms_batch16']:.0f} ms\n"
            + markdown_table(
                ["iterations", "batch", "ms per generate call", "ms per sentence"]
                + (["compiled ms per call"] if compiled else []),
                [
                    [
                        row["iterations"],
                        row["batch_size"],
                        f"{row['ms_per_call']:.1f}",
                        f"{row['ms_per_sentence']:.2f}",
                    ]
                    + ([f"{row['ms_per_call_compiled']:.1f}"] if compiled else [])
                    for row in basic["generate"]
                ],
                numeric=True,
            )
            + (
                f"\ncompile_passes() and the first call at each shape: {basic['compile_seconds']:.0f} s"
                if compiled
                else ""
            )
        )
    return "\n\n".join(parts)


def headline_table(report: dict, rounds: tuple[int, ...] = (0, 1, 2), levels: tuple[float, ...] = (0.0, 0.5)) -> str:
    """The README's headline table from a benchmark report of the shipped pair: DEER at `rounds` x `levels` and the AR
    model, test quality (the report's two metrics), CPU milliseconds per sentence at batch 1 and 32, and each row's
    batch-1 speed against the AR model. `python -m experiments.report HEADLINE REPORT.json` prints it; a test checks
    the README's copy against the file."""
    first, second = report["metrics"][:2]
    ar = next(row for row in report["rows"] if row["system"] == "ar")
    rows = []
    for level in levels:
        for count in rounds:
            row = next(
                (
                    r
                    for r in report["rows"]
                    if r["run"] == "deer" and r["sparsity"] == level and r["iterations"] == count
                ),
                None,
            )
            if row is None:
                continue
            size = "full size" if level == 0 else f"{1 - level:.0%} of the prunable parameters"
            what = "the draft" if count == 0 else f"{count} round{'s' if count > 1 else ''}"
            rows.append(
                [
                    f"DEER, {what}, {size}",
                    f"{row[first]:.2f}",
                    f"{row[second]:.2f}",
                    f"{row['latency_ms_b1']:.1f}",
                    f"{row['latency_ms_b32']:.2f}",
                    f"{ar['latency_ms_b1'] / row['latency_ms_b1']:.1f}x",
                ]
            )
    rows.append(
        [
            RUN_LABELS["ar"],
            f"{ar[first]:.2f}",
            f"{ar[second]:.2f}",
            f"{ar['latency_ms_b1']:.1f}",
            f"{ar['latency_ms_b32']:.2f}",
            "1.0x",
        ]
    )
    header = [
        "system",
        f"test {METRIC_NAMES[first]}",
        f"test {METRIC_NAMES[second]}",
        "ms/sentence, batch 1",
        "batch 32",
        "AR / this, batch 1",
    ]
    return markdown_table(header, rows, numeric=True)


def levels_sentence(report: dict, rounds: int, run: str = "deer") -> str:
    """What each pruning level of `run` costs and buys in a benchmark report, as a card says it: its test score at
    `rounds` against the full size's, and how much faster its draft is at batch 1 and 32. Empty for a run measured at
    one level only."""
    metric = report["metrics"][0]
    cells = {(row["sparsity"], row["iterations"]): row for row in report["rows"] if row["run"] == run}
    levels = sorted({level for level, _ in cells if level > 0})
    if not levels or (0.0, rounds) not in cells:
        return ""
    full, full_draft = cells[(0.0, rounds)], cells[(0.0, 0)]
    parts = []
    for level in levels:
        row, draft = cells[(level, rounds)], cells[(level, 0)]
        parts.append(
            f"sparsity {level:g}: {METRIC_NAMES[metric]} {full[metric]:.2f} -> {row[metric]:.2f}, its draft "
            f"{full_draft['latency_ms_b1'] / draft['latency_ms_b1']:.2f}x as fast at batch 1 and "
            f"{full_draft['latency_ms_b32'] / draft['latency_ms_b32']:.2f}x at batch 32"
        )
    what = "the draft" if rounds == 0 else f"{rounds} round{'s' if rounds > 1 else ''}"
    return (
        f"What each level costs and buys on the test split (the grid below), at {what} against the full size: "
        + "; ".join(parts)
        + "."
    )


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "HEADLINE":
        raise SystemExit("usage: python -m experiments.report HEADLINE REPORT.json")
    with open(sys.argv[2]) as handle:
        print(headline_table(json.load(handle)))
