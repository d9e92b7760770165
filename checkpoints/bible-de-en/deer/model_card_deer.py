"""Model cards for DEER checkpoints, built with `huggingface_hub.ModelCard` / `ModelCardData`.

`build_model_card(model, ...)` writes the YAML metadata (library, pipeline tag, tags, base model, datasets, language,
license) and, when results exist, a `model-index` with them: either a benchmark report (the JSON that
`python -m training.benchmark` writes: the quality/latency grid over iterations and pruning levels, with the
autoregressive reference) or the Trainer's evaluation metrics. The body says how to load the model with and without
the package, how to choose iterations and sparsity, and the limitations.
"""

from huggingface_hub import EvalResult, ModelCard, ModelCardData


METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "rougeL": "ROUGE-L"}
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


def _eval_results(report: dict, run: str) -> list[EvalResult]:
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


def _trainer_eval_results(metrics: dict, dataset: str) -> list[EvalResult]:
    results = []
    for metric in ("bleu", "chrf", "rougeL"):
        value = metrics.get(f"eval_{metric}")
        if value is not None:
            results.append(EvalResult(task_type="text2text-generation", dataset_type=dataset, dataset_name=dataset,
                                      dataset_split="validation", metric_type=metric.lower(),
                                      metric_value=round(float(value), 4), metric_name=METRIC_NAMES[metric]))
    return results


def build_model_card(
    model,
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    language: list[str] | None = None,
    license: str = "apache-2.0",
    reports: list[dict] | None = None,
    run: str = "deer",
    trainer_metrics: dict | None = None,
    tags: list[str] | None = None,
    description: str | None = None,
) -> ModelCard:
    """A card for `model` (a DeerForConditionalGeneration). `reports`: benchmark JSON reports (one per task);
    `run`: which of a report's runs this model is (deer, deer_distilled, ...): its rows go into the model-index;
    `trainer_metrics`: a Trainer's evaluation metrics (`eval_bleu`, ...) on `datasets[0]`."""
    reports = list(reports or [])
    eval_results = [result for report in reports for result in _eval_results(report, run)]
    if trainer_metrics and datasets:
        eval_results += _trainer_eval_results(trainer_metrics, datasets[0])
    config = model.config
    data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=datasets,
        language=language,
        license=license,
        library_name="transformers",
        pipeline_tag="text2text-generation",
        tags=sorted({"deer", "non-autoregressive", "text2text-generation", "bert", "pruning", *(tags or [])}),
        eval_results=eval_results or None,
    )
    pruned = f"pruned to sparsity {config.pruned_sparsity:g} (the shapes are saved)" if config.pruned_sparsity else (
        "unpruned" + (f"; trained with pruning levels {list(config.sparsity_levels)}" if config.sparsity_levels
                      else ""))
    vocabulary = (f"vocabulary trimmed to {config.embedding_rows:,} of the tokenizer's {config.vocab_size:,} tokens"
                  if config.vocabulary_ids else f"full vocabulary ({config.vocab_size:,} tokens)")
    sections = [
        f"# {model_name}",
        description or "A DEER model: a BERT-family masked LM turned into a non-autoregressive generator that drafts "
                       "the whole output in one pass and refines it in edit rounds (delete, insert, fill), with the "
                       "cost chosen at inference.",
        f"Backbone: {config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads; {pruned}; {vocabulary}."
        + (f" Fine-tuned from `{base_model}`." if base_model else ""),
        "## Use\n\n```python\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n"
        f'model = AutoModelForSeq2SeqLM.from_pretrained("{model_name}", trust_remote_code=True)  # no package needed\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{model_name}")\n'
        'batch = tokenizer(["..."], return_tensors="pt", padding=True)\n'
        "ids = model.generate(**batch, max_iterations=2)   # 0 = the one-pass draft\n"
        "print(tokenizer.batch_decode(ids, skip_special_tokens=True))\n```\n\n"
        "With `pip install modeling_deer` and `import modeling_deer`, `trust_remote_code` is not needed. "
        + ("`model.prune_to(0.5)` removes half of the attention and FFN parameters for good (learned head and neuron "
           "scores decide which); `model.set_sparsity(0.5)` only masks them." if config.sparsity_levels else
           "This model was trained at full size only (no pruning levels): its head and neuron scores were never "
           "learned, so pruning it would collapse its quality."),
        "## Choosing iterations and sparsity\n\n"
        "- `max_iterations=0` is one backbone pass: the fastest output, usually with repeated or missing words.\n"
        "- Each further iteration costs one or two more passes and fixes some of them; most of the gain is in the "
        "first one or two. Rows whose output stops changing leave the batch early.\n"
        + ("- Sparsity 0.25-0.5 cuts latency and memory; the grid below shows what it costs in quality for this "
           "model. Prune once (`prune_to`) and save, rather than masking at every call." if config.sparsity_levels
           else "- Sparsity: not for this model (see above); the iteration count is its one cost knob."),
    ]
    for report in reports:
        steps = report.get("training_steps", {})
        hardware = report.get("hardware", {})
        sections.append(
            f"## Results: {report['task']} (test split, {report['test_pairs']} pairs)\n\n"
            f"{results_table(report['rows'], report['metrics'])}\n\n"
            f"Latency: ms per sentence, medians of {report.get('repeats')} rounds on {hardware.get('cpu', 'a CPU')} "
            f"with {hardware.get('threads')} threads. Training steps: {steps}. Command: "
            f"`{report.get('commands', {}).get('benchmark', '')}`"
        )
    if trainer_metrics:
        shown = {key: round(float(value), 4) for key, value in trainer_metrics.items()
                 if key.startswith("eval_") and isinstance(value, (int, float))}
        sections.append("## Evaluation (Trainer)\n\n" + "\n".join(f"- `{key}`: {value}" for key, value in shown.items()))
    sections.append(
        "## Limitations\n\n"
        "- Output quality depends on the backbone and the training budget; a small backbone trained briefly writes "
        "short, repetitive text. Check the results above before relying on it.\n"
        "- The output length comes from the draft (source length times the upsampling ratio) and the edit rounds; "
        "very short sources may not leave room for long outputs.\n"
        "- Inputs longer than the position table are refused; the tokenizer's casing and vocabulary limit what can "
        "be written (an uncased vocabulary writes lowercase)."
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
