"""Generate with a DEER checkpoint over a file, in batches, with a progress bar.

    python -m training.generate --model DIR --input FILE --output FILE \
        [--max_iterations 2] [--sparsity 0.5] [--eos_penalty 1] [--blank_penalty 2] [--deletion_penalty 2]
        [--batch_size 32] [--source_column source] [--target_column target] [--source_lang de --target_lang en]

    torchrun --nproc_per_node 4 -m training.generate ...    # or accelerate launch: the lines split between them
    cat sources.txt | python -m training.generate --model DIR --input - --output - > outputs.txt

FILE is any form deer-train reads (JSON lines, CSV, TSV, parquet, arrow, a save_to_disk folder) with a source column
(or a `translation` column with --source_lang), or plain text (one source per line). With several processes each
takes a contiguous share of the lines (logged as `process R of N: lines A-B`) and the first writes the output, in
input order, the same file one process writes. When the input has a
target column, the outputs are scored (BLEU, chrF, ROUGE-L; references normalised as training/metrics says) and the
scores printed and written next to the output as OUTPUT.scores.json. The output holds one generated text per line.
"""

import json
import sys
import time

import torch
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.cli import generate_parser
from training.data import read_texts
from training.decoding import (
    decoding_arguments,
    generate_across_processes,
    generate_texts,
    process_device,
    set_decoding,
)
from training.metrics import normalize, score


def main(argv=None):
    args = generate_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.input == "-":  # plain text on standard input, one source per line
        sources, targets = sys.stdin.read().splitlines(), None
    else:  # read (and checked) before the model loads
        sources, targets = read_texts(args.input, args)
    device = process_device()  # several processes (torchrun): a GPU each, where there are GPUs
    model = DeerForConditionalGeneration.from_pretrained(args.model).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.sparsity is None:  # the model's own level: full size, or what a pruned checkpoint was cut to
        args.sparsity = model.config.pruned_sparsity
    model.set_sparsity(args.sparsity)
    set_decoding(model, **decoding_arguments(args))
    max_iterations = model.generation_config.max_iterations

    started = time.perf_counter()
    outputs = generate_across_processes(
        lambda share: generate_texts(model, tokenizer, share, args.batch_size), sources
    )
    seconds = time.perf_counter() - started
    if outputs is None:  # another process writes the file
        return
    if args.output == "-":  # standard output holds the texts only; the summary goes to standard error
        sys.stdout.writelines(text + "\n" for text in outputs)
        sys.stdout.flush()
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.writelines(text + "\n" for text in outputs)
    print(
        f"{len(outputs)} outputs written to {'standard output' if args.output == '-' else args.output} in "
        f"{seconds:.1f} s (max_iterations={max_iterations}, sparsity={args.sparsity:g}, batch {args.batch_size})",
        file=sys.stderr if args.output == "-" else sys.stdout,
    )
    if targets is not None and args.output != "-":
        results = score(outputs, normalize(tokenizer, targets))
        results.update(max_iterations=max_iterations, sparsity=args.sparsity, sentences=len(outputs), seconds=seconds)
        with open(args.output + ".scores.json", "w") as handle:
            json.dump(results, handle, indent=2)
        print(" ".join(f"{name}={value:.2f}" for name, value in results.items() if name in ("bleu", "chrf", "rougeL")))


if __name__ == "__main__":
    main()
