"""Score a DEER checkpoint on split files at several iteration counts and pruning levels; with `--select`, first
choose its decoding knobs on the validation split (and with `--save`, keep them in the checkpoint).

    python -m training.evaluate --model DIR --data_dir data/bible-de-en-32 [--splits validation test | my_split.csv]
        [--max_iterations 0 1 2 4] [--sparsity 0 0.5] [--refinement edits|redraft]
        [--eos_penalty 0] [--blank_penalty 0] [--deletion_penalty 0] [--reveal_threshold 0.9] [--upsample_ratio 1.5]
        [--output results/NAME.json]
    python -m training.evaluate --model DIR --validation_file data/bible-de-en-32/validation.jsonl \
        --select bleu --save [--select_max_iterations 2] [--select_refinements edits redraft] \
        [--blank_penalties 0 1 2 3 4 6] [--deletion_penalties 0 1 2 4] [--eos_penalties 0 0.5 1 1.5 2 3] \
        [--reveal_thresholds 0.5 0.7 0.8 0.9 0.95] [--max_iterations_candidates 0 1 2 4]

Prints BLEU, chrF and ROUGE-L per split, pruning level and iteration count (references normalised as
training/metrics says) and the generation time; writes them as JSON with `--output`.

`--select METRIC` chooses, by METRIC on the validation pairs (`--validation_file`, else DATA_DIR/validation.jsonl),
the kind of round and its knobs, one after the other at `--select_max_iterations` rounds, for each kind in
`--select_refinements`: `blank_penalty` (the draft's length); then for edit rounds `deletion_penalty` (larger deletes
less) and `eos_penalty` (larger inserts more), for re-drafting rounds `reveal_threshold`; ties go to the smaller
value. Then every `--max_iterations_candidates` round count is scored with each kind's knobs, and the kind and count
kept are the
fewest rounds that score within 0.5 % of the best (more rounds cost time; smaller gains are noise). Every candidate's
scores are printed. `--save` writes the choice to the checkpoint's generation_config.json, so that a plain `generate()`
and a pushed model decode as chosen; the candidates go to tune_generation.json next to it. With `--select`, only the
splits named in `--splits` are scored afterwards (none by default). The test split is never used to choose.
"""

import json
import os
import time

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.cli import DECODING, KNOBS, evaluate_parser
from training.data import read_texts
from training.decoding import decoding_arguments, generate_texts, set_decoding, tune_knobs
from training.metrics import normalize, score


def split_path(parser, split: str, data_dir: str | None) -> str:
    if os.path.exists(split):  # a file, or a save_to_disk folder
        return split
    if data_dir:
        return os.path.join(data_dir, f"{split}.jsonl")
    parser.error(f"{split}: not a file, and no --data_dir to find {split}.jsonl in")


def read_pairs(parser, args, path: str, split: str):
    sources, targets = read_texts(path, args, split)
    if targets is None:
        parser.error(f"{path} has no '{args.target_column}' column to score against")
    return sources, targets


def select(parser, args, model, tokenizer):
    """--select: choose the knobs on validation; --save keeps them (and every candidate's scores) in the model."""
    path = args.validation_file or split_path(parser, "validation", args.data_dir)
    sources, targets = read_pairs(parser, args, path, "validation")
    candidates = {
        "blank_penalty": args.blank_penalties,
        "deletion_penalty": args.deletion_penalties,
        "eos_penalty": args.eos_penalties,
        "reveal_threshold": args.reveal_thresholds,
    }
    print(
        tune_knobs(
            model,
            tokenizer,
            sources,
            targets,
            args.select,
            args.select_max_iterations,
            candidates,
            args.max_iterations_candidates,
            tuple(args.select_refinements),
            save_dir=args.model if args.save else None,
            validation_file=path,
        ),
        flush=True,
    )


def main(argv=None):
    parser = evaluate_parser()
    args = parser.parse_args(argv)
    if args.select:
        if any(getattr(args, name) is not None for name in ("refinement", *KNOBS)):
            parser.error(
                "--select chooses --refinement, "
                + ", ".join(f"--{name}" for name in KNOBS)
                + ": give none of them with it"
            )
        if min([args.select_max_iterations] + args.max_iterations_candidates) < 0:
            parser.error("--select_max_iterations and --max_iterations_candidates must be at least 0")
        if min(args.blank_penalties + args.deletion_penalties + args.eos_penalties) < 0:
            parser.error("--blank_penalties, --deletion_penalties and --eos_penalties must be >= 0")
        if not all(0 < value <= 1 for value in args.reveal_thresholds):
            parser.error("--reveal_thresholds must be probabilities in (0, 1]")
    elif args.save:
        parser.error("--save keeps what --select chooses: give --select METRIC too")
    if args.upsample_ratio is not None and args.upsample_ratio < 1:
        parser.error("--upsample_ratio must be at least 1 (a frame per source token)")
    splits = args.splits if args.splits is not None else ([] if args.select else ["validation", "test"])
    paths = [split_path(parser, split, args.data_dir) for split in splits]
    if args.threads:
        torch.set_num_threads(args.threads)

    model = DeerForConditionalGeneration.from_pretrained(args.model).eval().to(args.device)
    if args.sparsity is None:  # the model's own level: full size, or what a pruned checkpoint was cut to
        args.sparsity = [model.config.pruned_sparsity]
    for sparsity in args.sparsity:  # an impossible level fails here, before any decoding
        model.set_sparsity(sparsity)
    model.set_sparsity(args.sparsity[0])
    set_decoding(model, **{**decoding_arguments(args), "max_iterations": None})  # the rounds: per row below
    if args.upsample_ratio is not None:
        model.config.upsample_ratio = args.upsample_ratio
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.select:
        select(parser, args, model, tokenizer)
    rows = []
    bar = tqdm(
        total=len(paths) * len(args.sparsity) * len(args.max_iterations),
        desc="scoring",
        unit="setting",
        disable=not paths,
    )
    for split, path in zip(splits, paths):
        sources, targets = read_pairs(parser, args, path, split)
        references = normalize(tokenizer, targets)
        for sparsity in args.sparsity:
            model.set_sparsity(sparsity)
            for max_iterations in args.max_iterations:
                bar.update()
                started = time.perf_counter()
                outputs = generate_texts(
                    model, tokenizer, sources, args.batch_size, progress=False, max_iterations=max_iterations
                )
                seconds = time.perf_counter() - started
                rows.append(
                    {
                        "split": split,
                        "sparsity": sparsity,
                        "max_iterations": max_iterations,
                        "sentences": len(sources),
                        "seconds": seconds,
                        **score(outputs, references),
                        "example": outputs[0],
                    }
                )
                tqdm.write(
                    f"{split:>10} | sparsity {sparsity:g} | max_iterations {max_iterations} | BLEU "
                    f"{rows[-1]['bleu']:6.2f} | chrF {rows[-1]['chrf']:6.2f} | ROUGE-L {rows[-1]['rougeL']:6.2f} "
                    f"| {seconds:6.1f} s for {len(sources)} sentences"
                )
    bar.close()
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(
                {
                    "model": args.model,
                    "threads": torch.get_num_threads(),
                    "device": args.device,
                    "upsample_ratio": model.config.upsample_ratio,
                    **{name: getattr(model.generation_config, name) for name in DECODING if name != "max_iterations"},
                    "rows": rows,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
