"""How fast DEER is on this machine: three tables, each from one run in which the systems take turns.

    python -m training.bench [--tables speed pruning basic] [--shapes minilm bert-base] [--threads 2]
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

The random DEER weights are arranged so that every setting does realistic work whatever the weights say (see
`training.measure`): the pruning scores are random (levels cut every layer differently, as trained scores do), and
the edit heads are calibrated so that every round deletes and inserts a few tokens per row (the fewest at which
every round at batch 1 runs all three of its passes: delete, insert, fill; the tables say how many). Timings are
medians of `--repeats` rounds after a warm-up round.
"""

import argparse
import copy
import json
import os
import tempfile
import time

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from training.bible import load_bible_pairs
from training.measure import (BERT_CLS, BERT_MASK, BERT_SEP, OUTPUT_LENGTH, SHAPES, SOURCE_LENGTH, build_autoregressive, build_floor,
                              build_model, calibrate_output_length, forced, in_fresh_process, interleaved_medians,
                              non_embedding_parameters, peak_rss_mb, realistic_rounds, reset_peak_rss, sources_batch, tokens,
                              untrimmed_copy, verse_batches, vocabulary_size)
from training.report import bench_tables


LEVELS = (0.0, 0.25, 0.5, 0.75)


def time_speed(shape: str, repeats: int, device: str = "cpu", dtypes=("float32",), batch_sizes=(1, 32),
               compiled: bool = False) -> list[dict]:
    """DEER at 0/1/2/4 realistic rounds (and, with `compiled`, after `compile_passes()`), its floor and BERT2BERT,
    for each dtype and batch size. The arranging (draft length, rounds) happens in float32 on the CPU first."""
    deer, floor, autoregressive = build_model(shape), build_floor(shape), build_autoregressive(shape)
    sources = sources_batch(max(32, *batch_sizes), vocabulary_size(shape))
    deer_length = calibrate_output_length(deer, sources[:32], OUTPUT_LENGTH)
    rounds = realistic_rounds(deer, sources[:32])
    draft_length = int(deer.draft_lengths(torch.tensor([SOURCE_LENGTH]))[0])
    joint = torch.cat([sources, torch.full((len(sources), draft_length), BERT_MASK)], dim=1).to(device)
    sources = sources.to(device)
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    rows = []
    for dtype in dtypes:
        models = {name: copy.deepcopy(model).to(device, getattr(torch, dtype))
                  for name, model in (("deer", deer), ("floor", floor), ("ar", autoregressive))}
        if compiled:
            models["deer-compiled"] = copy.deepcopy(models["deer"]).compile_passes()
        for batch_size in batch_sizes:
            batch = tokens(sources[:batch_size])
            calls = {"floor": torch.no_grad()(lambda: models["floor"](input_ids=joint[:batch_size]))}
            for name in ("deer", "deer-compiled") if compiled else ("deer",):
                calls |= {f"{name}-{k}": forced(models[name], batch, k) for k in (0, 1, 2, 4)}
            calls["ar"] = lambda: models["ar"].generate(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=OUTPUT_LENGTH,
                min_new_tokens=OUTPUT_LENGTH, do_sample=False, num_beams=1)
            medians = interleaved_medians(calls, repeats if batch_size == 1 else max(2, repeats // 2),
                                          synchronize=synchronize)
            rows += [{"shape": shape, "device": device, "dtype": dtype, "batch_size": batch_size, "system": name,
                      "latency_ms": milliseconds, "rounds": rounds,
                      "output_tokens": OUTPUT_LENGTH if name == "ar" else round(deer_length, 1)}
                     for name, milliseconds in medians.items()]
    return rows


def time_training(shape: str, repeats: int, device: str = "cpu", dtype: str = "float32",
                  batch_size: int = 64) -> list[dict]:
    """Optimizer steps per second (forward, backward, AdamW) of DEER and of BERT2BERT of the shape, on random
    48-token sources and 32-token targets, under autocast to `dtype` (float32: none)."""
    generator = torch.Generator().manual_seed(2)
    sources = sources_batch(batch_size, vocabulary_size(shape)).to(device)
    targets = torch.randint(1000, int(sources.max()) + 1, (batch_size, OUTPUT_LENGTH), generator=generator)
    targets[:, 0], targets[:, -1] = BERT_CLS, BERT_SEP
    targets = targets.to(device)
    models = {"deer": build_model(shape), "ar": build_autoregressive(shape)}
    inputs = {"deer": {"input_ids": sources, "labels": targets},
              "ar": {"input_ids": sources, "attention_mask": torch.ones_like(sources),
                     "decoder_input_ids": targets[:, :-1].contiguous(), "labels": targets[:, 1:].contiguous()}}
    autocast = torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype), enabled=dtype != "float32")
    calls = {}
    for name, model in models.items():
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(model=model, optimizer=optimizer, batch=inputs[name]):
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        calls[name] = step
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    return [{"shape": shape, "device": device, "dtype": dtype, "batch_size": batch_size, "system": name,
             "step_ms": milliseconds, "steps_per_second": 1000 / milliseconds}
            for name, milliseconds in interleaved_medians(calls, repeats, synchronize=synchronize).items()]


def time_trimming(model_dir: str, repeats: int) -> list[dict]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trimmed = DeerForConditionalGeneration.from_pretrained(model_dir).eval()
    if trimmed.config.vocabulary_ids is None:
        raise SystemExit(f"--model {model_dir} has its full vocabulary: the trimming rows need a trimmed model")
    models = {"untrimmed": untrimmed_copy(trimmed), "trimmed": trimmed}
    rows = []
    for batch_size, batch in verse_batches(tokenizer).items():
        calls = {f"{name}-{k}": forced(model, batch, k) for name, model in models.items() for k in (0, 2)}
        rows += [{"model": model_dir, "batch_size": batch_size, "system": name, "latency_ms": milliseconds,
                  "vocabulary": models[name.split("-")[0]].config.embedding_rows}
                 for name, milliseconds in interleaved_medians(calls, repeats).items()]
    return rows


def peak_memory(checkpoint: str) -> dict:
    """(In a fresh process, `--memory_of`.) Load a pruned checkpoint and generate once at batch 32 with 2 rounds."""
    reset_peak_rss()
    model = DeerForConditionalGeneration.from_pretrained(checkpoint).eval()
    output = forced(model, tokens(sources_batch(32, model.config.vocab_size)), 2)()
    return {"peak_rss_mb": peak_rss_mb(), "output_tokens_b32_it2": int((output != 0).sum()) // 32}


def time_pruning(shape: str, repeats: int, threads: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        model, checkpoints = build_model(shape), {}
        rounds = {}
        for level in LEVELS:  # levels are nested: prune the same model further each time
            checkpoints[level] = os.path.join(workdir, f"{shape}-{level}")
            rounds[level] = realistic_rounds(model.prune_to(level), sources_batch(32, vocabulary_size(shape)))
            model.save_pretrained(checkpoints[level])
        models = {level: DeerForConditionalGeneration.from_pretrained(path).eval()
                  for level, path in checkpoints.items()}
        timings = {level: {} for level in LEVELS}
        for iterations in (0, 2):
            for batch_size in (1, 32):
                batch = tokens(sources_batch(32, vocabulary_size(shape))[:batch_size])
                calls = {level: forced(model, batch, iterations) for level, model in models.items()}
                for level, milliseconds in interleaved_medians(calls, repeats).items():
                    timings[level][f"latency_ms_b{batch_size}_it{iterations}"] = milliseconds
        for level, model in models.items():
            rows.append({"shape": shape, "level": level, "params_nonembedding": non_embedding_parameters(model),
                         "heads": sum(model.config.layer_num_heads),
                         "ffn_neurons": sum(model.config.layer_intermediate_sizes), **timings[level],
                         "rounds": rounds[level],
                         **in_fresh_process("training.bench", threads, checkpoints[level])})
    return rows


def time_basic(model_dir: str, repeats: int, compile_passes: bool) -> dict:
    model = DeerForConditionalGeneration.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    from training.data import DeerDataCollator, tokenize_pairs  # (datasets, which a bare GPU machine lacks)

    pairs = load_bible_pairs("bible-de-en")["train"][1000:1016]
    batch = DeerDataCollator(tokenizer.pad_token_id)(tokenize_pairs(tokenizer, pairs, 128, 128))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def train_step():
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.train()
    step_ms = interleaved_medians({"step": train_step}, repeats)["step"]
    model.load_state_dict(state)
    model.eval()
    batches = verse_batches(tokenizer)
    calls = {(k, size): forced(model, batches[size], k) for k in (0, 1, 2) for size in (1, 32)}
    rows = [{"iterations": k, "batch_size": size, "ms_per_call": ms, "ms_per_sentence": ms / size}
            for (k, size), ms in interleaved_medians(calls, repeats).items()]
    compile_seconds = None
    if compile_passes:
        started = time.perf_counter()
        model.compile_passes()
        for call in calls.values():  # the first call at each shape compiles
            call()
        compile_seconds = time.perf_counter() - started
        for row, milliseconds in zip(rows, interleaved_medians(calls, repeats).values()):
            row["ms_per_call_compiled"] = milliseconds
    return {"model": model_dir, "train_step_ms_batch16": step_ms, "source_shape": list(batch["input_ids"].shape),
            "labels_shape": list(batch["labels"].shape), "compile_seconds": compile_seconds, "generate": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", choices=["speed", "pruning", "basic", "training"],
                        default=["speed", "pruning", "basic"])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=["minilm", "bert-base"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="checkpoints/bible-de-en/deer",
                        help="a trained DEER checkpoint with a trimmed vocabulary (speed's trimming rows, basic)")
    parser.add_argument("--compile", action="store_true", help="basic: also time generate after compile_passes()")
    parser.add_argument("--device", default="cpu", help="speed and training: cpu, cuda, ... (pruning and basic: cpu)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16", "float16"], default=["float32"],
                        help="speed: the weights' dtypes; training: autocast to the last one")
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 32], help="speed: the batch sizes")
    parser.add_argument("--speed_compiled", action="store_true",
                        help="speed: also time DEER after compile_passes() (torch.compile)")
    parser.add_argument("--training_batch_size", type=int, default=64)
    parser.add_argument("--output", default=None, help="also write every figure as JSON here")
    parser.add_argument("--memory_of", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_of:  # a fresh process, so that its peak memory is its own
        print(json.dumps(peak_memory(args.memory_of)))
        return
    results = {"threads": args.threads, "repeats": args.repeats, "source_length": SOURCE_LENGTH,
               "output_length": OUTPUT_LENGTH}
    jobs = [(table, shape) for table in ("speed", "pruning", "training") if table in args.tables
            for shape in args.shapes]
    jobs += [(table, None) for table in ("trimming", "basic") if table in args.tables or
             (table == "trimming" and "speed" in args.tables and args.device == "cpu")]
    for table, shape in tqdm(jobs, desc="timing", unit="table"):
        if table == "speed":
            results.setdefault("speed", []).extend(time_speed(shape, args.repeats, args.device, args.dtypes,
                                                              args.batch_sizes, args.speed_compiled))
        elif table == "training":
            results.setdefault("training", []).extend(time_training(shape, args.repeats, args.device, args.dtypes[-1],
                                                                    args.training_batch_size))
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
