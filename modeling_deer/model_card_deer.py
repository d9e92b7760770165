"""Model cards for DEER checkpoints, built with `huggingface_hub.ModelCard` / `ModelCardData`.

`build_model_card(model, ...)` writes the YAML metadata (library, pipeline tag, tags, base model, datasets, language,
license) and a `model-index` with whatever results it is given: `EvalResult`s and extra sections from the caller
(experiments.report makes them from a benchmark report), or a Trainer's evaluation metrics. The body says how to load
the model with and without the package, how to choose iterations and sparsity, and the limitations.
"""

from huggingface_hub import EvalResult, ModelCard, ModelCardData


METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "rougeL": "ROUGE-L"}


def _trainer_eval_results(metrics: dict, dataset: str) -> list[EvalResult]:
    results = []
    for metric in ("bleu", "chrf", "rougeL"):
        value = metrics.get(f"eval_{metric}")
        if value is not None:
            results.append(
                EvalResult(
                    task_type="text2text-generation",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split="validation",
                    metric_type=metric.lower(),
                    metric_value=round(float(value), 4),
                    metric_name=METRIC_NAMES[metric],
                )
            )
    return results


def build_model_card(
    model,
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    language: list[str] | None = None,
    license: str = "apache-2.0",
    eval_results: list[EvalResult] | None = None,
    sections: list[str] | None = None,
    trainer_metrics: dict | None = None,
    tags: list[str] | None = None,
    description: str | None = None,
) -> ModelCard:
    """A card for `model` (a DeerForConditionalGeneration). `eval_results`: measured results for the model-index;
    `sections`: markdown sections to add after the usage notes (e.g. a results grid); `trainer_metrics`: a Trainer's
    evaluation metrics (`eval_bleu`, ...) on `datasets[0]`."""
    eval_results = list(eval_results or [])
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
    pruned = (
        f"pruned to sparsity {config.pruned_sparsity:g} (the shapes are saved)"
        if config.pruned_sparsity
        else (
            "unpruned"
            + (f"; trained with pruning levels {list(config.sparsity_levels)}" if config.sparsity_levels else "")
        )
    )
    vocabulary = (
        f"vocabulary trimmed to {config.embedding_rows:,} of the tokenizer's {config.vocab_size:,} tokens"
        if config.vocabulary_ids
        else f"full vocabulary ({config.vocab_size:,} tokens)"
    )
    settings = model.generation_config
    knobs = ", ".join(
        f"{name.replace('_', ' ')} {getattr(settings, name):g}"
        for name in type(settings).REFINEMENTS[settings.refinement]
    )
    rounds = f"{settings.max_iterations} round{'s' if settings.max_iterations != 1 else ''}"
    decoding = (
        "the draft alone"
        if settings.max_iterations == 0
        else f"the draft and {rounds} of {'edits' if settings.refinement == 'edits' else 're-drafting'}"
    )
    body = [
        f"# {model_name}",
        description
        or "A DEER model: a BERT-family masked LM turned into a non-autoregressive generator that drafts "
        "the whole output in one pass and refines it in edit rounds (delete, insert, fill), with the "
        "cost chosen at inference.",
        f"Backbone: {config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads; {pruned}; {vocabulary}."
        + (f" Fine-tuned from `{base_model}`." if base_model else "")
        + f" `generate()` decodes by default as its generation_config.json says: {decoding} ({knobs}).",
        "## Use\n\n```python\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n"
        f'model = AutoModelForSeq2SeqLM.from_pretrained("{model_name}", trust_remote_code=True)  # no package needed\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{model_name}")\n'
        'batch = tokenizer(["..."], return_tensors="pt", padding=True)\n'
        "ids = model.generate(**batch)   # as saved; max_iterations=0: the one-pass draft"
        + (f"; sparsity={max(config.sparsity_levels):g}: its smallest level" if config.sparsity_levels else "")
        + "\n"
        "print(tokenizer.batch_decode(ids, skip_special_tokens=True))\n```\n\n"
        "With `pip install modeling_deer` and `import modeling_deer`, `trust_remote_code` is not needed. "
        + (
            "`model.prune_to(0.5)` removes half of the attention and FFN parameters for good (learned head and neuron "
            "scores decide which); `model.set_sparsity(0.5)` only masks them."
            if config.sparsity_levels
            else "This model was trained at full size only (no pruning levels): its head and neuron scores were never "
            "learned, so pruning it would collapse its quality."
        ),
        "## Choosing iterations and sparsity\n\n"
        "- `max_iterations=0` is one backbone pass: the fastest output, usually with repeated or missing words.\n"
        "- Each further iteration costs one or two more passes and fixes some of them; most of the gain is in the "
        "first one or two. Rows whose output stops changing leave the batch early.\n"
        + (
            "- Sparsity (0.25 / 0.5 / 0.75 of the attention and FFN parameters removed): the grid below gives what "
            "each level saves in time and costs in quality for this model. The embeddings and the LM head are not "
            "pruned, so on a small backbone the speed-up is well below the share removed. Prune once (`prune_to`) "
            "and save, rather than masking at every call."
            if config.sparsity_levels
            else "- Sparsity: not for this model (see above); the iteration count is its one cost knob."
        ),
    ]
    body += list(sections or [])
    if trainer_metrics:
        shown = {
            key: round(float(value), 4)
            for key, value in trainer_metrics.items()
            if key.startswith("eval_") and isinstance(value, (int, float))
        }
        body.append("## Evaluation (Trainer)\n\n" + "\n".join(f"- `{key}`: {value}" for key, value in shown.items()))
    body.append(
        "## Limitations\n\n"
        "- Output quality depends on the backbone and the training budget; a small backbone trained briefly writes "
        "short, repetitive text. Check the results above before relying on it.\n"
        "- The output length comes from the draft (source length times the upsampling ratio) and the edit rounds; "
        "very short sources may not leave room for long outputs.\n"
        "- Inputs longer than the position table are refused; the tokenizer's casing and vocabulary limit what can "
        "be written (an uncased vocabulary writes lowercase)."
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(body) + "\n")
