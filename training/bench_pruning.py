"""What each pruning level buys on this CPU: parameters, peak memory and `generate` latency.

    python -m training.bench_pruning [--shapes minilm bert-base] [--threads 2] [--repeats 5] [--output FILE]

For a MiniLM-shaped (6 layers, hidden 384) and a BERT-base-shaped (12 layers, hidden 768) DEER model, physically
pruned to each level 0 / 0.25 / 0.5 / 0.75 and saved: non-embedding parameters; peak resident memory of a fresh
process that loads the pruned checkpoint and generates once (batch 32, 2 iterations); and `generate` latency at
batch 1 and batch 32 for 0 and 2 iterations, the median of repeats after a warm-up, the four levels taking turns
within each repeat, with ratios to level 0 from the same run.

The weights are random (no trained checkpoint of these shapes is available offline), arranged so that every level
does the same work: the pruning scores are random (so levels cut every layer differently, as trained scores do),
the LM head never emits the blank (the draft keeps about 2 x 48 - 2 tokens), and the edit heads keep every token
and insert nothing, so each round runs its deletion and insertion passes and skips the fill pass (a trained model
fills when it inserts). Rounds are forced with `stop_when_unchanged=False`. Sources are 48 tokens.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

from modeling_deer import DeerForConditionalGeneration
from training.measure import (
    SHAPES,
    SOURCE_LENGTH,
    build_model,
    interleaved_medians,
    non_embedding_parameters,
    peak_rss_mb,
    reset_peak_rss,
    sources_batch,
)


LEVELS = (0.0, 0.25, 0.5, 0.75)


def peak_memory(checkpoint: str) -> dict:
    """In a fresh process: load the pruned checkpoint, generate once at batch 32 with 2 iterations."""
    reset_peak_rss()
    model = DeerForConditionalGeneration.from_pretrained(checkpoint).eval()
    output = model.generate(input_ids=sources_batch(), max_iterations=2, stop_when_unchanged=False)
    return {"peak_rss_mb": peak_rss_mb(), "output_tokens_b32_it2": int((output != 0).sum()) // 32}


def interleaved_latencies(models: dict, repeats: int) -> dict:
    """Median ms of each model's generate for every (iterations, batch) setting, the levels taking turns."""
    sources = sources_batch()
    results = {level: {} for level in models}
    for iterations in (0, 2):
        for batch_size in (1, 32):
            batch = sources[:batch_size]
            calls = {level: (lambda model=model: model.generate(input_ids=batch, max_iterations=iterations,
                                                                stop_when_unchanged=False))
                     for level, model in models.items()}
            for level, milliseconds in interleaved_medians(calls, repeats).items():
                results[level][f"latency_ms_b{batch_size}_it{iterations}"] = milliseconds
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    parser.add_argument("--memory_of", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.memory_of:  # a fresh process, so that its peak memory is its own
        print(json.dumps(peak_memory(args.memory_of)))
        return

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for shape in args.shapes:
            model = build_model(shape)
            for level in LEVELS:  # levels are nested: prune the same model further each time
                model.prune_to(level)
                model.save_pretrained(os.path.join(workdir, f"{shape}-{level}"))
            del model
            checkpoints = {level: os.path.join(workdir, f"{shape}-{level}") for level in LEVELS}
            print(f"{shape}: latency, levels interleaved ...", file=sys.stderr, flush=True)
            models = {level: DeerForConditionalGeneration.from_pretrained(path).eval()
                      for level, path in checkpoints.items()}
            latencies = interleaved_latencies(models, args.repeats)
            for level, model in models.items():
                row = {"shape": shape, "level": level, "params_nonembedding": non_embedding_parameters(model),
                       "heads": sum(model.config.layer_num_heads),
                       "ffn_neurons": sum(model.config.layer_intermediate_sizes), **latencies[level]}
                print(f"{shape}: peak memory at level {level} ...", file=sys.stderr, flush=True)
                command = [sys.executable, "-m", "training.bench_pruning", "--threads", str(args.threads),
                           "--memory_of", checkpoints[level]]
                result = subprocess.run(command, capture_output=True, text=True, check=True,
                                        env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
                row.update(json.loads(result.stdout.strip().splitlines()[-1]))
                rows.append(row)
            del models

    timings = [key for key in rows[0] if key.startswith("latency_ms")]
    print(f"{args.threads} threads; generate latency in ms (median), x = ratio to level 0 of the same shape")
    header = ["shape", "level", "non-emb params", "peak RSS MB"] + [key.removeprefix("latency_ms_") for key in timings]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        base = next(r for r in rows if r["shape"] == row["shape"] and r["level"] == 0.0)
        cells = [row["shape"], f"{row['level']:g}",
                 f"{row['params_nonembedding'] / 1e6:.1f}M (x{row['params_nonembedding'] / base['params_nonembedding']:.2f})",
                 f"{row['peak_rss_mb']:.0f} (x{row['peak_rss_mb'] / base['peak_rss_mb']:.2f})"]
        cells += [f"{row[key]:.1f} (x{row[key] / base[key]:.2f})" for key in timings]
        print("| " + " | ".join(cells) + " |")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"threads": args.threads, "repeats": args.repeats, "source_length": SOURCE_LENGTH,
                       "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
