"""Generate with a DEER checkpoint over a file, in batches, with a progress bar.

    python -m training.generate --model DIR --input FILE --output FILE \
        [--max_iterations 2] [--sparsity 0.5] [--eos_penalty 1] [--blank_penalty 2] [--deletion_penalty 2]
        [--batch_size 32] [--source_column source] [--target_column target]

FILE is JSON lines, CSV or TSV with a source column, or plain text (one source per line). When the input has a
target column, the outputs are scored (BLEU, chrF, ROUGE-L; references normalised as training/metrics says) and the
scores printed and written next to the output as OUTPUT.scores.json. The output holds one generated text per line.
"""

import json
import time

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.cli import KNOBS, generate_parser
from training.metrics import normalize, score
from training.train import check_text_file, load_split


def read_inputs(path: str, source_column: str, target_column: str) -> tuple[list[str], list[str] | None]:
    """Sources (and targets, where the file has that column) of a JSON lines / CSV / TSV file, or the lines of a
    plain text file: every line, blank ones too, so that output line i answers input line i. A row without text
    fails here, before any work, naming the file and line."""
    if path.rsplit(".", 1)[-1].lower() in ("jsonl", "json", "csv", "tsv"):
        dataset = load_split(path, source_column, target_column, None, target_required=False)
        targets = dataset[target_column] if target_column in dataset.column_names else None
        return list(dataset[source_column]), (list(targets) if targets is not None else None)
    check_text_file(path)
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines(), None


def apply_knob_arguments(model, args):
    """Set the knobs given on the command line; a bad value fails here, before any decoding."""
    for name in KNOBS:
        if getattr(args, name) is not None:
            setattr(model.generation_config, name, getattr(args, name))
    model.generation_config.validate()


def generate_texts(model, tokenizer, sources: list[str], max_iterations: int, batch_size: int,
                   progress: bool = True) -> list[str]:
    """Decode `sources` in batches of similar length (less padding), returned in the input order. A blank source
    gives an empty output (it is not decoded)."""
    outputs = ["" if not text.strip() else None for text in sources]
    order = sorted((i for i, text in enumerate(sources) if text.strip()), key=lambda i: len(sources[i]))
    limit = model.config.max_sequence_length
    for start in tqdm(range(0, len(order), batch_size), desc="generating", disable=not progress):
        indices = order[start : start + batch_size]
        batch = tokenizer([sources[i] for i in indices], return_tensors="pt", padding=True, truncation=True,
                          max_length=limit, split_special_tokens=True)
        ids = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             max_iterations=max_iterations)
        for i, text in zip(indices, tokenizer.batch_decode(ids, skip_special_tokens=True)):
            outputs[i] = text
    return outputs


def main(argv=None):
    args = generate_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = DeerForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model.set_sparsity(args.sparsity)
    apply_knob_arguments(model, args)
    iterations = model.generation_config.max_iterations if args.max_iterations is None else args.max_iterations
    sources, targets = read_inputs(args.input, args.source_column, args.target_column)

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
