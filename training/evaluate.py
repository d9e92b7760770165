"""Score a DEER checkpoint on a prepared task's validation and test splits at several iteration counts.

    python -m training.evaluate --model DIR --data_dir data/bible-de-en [--splits validation test | my_split.csv]
        [--iterations 0 1 2 4] [--sparsity 0 0.5]
        [--eos_penalty 0] [--blank_penalty 0] [--deletion_penalty 0] [--output results/NAME.json]

Prints BLEU, chrF and ROUGE-L per split, pruning level and iteration count (references normalised as
training/metrics says) and the generation time; writes them as JSON with `--output`.
"""

import json
import os
import time

import torch
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.cli import evaluate_parser
from training.data import read_inputs
from training.decoding import apply_knob_arguments, generate_texts
from training.metrics import normalize, score


def main(argv=None):
    parser = evaluate_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = DeerForConditionalGeneration.from_pretrained(args.model).eval()
    for sparsity in args.sparsity:  # an impossible level fails here, before any decoding
        model.set_sparsity(sparsity)
    apply_knob_arguments(model, args)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = []
    for split in args.splits:
        if os.path.isfile(split):
            path = split
        elif args.data_dir:
            path = os.path.join(args.data_dir, f"{split}.jsonl")
        else:
            parser.error(f"--splits {split}: not a file, and no --data_dir to find {split}.jsonl in")
        sources, targets = read_inputs(path, "source", "target")
        if targets is None:
            parser.error(f"{path} has no target column to score against")
        references = normalize(tokenizer, targets)
        for sparsity in args.sparsity:
            model.set_sparsity(sparsity)
            for iterations in args.iterations:
                started = time.perf_counter()
                outputs = generate_texts(model, tokenizer, sources, iterations, args.batch_size, progress=False)
                seconds = time.perf_counter() - started
                rows.append({"split": split, "sparsity": sparsity, "iterations": iterations,
                             "sentences": len(sources), "seconds": seconds, **score(outputs, references),
                             "example": outputs[0]})
                print(f"{split:>10} | sparsity {sparsity:g} | {iterations} iterations | BLEU {rows[-1]['bleu']:6.2f} "
                      f"| chrF {rows[-1]['chrf']:6.2f} | ROUGE-L {rows[-1]['rougeL']:6.2f} | {seconds:6.1f} s for "
                      f"{len(sources)} sentences", flush=True)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"model": args.model, "threads": torch.get_num_threads(),
                       "eos_penalty": model.generation_config.eos_penalty,
                       "blank_penalty": model.generation_config.blank_penalty,
                       "deletion_penalty": model.generation_config.deletion_penalty,
                       "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
