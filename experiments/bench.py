"""How fast DEER is on this machine: three tables, each from one run in which the systems take turns.

    python -m experiments.bench [--tables speed pruning basic] [--shapes minilm bert-base] [--threads 2]
        [--repeats 3] [--model checkpoints/bible-de-en/deer] [--compile] [--output results/bench.json]

speed    DEER against its floor and against autoregressive decoding. Random weights of a MiniLM shape (6 layers,
         hidden 384) and a BERT-base shape (12 layers, hidden 768) for every system, 48-token sources, batch 1 and
         32: floor = one BertForMaskedLM pass over the 48 source + 96 draft tokens; deer-k = `generate` with exactly
         k = 0, 1, 2, 4 rounds (`stop_when_unchanged=False`); AR = a BERT2BERT EncoderDecoderModel of the same shape,
         greedy with its KV cache, exactly 32 tokens (`min_new_tokens=32`), what a transformers user would otherwise
         pick. DEER's blank score is calibrated so that its draft collapses to 32 tokens on average too. Then what
         trimming the vocabulary buys: `--model` (a trained DEER checkpoint with a trimmed vocabulary) against the
         same model with the full vocabulary back (the dropped rows restored, never chosen, so both write the same
         outputs), on real held-out verses.
pruning  what each pruning level buys: each shape physically pruned to 0 / 0.25 / 0.5 / 0.75 and saved; its
         non-embedding parameters, the peak resident memory of a fresh process that loads it and generates once
         (batch 32, 2 rounds), and `generate` latency at batch 1 and 32 for 0 and 2 rounds, with ratios to level 0.
basic    `--model` on real verses: one training step at batch 16 (forward, backward, AdamW), and `generate` at
         batch 1 and 32 for exactly 0, 1 and 2 rounds; with `--compile`, again after `compile_passes()`.
training DEER's and BERT2BERT's optimizer steps per second (`--training_batch_size`, autocast to the last of
         `--dtypes`).
anatomy  where the time goes: `generate` at batch 1 in its parts (draft pass, LM head, each pass of a realistic round)
         with their multiply-adds, and a training step at `--training_batch_size` (the whole step, the step with the
         edit losses on half the rows, its CTC-only phase, the Viterbi alignment, the AR model's step); then the
         training steps of `--model` and `--ar_model`, the shipped checkpoints, on real training pairs.
batch    batch 32 on the CPU against BERT2BERT under what a user can switch (threads, bfloat16, fewer draft frames),
         random weights and the shipped checkpoints.
memory   what one DEER call takes beyond its weights at batch 64 (48-token sources), with BERT's 30,522-row and
         XLM-R's 250,002-row LM head: `generate` (draft and two rounds) and a training step (forward and backward),
         each in a fresh process, peak resident memory.
checkpointing
         a training step at batch 64 (48-token sources, 32-token targets, BERT's vocabulary) without and with
         gradient checkpointing: its peak resident memory beyond the weights and its time, each in a fresh process.
concurrency
         two `generate` calls on one model from two Python threads against the same calls one after the other, one
         torch thread, at one pruning level and at two (batch 8, 2 realistic rounds): the share of the serial time
         that serving two requests at once takes (1.0 = no parallelism; 0.5 = two cores fully used).

The random DEER weights are arranged so that every setting does realistic work whatever the weights say (see
`experiments.synthetic`): the pruning scores are random (levels cut every layer differently, as trained scores do), and
the edit heads are calibrated so that every round deletes and inserts a few tokens per row (the fewest at which
every round at batch 1 runs all three of its passes: delete, insert, fill; the tables say how many). Timings are
medians of `--repeats` rounds after a warm-up round.
"""

import argparse
import json

import torch
from tqdm.auto import tqdm

from experiments.measure import (
    checkpointing_rows,
    memory_rows,
    peak_memory,
    scale_memory,
    time_anatomy,
    time_basic,
    time_batch,
    time_pruning,
    time_shipped_training,
    time_speed,
    time_threads,
    time_training,
    time_trimming,
)
from experiments.report import bench_tables
from experiments.synthetic import OUTPUT_LENGTH, SHAPES, SOURCE_LENGTH


# The tables timed once per --shapes.
PER_SHAPE = ("speed", "pruning", "training", "memory", "checkpointing", "anatomy", "batch", "concurrency")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", choices=[*PER_SHAPE, "basic"], default=["speed", "pruning", "basic"])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=["minilm", "bert-base"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--model",
        default="checkpoints/bible-de-en/deer",
        help="a trained DEER checkpoint with a trimmed vocabulary (speed's trimming rows, basic)",
    )
    parser.add_argument(
        "--ar_model", default="checkpoints/bible-de-en/ar", help="batch: the AR checkpoint to time against --model"
    )
    parser.add_argument("--compile", action="store_true", help="basic: also time generate after compile_passes()")
    parser.add_argument("--device", default="cpu", help="speed and training: cpu, cuda, ... (pruning and basic: cpu)")
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=["float32", "bfloat16", "float16"],
        default=["float32"],
        help="speed: the weights' dtypes; training: autocast to the last one",
    )
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 32], help="speed: the batch sizes")
    parser.add_argument(
        "--speed_compiled", action="store_true", help="speed: also time DEER after compile_passes() (torch.compile)"
    )
    parser.add_argument(
        "--compiled_batch_sizes", nargs="+", type=int, default=[1], help="speed: compiled DEER at these"
    )
    parser.add_argument("--training_batch_size", type=int, default=64)
    parser.add_argument("--output", default=None, help="also write every figure as JSON here")
    parser.add_argument("--memory_of", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_of:  # a fresh process, so that its peak memory is its own
        spec = args.memory_of
        print(json.dumps(scale_memory(json.loads(spec)) if spec.startswith("{") else peak_memory(spec)))
        return
    results = {
        "threads": args.threads,
        "repeats": args.repeats,
        "source_length": SOURCE_LENGTH,
        "output_length": OUTPUT_LENGTH,
    }
    jobs = [(table, shape) for table in PER_SHAPE if table in args.tables for shape in args.shapes]
    jobs += [
        (table, None)
        for table in ("trimming", "basic")
        if table in args.tables or (table == "trimming" and "speed" in args.tables and args.device == "cpu")
    ]
    for table, shape in tqdm(jobs, desc="timing", unit="table"):
        if table == "speed":
            results.setdefault("speed", []).extend(
                time_speed(
                    shape,
                    args.repeats,
                    args.device,
                    args.dtypes,
                    args.batch_sizes,
                    args.speed_compiled,
                    args.compiled_batch_sizes,
                )
            )
        elif table == "training":
            results.setdefault("training", []).extend(
                time_training(shape, args.repeats, args.device, args.dtypes[-1], args.training_batch_size)
            )
        elif table == "memory":
            results.setdefault("memory", []).extend(memory_rows(shape, args.threads))
        elif table == "checkpointing":
            results.setdefault("checkpointing", []).extend(checkpointing_rows(shape, args.threads))
        elif table == "anatomy":
            results.setdefault("anatomy", []).extend(time_anatomy(shape, args.repeats, args.training_batch_size))
            if shape == args.shapes[-1]:  # then, once, the shipped checkpoints' steps
                results["anatomy"] += time_shipped_training(
                    args.model, args.ar_model, args.repeats, args.training_batch_size
                )
        elif table == "batch":
            results.setdefault("batch", []).extend(
                time_batch(shape, args.repeats, args.threads, args.model, args.ar_model)
            )
        elif table == "concurrency":
            results.setdefault("concurrency", []).extend(time_threads(shape, args.repeats))
        elif table == "pruning":
            results.setdefault("pruning", []).extend(time_pruning(shape, args.repeats, args.threads))
        elif table == "trimming":
            results["trimming"] = time_trimming(args.model, args.repeats)
        else:
            results["basic"] = time_basic(args.model, args.repeats, args.compile)
    print(bench_tables(results, args.shapes))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
