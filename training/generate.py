"""Generate with a DEER checkpoint over a file, in batches, with a progress bar.

    python -m training.generate --model DIR --input FILE --output FILE \
        [--max_iterations 2] [--sparsity 0.5] [--eos_penalty 1] [--blank_penalty 2] [--deletion_penalty 2]
        [--batch_size 32] [--source_column source] [--target_column target] [--source_lang de --target_lang en]

FILE is JSON lines, CSV or TSV with a source column, or plain text (one source per line). When the input has a
target column, the outputs are scored (BLEU, chrF, ROUGE-L; references normalised as training/metrics says) and the
scores printed and written next to the output as OUTPUT.scores.json. The output holds one generated text per line.
"""

import json
import time

import torch
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.cli import generate_parser
from training.data import read_inputs
from training.decoding import apply_knob_arguments, generate_texts
from training.metrics import normalize, score


def main(argv=None):
    args = generate_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = DeerForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model.set_sparsity(args.sparsity)
    apply_knob_arguments(model, args)
    iterations = model.generation_config.max_iterations if args.max_iterations is None else args.max_iterations
    sources, targets = read_inputs(args.input, args.source_column, args.target_column, args.source_lang,
                                   args.target_lang)

    started = time.perf_counter()
    outputs = generate_texts(model, tokenizer, sources, iterations, args.batch_size)
    seconds = time.perf_counter() - started
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.writelines(text + "\n" for text in outputs)
    print(f"{len(outputs)} outputs written to {args.output} in {seconds:.1f} s "
          f"(max_iterations={iterations}, sparsity={args.sparsity:g}, batch {args.batch_size})")
    if targets is not None:
        results = score(outputs, normalize(tokenizer, targets))
        results.update(max_iterations=iterations, sparsity=args.sparsity, sentences=len(outputs), seconds=seconds)
        with open(args.output + ".scores.json", "w") as handle:
            json.dump(results, handle, indent=2)
        print(" ".join(f"{name}={value:.2f}" for name, value in results.items() if name in ("bleu", "chrf", "rougeL")))


if __name__ == "__main__":
    main()
