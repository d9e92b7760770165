"""Measuring: medians of whole calls after a warm-up, several systems taking turns (synchronised with a GPU when
there is one); a process's peak resident memory, and a fresh process to measure it in; the machine; the one count of
non-embedding parameters every table uses; and the measurements `experiments.bench` reports (speed against the floor
and the AR model, training steps, vocabulary trimming, pruning levels, basic timings), on the random-weight models
of training/synthetic.py or a real checkpoint."""

import contextlib
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch
from transformers import AutoTokenizer, BatchEncoding

from experiments.bible import load_bible_pairs
from experiments.synthetic import (
    BERT_CLS,
    BERT_MASK,
    BERT_SEP,
    OUTPUT_LENGTH,
    SOURCE_LENGTH,
    build_autoregressive,
    build_floor,
    build_model,
    calibrate_output_length,
    forced,
    realistic_rounds,
    sources_batch,
    tokens,
    vocabulary_size,
)
from modeling_deer import DeerForConditionalGeneration
from modeling_deer.modeling_deer import LENGTH_BUCKETS


LEVELS = (0.0, 0.25, 0.5, 0.75)  # the pruning table's


def interleaved_medians(calls: dict, repeats: int, on_round=None, synchronize=None) -> dict:
    """Median milliseconds of each call over `repeats` rounds after one warm-up round. Within a round the calls take
    turns, so a drift of the machine's speed touches every one of them alike and their ratios stay fair.
    `on_round()`, if given, is called after each round (a progress bar); `synchronize()` (a GPU's, e.g.
    `torch.cuda.synchronize`) after each call, inside its time."""
    timings = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if synchronize is not None:
                synchronize()
            if round_index:
                timings[name].append(time.perf_counter() - started)
        if on_round is not None:
            on_round()
    return {name: 1000 * statistics.median(values) for name, values in timings.items()}


def reset_peak_rss():
    """Linux keeps a process's peak RSS across fork and exec (getrusage(2)), so a child started by a large parent
    would report the parent's peak: reset this process's high-water mark first (to its current RSS)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB; None if the file lacks it."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return _status_mb("VmRSS") or 0.0


def hardware() -> dict:
    """The machine a report's timings come from."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def in_fresh_process(module: str, threads: int, spec: str) -> dict:
    """Run `python -m module --threads THREADS --memory_of SPEC` and return the JSON of its last output line: a
    measurement (peak memory) that must not count what this process holds."""
    command = [sys.executable, "-m", module, "--threads", str(threads), "--memory_of", spec]
    result = subprocess.run(
        command, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false")
    )
    if result.returncode != 0:
        why = "killed by the system (out of memory?)" if result.returncode == -9 else f"exit {result.returncode}"
        raise RuntimeError(f"the measurement in a fresh process failed ({why}):\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def non_embedding_parameters(model) -> int:
    """Parameters outside the embedding tables (word, position, type) and the output projection tied to them."""
    skip = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            skip.add(id(module.weight))
    output = model.get_output_embeddings()
    if output is not None:
        skip.add(id(output.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


# -- the measurements experiments.bench reports ----------------------------------------------------------------------


def verse_batches(tokenizer) -> dict[int, BatchEncoding]:
    """Real held-out verses (John, German): the first one alone, and the first 32 as one padded batch."""
    sources = [pair["source"] for pair in load_bible_pairs("bible-de-en")["test"][:32]]
    return {1: tokenizer(sources[:1], return_tensors="pt"), 32: tokenizer(sources, return_tensors="pt", padding=True)}


def untrimmed_copy(model: DeerForConditionalGeneration) -> DeerForConditionalGeneration:
    """`model` with its full vocabulary back: the dropped tokens' rows return with zero weights and a very low LM-head
    bias, so they are never chosen and both models write the same outputs."""
    config = copy.deepcopy(model.config)
    kept, config.vocabulary_ids = torch.tensor(config.vocabulary_ids), None
    full = DeerForConditionalGeneration(config).eval()
    state = model.state_dict()
    for key in ("model.embeddings.word_embeddings.weight", "lm_head.decoder.weight", "lm_head.decoder.bias"):
        value = state[key]
        state[key] = torch.full((config.vocab_size, *value.shape[1:]), -1e4 if value.dim() == 1 else 0.0)
        state[key][kept] = value
    full.load_state_dict(state)
    full.generation_config = copy.deepcopy(model.generation_config)
    return full


def synchronizer(device: str):
    """What makes a timing wait for the device's queued work (None on the CPU)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else None


def time_speed(
    shape: str,
    repeats: int,
    device: str = "cpu",
    dtypes=("float32",),
    batch_sizes=(1, 32),
    compiled: bool = False,
    compiled_batch_sizes=(1,),
) -> list[dict]:
    """DEER at 0/1/2/4 realistic rounds (and, with `compiled`, after `compile_passes()`, at `compiled_batch_sizes`:
    each new shape compiles), its floor and BERT2BERT, for each dtype and batch size. The arranging (draft length,
    rounds) happens in float32 on the CPU first."""
    deer, floor, autoregressive = build_model(shape), build_floor(shape), build_autoregressive(shape)
    sources = sources_batch(max(32, *batch_sizes), vocabulary_size(shape))
    deer_length = calibrate_output_length(deer, sources[:32], OUTPUT_LENGTH)
    rounds = realistic_rounds(deer, sources[:32])
    draft_length = int(deer.draft_lengths(torch.tensor([SOURCE_LENGTH]))[0])
    joint = torch.cat([sources, torch.full((len(sources), draft_length), BERT_MASK)], dim=1).to(device)
    sources = sources.to(device)
    rows = []
    for dtype in dtypes:
        models = {
            name: copy.deepcopy(model).to(device, getattr(torch, dtype))
            for name, model in (("deer", deer), ("floor", floor), ("ar", autoregressive))
        }
        if compiled:  # on CUDA: every pass padded to a length bucket, each bucket's CUDA graph replayed
            options = {"buckets": LENGTH_BUCKETS, "mode": "reduce-overhead"} if device == "cuda" else {}
            models["deer-compiled"] = copy.deepcopy(models["deer"]).compile_passes(**options)
        for batch_size in batch_sizes:
            batch = tokens(sources[:batch_size])
            calls = {"floor": torch.no_grad()(lambda: models["floor"](input_ids=joint[:batch_size]))}
            for name in ("deer", "deer-compiled") if compiled and batch_size in compiled_batch_sizes else ("deer",):
                calls |= {f"{name}-{k}": forced(models[name], batch, k) for k in (0, 1, 2, 4)}
            calls["ar"] = lambda: models["ar"].generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=OUTPUT_LENGTH,
                min_new_tokens=OUTPUT_LENGTH,
                do_sample=False,
                num_beams=1,
            )
            medians = interleaved_medians(
                calls, repeats if batch_size == 1 else max(2, repeats // 2), synchronize=synchronizer(device)
            )
            peaks = {name: cuda_peak_mb(call) for name, call in calls.items()} if device == "cuda" else {}
            rows += [
                {
                    "shape": shape,
                    "device": device,
                    "dtype": dtype,
                    "batch_size": batch_size,
                    "system": name,
                    "compiled": name.startswith("deer-compiled"),
                    "latency_ms": milliseconds,
                    "rounds": rounds,
                    "output_tokens": OUTPUT_LENGTH if name == "ar" else round(deer_length, 1),
                    **({"peak_memory_mb": peaks[name]} if name in peaks else {}),
                }
                for name, milliseconds in medians.items()
            ]
    return rows


def cuda_peak_mb(call) -> float:
    """The device memory one more run of `call` peaks at (weights included), in MB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def training_inputs(shape: str, batch_size: int, device: str = "cpu") -> dict:
    """A training batch for the timing tables: random 48-token sources and 32-token targets, as DEER's and as
    BERT2BERT's keyword arguments ({"deer": ..., "ar": ...})."""
    generator = torch.Generator().manual_seed(2)
    sources = sources_batch(batch_size, vocabulary_size(shape))
    targets = torch.randint(1000, int(sources.max()) + 1, (batch_size, OUTPUT_LENGTH), generator=generator)
    targets[:, 0], targets[:, -1] = BERT_CLS, BERT_SEP
    sources, targets = sources.to(device), targets.to(device)
    return {
        "deer": {"input_ids": sources, "labels": targets},
        "ar": {
            "input_ids": sources,
            "attention_mask": torch.ones_like(sources),
            "decoder_input_ids": targets[:, :-1].contiguous(),
            "labels": targets[:, 1:].contiguous(),
        },
    }


def optimizer_step(model, batch: dict, autocast=None):
    """A call that runs one training step of `model` on `batch` (forward under `autocast` if given, backward,
    AdamW); puts the model in training mode."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        with autocast or contextlib.nullcontext():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def time_training(
    shape: str, repeats: int, device: str = "cpu", dtype: str = "float32", batch_size: int = 64
) -> list[dict]:
    """Optimizer steps per second (forward, backward, AdamW) of DEER and of BERT2BERT of the shape, on random
    48-token sources and 32-token targets, under autocast to `dtype` (float32: none)."""
    inputs = training_inputs(shape, batch_size, device)
    models = {"deer": build_model(shape), "ar": build_autoregressive(shape)}
    autocast = torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype), enabled=dtype != "float32")
    calls = {name: optimizer_step(model.to(device), inputs[name], autocast) for name, model in models.items()}
    return [
        {
            "shape": shape,
            "device": device,
            "dtype": dtype,
            "batch_size": batch_size,
            "system": name,
            "step_ms": milliseconds,
            "steps_per_second": 1000 / milliseconds,
        }
        for name, milliseconds in interleaved_medians(calls, repeats, synchronize=synchronizer(device)).items()
    ]


def time_trimming(model_dir: str, repeats: int) -> list[dict]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trimmed = DeerForConditionalGeneration.from_pretrained(model_dir).eval()
    if trimmed.config.vocabulary_ids is None:
        raise SystemExit(f"--model {model_dir} has its full vocabulary: the trimming rows need a trimmed model")
    models = {"untrimmed": untrimmed_copy(trimmed), "trimmed": trimmed}
    rows = []
    for batch_size, batch in verse_batches(tokenizer).items():
        calls = {f"{name}-{k}": forced(model, batch, k) for name, model in models.items() for k in (0, 2)}
        rows += [
            {
                "model": model_dir,
                "batch_size": batch_size,
                "system": name,
                "latency_ms": milliseconds,
                "vocabulary": models[name.split("-")[0]].config.embedding_rows,
            }
            for name, milliseconds in interleaved_medians(calls, repeats).items()
        ]
    return rows


def peak_memory(checkpoint: str) -> dict:
    """(In a fresh process, `--memory_of`.) Load a pruned checkpoint and generate once at batch 32 with 2 rounds."""
    reset_peak_rss()
    model = DeerForConditionalGeneration.from_pretrained(checkpoint).eval()
    output = forced(model, tokens(sources_batch(32, model.config.vocab_size)), 2)()
    return {"peak_rss_mb": peak_rss_mb(), "output_tokens_b32_it2": int((output != 0).sum()) // 32}


MEMORY_VOCABULARIES = (30522, 250002)  # BERT's and XLM-R's


def scale_memory(spec: dict) -> dict:
    """(In a fresh process, `--memory_of`.) The memory one DEER call takes beyond its model's weights: random weights
    of `shape` with a `vocabulary`-row LM head, `batch` 48-token sources, either `generate` (the draft and two
    realistic rounds) or a training step (forward and backward, 32-token targets; with `gradient_checkpointing`,
    under `gradient_checkpointing_enable()`). Also the call's time."""
    model = build_model(spec["shape"], vocabulary=spec["vocabulary"])
    if spec.get("gradient_checkpointing"):  # transformers' name for it since 5.2x, and before
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    sources = sources_batch(spec["batch"], spec["vocabulary"])
    if spec["call"] == "generation":
        realistic_rounds(model, sources[:1], rounds=2)
        call = forced(model, tokens(sources), 2)
    else:
        generator = torch.Generator().manual_seed(2)
        targets = torch.randint(1000, int(sources.max()) + 1, (spec["batch"], OUTPUT_LENGTH), generator=generator)
        targets[:, 0], targets[:, -1] = BERT_CLS, BERT_SEP
        model.train()

        def call():
            model(input_ids=sources, labels=targets).loss.backward()

    model_mb = rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    with torch.set_grad_enabled(spec["call"] == "training"):
        call()
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    return {"model_mb": model_mb, "peak_mb": peak_mb, "extra_mb": peak_mb - model_mb, "seconds": seconds}


def memory_rows(shape: str, threads: int, batch_size: int = 64, specs: list[dict] | None = None) -> list[dict]:
    """`scale_memory` for each of `specs` (default: each vocabulary and call), each in a fresh process."""
    calls = ("generation", "training")
    specs = specs or [{"vocabulary": vocabulary, "call": call} for vocabulary in MEMORY_VOCABULARIES for call in calls]
    rows = []
    for spec in specs:
        spec = {"shape": shape, "batch": batch_size, **spec}
        try:
            result = in_fresh_process("experiments.bench", threads, json.dumps(spec))
        except RuntimeError as error:  # out of memory, most likely: say so in the table
            result = {"failed": str(error).strip().splitlines()[0][:200]}
        rows.append({**spec, **result})
    return rows


def checkpointing_rows(shape: str, threads: int, batch_size: int = 64) -> list[dict]:
    """A training step's memory beyond the model and its time, BERT's vocabulary, without and with gradient
    checkpointing, each in a fresh process."""
    specs = [
        {"vocabulary": MEMORY_VOCABULARIES[0], "call": "training", "gradient_checkpointing": checkpointing}
        for checkpointing in (False, True)
    ]
    return memory_rows(shape, threads, batch_size, specs)


def time_pruning(shape: str, repeats: int, threads: int) -> list[dict]:
    rows, sources = [], sources_batch(32, vocabulary_size(shape))
    with tempfile.TemporaryDirectory() as workdir:
        model, checkpoints, rounds = build_model(shape), {}, {}
        for level in LEVELS:  # levels are nested: prune the same model further each time
            checkpoints[level] = os.path.join(workdir, f"{shape}-{level}")
            rounds[level] = realistic_rounds(model.prune_to(level), sources)
            model.save_pretrained(checkpoints[level])
        models = {
            level: DeerForConditionalGeneration.from_pretrained(path).eval() for level, path in checkpoints.items()
        }
        timings = {level: {} for level in LEVELS}
        for iterations in (0, 2):
            for batch_size in (1, 32):
                batch = tokens(sources[:batch_size])
                calls = {level: forced(model, batch, iterations) for level, model in models.items()}
                for level, milliseconds in interleaved_medians(calls, repeats).items():
                    timings[level][f"latency_ms_b{batch_size}_it{iterations}"] = milliseconds
        for level, model in models.items():
            rows.append(
                {
                    "shape": shape,
                    "level": level,
                    "params_nonembedding": non_embedding_parameters(model),
                    "heads": sum(model.config.layer_num_heads),
                    "ffn_neurons": sum(model.config.layer_intermediate_sizes),
                    **timings[level],
                    "rounds": rounds[level],
                    **in_fresh_process("experiments.bench", threads, checkpoints[level]),
                }
            )
    return rows


def training_batch(tokenizer, batch_size: int, max_length: int) -> dict:
    """`batch_size` real bible-de-en training pairs (from the 1,000th on), tokenised with `tokenizer`, truncated to
    `max_length` tokens and padded as training pads them."""
    from training.data import DeerDataCollator, tokenize_pairs  # (datasets, which a bare GPU machine lacks)

    pairs = load_bible_pairs("bible-de-en")["train"][1000 : 1000 + batch_size]
    return DeerDataCollator(tokenizer.pad_token_id)(tokenize_pairs(tokenizer, pairs, max_length, max_length))


def time_basic(model_dir: str, repeats: int, compile_passes: bool) -> dict:
    model = DeerForConditionalGeneration.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = training_batch(tokenizer, 16, 128)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    step_ms = interleaved_medians({"step": optimizer_step(model, batch)}, repeats)["step"]
    model.load_state_dict(state)
    model.eval()
    batches = verse_batches(tokenizer)
    calls = {(k, size): forced(model, batches[size], k) for k in (0, 1, 2) for size in (1, 32)}
    rows = [
        {"iterations": k, "batch_size": size, "ms_per_call": ms, "ms_per_sentence": ms / size}
        for (k, size), ms in interleaved_medians(calls, repeats).items()
    ]
    compile_seconds = None
    if compile_passes:
        started = time.perf_counter()
        model.compile_passes()
        for call in calls.values():  # the first call at each shape compiles
            call()
        compile_seconds = time.perf_counter() - started
        for row, milliseconds in zip(rows, interleaved_medians(calls, repeats).values()):
            row["ms_per_call_compiled"] = milliseconds
    return {
        "model": model_dir,
        "train_step_ms_batch16": step_ms,
        "source_shape": list(batch["input_ids"].shape),
        "labels_shape": list(batch["labels"].shape),
        "compile_seconds": compile_seconds,
        "generate": rows,
    }


def pass_macs(config, queries: int, keys: int) -> int:
    """Multiply-adds of one backbone pass of `queries` tokens attending to `keys` keys, at batch 1 (the layers'
    projections and feed-forward, and attention's two products), the model's pruned sizes included."""
    hidden = config.hidden_size
    macs = 0
    for heads, neurons in zip(config.layer_num_heads, config.layer_intermediate_sizes):
        inner = heads * config.head_dim
        macs += queries * (4 * hidden * inner + 2 * hidden * neurons) + 2 * queries * keys * inner
    return macs


def lm_head_macs(config, positions: int) -> int:
    return positions * (config.hidden_size**2 + config.hidden_size * config.embedding_rows)


def call_macs(call) -> float:
    """Multiply-adds of one run of `call`, as torch's FlopCounterMode counts them (matrix products and attention,
    forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops() / 2


def time_anatomy(shape: str, repeats: int, training_batch_size: int = 16) -> list[dict]:
    """Where the time goes. `generate` at batch 1 in its parts (the draft's joint pass and LM head, one realistic
    round's deletion, insertion and fill passes and LM head; "the rest" = the whole minus its timed parts), each
    with its multiply-adds; and a training step at `training_batch_size`: the whole step, the step with the edit
    losses on half the rows (`edit_rows_ratio` 0.5), the step of the CTC-only phase (no edit passes), the Viterbi
    alignment alone, and the AR model's step, each step with its multiply-adds (`call_macs`). The generate parts are
    medians of 3 x `repeats` rounds, the training parts of `repeats`. (The record's "before" rows, timed against
    earlier versions of the package, are kept in results/ as they were measured.)"""
    from modeling_deer import draft_deer, generation_deer
    from modeling_deer.edit_ops import apply_deletions, ctc_best_alignment, inner_mask, insert_placeholders

    model, autoregressive = build_model(shape), build_autoregressive(shape)
    config, pad, placeholder = model.config, model.config.pad_token_id, model.config.placeholder_token_id
    sources = sources_batch(32, vocabulary_size(shape))
    calibrate_output_length(model, sources, OUTPUT_LENGTH)
    rounds = realistic_rounds(model, sources)
    source, mask = sources[:1], torch.ones_like(sources[:1])
    with torch.no_grad():  # one round's inputs, made as generation_deer.edit_round makes them
        canvas = model.draft_canvas(source, mask)
        encoder_output, states = model.encode_and_target_pass(source, mask, canvas)
        frames = states[0, 1:-1]
        _, draft, _ = draft_deer.draft(model, source, mask, 0.0)
        deletion = model.deletion_logits(model.target_pass(draft, encoder_output))
        kept = apply_deletions(draft, inner_mask(draft, pad) & (deletion[..., 1] > deletion[..., 0]), pad)
        insertion = model.insertion_logits(model.target_pass(kept, encoder_output))
        filled = insert_placeholders(kept, insertion.argmax(-1), placeholder, pad, config.max_sequence_length)
        fill_states = model.target_pass(filled, encoder_output)[filled == placeholder]
    if kept.shape[1] == draft.shape[1] or int((filled == placeholder).sum()) == 0:
        raise RuntimeError("the calibrated round neither deletes nor inserts: not a realistic round")
    source_length = source.shape[1]
    parts = {  # name: (call, multiply-adds or None)
        "draft (0 rounds)": (lambda: draft_deer.draft(model, source, mask, 0.0), None),
        "draft: source + frames pass": (
            lambda: model.encode_and_target_pass(source, mask, canvas),
            pass_macs(config, source_length + canvas.shape[1], source_length + canvas.shape[1]),
        ),
        "draft: LM head over the frames": (lambda: model.draft_logits(frames), lm_head_macs(config, len(frames))),
        "round": (lambda: generation_deer.edit_round(model, draft, encoder_output, 0.0), None),
        "round: deletion pass": (
            lambda: model.target_pass(draft, encoder_output),
            pass_macs(config, draft.shape[1], source_length + draft.shape[1]),
        ),
        "round: insertion pass": (
            lambda: model.target_pass(kept, encoder_output),
            pass_macs(config, kept.shape[1], source_length + kept.shape[1]),
        ),
        "round: fill pass": (
            lambda: model.target_pass(filled, encoder_output),
            pass_macs(config, filled.shape[1], source_length + filled.shape[1]),
        ),
        "round: LM head over the placeholders": (
            lambda: model.word_logits(fill_states),
            lm_head_macs(config, len(fill_states)),
        ),
        "generate, 2 rounds": (forced(model, tokens(source), 2), None),
        f"AR: {OUTPUT_LENGTH} tokens": (
            lambda: autoregressive.generate(
                input_ids=source,
                attention_mask=mask,
                max_new_tokens=OUTPUT_LENGTH,
                min_new_tokens=OUTPUT_LENGTH,
                do_sample=False,
                num_beams=1,
            ),
            None,
        ),
    }
    with torch.no_grad():  # (cheap calls, and a 5 % change to see: three times the rounds)
        medians = interleaved_medians({name: call for name, (call, _) in parts.items()}, 3 * repeats)
    rows = [
        {
            "shape": shape,
            "table": "generate",
            "batch_size": 1,
            "part": name,
            "ms": medians[name],
            "macs": macs,
            "tokens": {
                "draft": draft.shape[1],
                "kept": kept.shape[1],
                "filled": filled.shape[1],
                "frames": len(frames),
                "placeholders": len(fill_states),
            },
            "rounds": rounds,
        }
        for name, (_, macs) in parts.items()
    ]
    for whole in ("draft", "round"):  # what the timed parts leave
        timed = sum(medians[name] for name in parts if name.startswith(f"{whole}:"))
        rows.append(
            {
                "shape": shape,
                "table": "generate",
                "batch_size": 1,
                "part": f"{whole}: the rest",
                "ms": medians[next(name for name in parts if name.startswith(whole))] - timed,
                "macs": None,
            }
        )

    inputs = training_inputs(shape, training_batch_size)
    ctc_only = copy.deepcopy(model)
    ctc_only.config.insertion_loss_weight = ctc_only.config.word_loss_weight = ctc_only.config.deletion_loss_weight = 0
    calls = {
        **_deer_steps(model, inputs["deer"]),
        "DEER step, CTC-only phase (no edit passes)": optimizer_step(ctc_only, inputs["deer"]),
        "AR step": optimizer_step(autoregressive, inputs["ar"]),
    }
    generator = torch.Generator().manual_seed(3)
    frames = int(model.draft_lengths(torch.tensor([SOURCE_LENGTH]))[0]) - 2
    log_probs = torch.randn(training_batch_size, frames, OUTPUT_LENGTH - 1, generator=generator).log_softmax(-1)
    columns = torch.arange(1, OUTPUT_LENGTH - 1).expand(training_batch_size, -1)
    calls["Viterbi alignment (in the DEER step)"] = lambda: ctc_best_alignment(
        log_probs,
        torch.full((training_batch_size,), frames),
        columns,
        torch.full((training_batch_size,), OUTPUT_LENGTH - 2),
        0,
    )
    macs = {name: call_macs(call) if "step" in name else None for name, call in calls.items()}
    rows += [
        {
            "shape": shape,
            "table": "training",
            "batch_size": training_batch_size,
            "part": name,
            "ms": ms,
            "macs": macs[name],
        }
        for name, ms in interleaved_medians(calls, repeats).items()
    ]
    return rows


HALF_EDIT_ROWS = "DEER step, edit losses on half the rows (edit_rows_ratio 0.5)"


def _deer_steps(model: DeerForConditionalGeneration, batch: dict) -> dict:
    """The DEER training steps both training tables time on `batch`: the step as it is, and with the edit losses on
    half the rows (a copy of `model` at `edit_rows_ratio` 0.5)."""
    half_rows = copy.deepcopy(model)
    half_rows.config.edit_rows_ratio = 0.5
    return {"DEER step": optimizer_step(model, batch), HALF_EDIT_ROWS: optimizer_step(half_rows, batch)}


def time_shipped_training(model_dir: str, ar_dir: str, repeats: int, batch_size: int = 16) -> list[dict]:
    """A training step (forward, backward, AdamW) of the shipped DEER checkpoint and of the shipped AR checkpoint
    (both trimmed to the training data's vocabulary), at `batch_size` on the same real training pairs (each model's
    own tokenizer, sources and targets truncated to 32 tokens as the quality runs train them); medians of 3 x
    `repeats` rounds."""
    from training.decoding import load_ar

    deer = DeerForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    autoregressive = load_ar(ar_dir).float()
    deer_batch = training_batch(AutoTokenizer.from_pretrained(model_dir), batch_size, 32)
    ar_batch = training_batch(AutoTokenizer.from_pretrained(ar_dir), batch_size, 32)
    ar_batch["labels"] = ar_batch["labels"][
        :, 1:
    ].contiguous()  # [w1 .. wn eos]: the model shifts them right behind bos
    calls = {**_deer_steps(deer, deer_batch), "AR step": optimizer_step(autoregressive, ar_batch)}
    macs = {name: call_macs(call) for name, call in calls.items()}
    return [
        {
            "shape": f"shipped de-en checkpoints ({deer.config.embedding_rows:,} and "
            f"{autoregressive.config.decoder.vocab_size:,} rows)",
            "table": "training",
            "batch_size": batch_size,
            "part": name,
            "ms": ms,
            "macs": macs[name],
        }
        for name, ms in interleaved_medians(calls, 3 * repeats).items()
    ]  # (cheap calls: more rounds)


def _with_threads(call, threads: int):
    """`call` run on `threads` threads (the setting restored afterwards)."""

    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return call()
        finally:
            torch.set_num_threads(before)

    return run


def _fewer_frames(model: DeerForConditionalGeneration, upsample_ratio: float) -> DeerForConditionalGeneration:
    """A copy of `model` that drafts `upsample_ratio` frames per source token instead of its own ratio."""
    copied = copy.deepcopy(model)
    copied.config.upsample_ratio = upsample_ratio
    return copied


def _settings(deer, autoregressive, fewer_frames, threads: int, upsample_ratio: float) -> dict:
    """The batch table's settings: name -> (DEER, AR model, threads)."""
    half = lambda model: copy.deepcopy(model).to(torch.bfloat16)
    return {
        f"float32, {threads} threads": (deer, autoregressive, threads),
        "float32, 1 thread": (deer, autoregressive, 1),
        f"bfloat16, {threads} threads": (half(deer), half(autoregressive), threads),
        f"float32, {threads} threads, draft of {upsample_ratio:g} x source frames": (
            fewer_frames,
            autoregressive,
            threads,
        ),
    }


def _time_settings(label: str, settings: dict, batch: BatchEncoding, ar_call, repeats: int) -> list[dict]:
    """DEER at exactly 0 and 2 rounds and `ar_call(AR model)` under each setting, all taking turns."""
    calls = {}
    for name, (deer, autoregressive, threads) in settings.items():
        calls |= {(name, f"deer-{k}"): _with_threads(forced(deer, batch, k), threads) for k in (0, 2)}
        calls[name, "ar"] = _with_threads(ar_call(autoregressive), threads)
    with torch.no_grad():
        medians = interleaved_medians(calls, repeats)
    return [
        {"models": label, "variant": name, "system": system, "batch_size": len(batch.input_ids), "latency_ms": ms}
        for (name, system), ms in medians.items()
    ]


def time_batch(
    shape: str,
    repeats: int,
    threads: int,
    model_dir: str,
    ar_dir: str,
    batch_size: int = 32,
    upsample_ratio: float = 1.5,
) -> list[dict]:
    """DEER (0 and 2 realistic rounds) against BERT2BERT at `batch_size` under what a CPU user can change without
    retraining: the thread count (`threads` and 1), bfloat16 weights, and drafting with fewer frames
    (`upsample_ratio` instead of 2). Random weights of `shape` (`batch_size` 48-token sources; the fewer-frames copy
    recalibrated to write as much), then the trained, trimmed `model_dir` and the AR checkpoint `ar_dir` on 32 real
    held-out verses (the fewer-frames copy as it is: it then writes shorter outputs)."""
    from training.decoding import ar_generate, load_ar

    deer, autoregressive = build_model(shape), build_autoregressive(shape)
    sources = sources_batch(batch_size, vocabulary_size(shape))
    fewer = _fewer_frames(deer, upsample_ratio)
    for model in (deer, fewer):
        calibrate_output_length(model, sources[:32], OUTPUT_LENGTH)
        realistic_rounds(model, sources[:32])
    batch = tokens(sources)
    rows = _time_settings(
        f"{shape} shape, random weights",
        _settings(deer, autoregressive, fewer, threads, upsample_ratio),
        batch,
        lambda model: (
            lambda: model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=OUTPUT_LENGTH,
                min_new_tokens=OUTPUT_LENGTH,
                do_sample=False,
                num_beams=1,
            )
        ),
        repeats,
    )

    deer = DeerForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    autoregressive = load_ar(ar_dir).float()
    ar_batch = verse_batches(AutoTokenizer.from_pretrained(ar_dir))[32]  # (the AR model's own trimmed vocabulary)
    return rows + _time_settings(
        f"trained: {model_dir}",
        _settings(deer, autoregressive, _fewer_frames(deer, upsample_ratio), threads, upsample_ratio),
        verse_batches(AutoTokenizer.from_pretrained(model_dir))[32],
        lambda model: lambda: ar_generate(model, ar_batch.input_ids, ar_batch.attention_mask),
        repeats,
    )


def time_threads(shape: str, repeats: int, batch_size: int = 8, level: float = 0.5) -> list[dict]:
    """Two `generate` calls on one model from two Python threads at once, against the same two calls one after the
    other, with one torch thread (a server's setting with a request per core): random weights of `shape`,
    `batch_size` 48-token sources, exactly 2 realistic rounds; the two calls at the same pruning level (the full
    size) and at two levels (the full size and `level`, `generate(sparsity=...)`). Each call carries its own level's
    gates, so nothing is shared between them: the ratio says how much of the decode runs in parallel."""
    model = build_model(shape)
    model.config.sparsity_levels = [0.0, level]  # (random scores: what a level costs, not what it writes)
    sources = sources_batch(32, vocabulary_size(shape))
    rounds = realistic_rounds(model, sources)
    batch = tokens(sources[:batch_size])

    def call(sparsity: float):
        return lambda: model.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_iterations=2,
            stop_when_unchanged=False,
            sparsity=sparsity,
        )

    def side_by_side(first, second):
        def run():
            workers = [threading.Thread(target=work) for work in (first, second)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        return run

    calls = {}
    for label, levels in (("same level", (0.0, 0.0)), (f"levels 0 and {level:g}", (0.0, level))):
        first, second = call(levels[0]), call(levels[1])
        calls[label, "serial"] = lambda first=first, second=second: (first(), second())
        calls[label, "two threads"] = side_by_side(first, second)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            medians = interleaved_medians(calls, repeats)
    finally:
        torch.set_num_threads(before)
    return [
        {
            "shape": shape,
            "batch_size": batch_size,
            "levels": label,
            "serial_ms": medians[label, "serial"],
            "two_threads_ms": medians[label, "two threads"],
            "ratio": medians[label, "two threads"] / medians[label, "serial"],
            "rounds": rounds,
        }
        for label in dict.fromkeys(label for label, _ in calls)
    ]
