"""Decoding many texts with a trained model: DEER (`generate_texts`; `set_decoding`, the one route by which every
decoding setting (`max_iterations`, `refinement`, the knobs) reaches the model, its generation config; and
`tune_knobs`, which chooses them on validation data) and the AR reference (`load_ar`, `ar_generate`,
`ar_generate_texts`).
"""

import json
import logging
import os

import torch
from tqdm.auto import tqdm
from transformers import EncoderDecoderModel

from training.cli import DECODING, KNOBS, REFINEMENTS
from training.metrics import normalize, score


logger = logging.getLogger(__name__)


def set_decoding(model, **settings):
    """Write the decoding settings given (`DECODING`: max_iterations, refinement, the knobs; None = keep the model's)
    into `model.generation_config`, which every `generate` call then reads; a bad value fails here, before any
    decoding."""
    unknown = sorted(set(settings) - set(DECODING))
    if unknown:
        raise TypeError(f"unknown decoding settings {unknown}; the settings are {', '.join(DECODING)}")
    for name, value in settings.items():
        if value is not None:
            setattr(model.generation_config, name, value)
    model.generation_config.validate()


def decoding_arguments(args) -> dict:
    """The decoding settings a command line gives (`set_decoding`'s keywords)."""
    return {name: getattr(args, name, None) for name in DECODING}


def generate_texts(model, tokenizer, sources: list[str], batch_size: int = 32, progress: bool = True, **settings):
    """Decode `sources` in batches of similar length (less padding), returned in the input order, with the model's
    generation config after `set_decoding(model, **settings)` (`max_iterations=2`, ...: they stay set). A blank source
    gives an empty output (it is not decoded)."""
    set_decoding(model, **settings)
    outputs = ["" if not text.strip() else None for text in sources]
    order = sorted((i for i, text in enumerate(sources) if text.strip()), key=lambda i: len(sources[i]))
    limit = model.config.max_sequence_length
    lengths = [len(ids) for ids in tokenizer([sources[i] for i in order], split_special_tokens=True)["input_ids"]]
    too_long = sum(length > limit for length in lengths)
    if too_long:
        logger.warning(
            f"{too_long} of {len(sources)} sources are longer than the model's position table ({limit} "
            "tokens): they are truncated to it."
        )
    for start in tqdm(range(0, len(order), batch_size), desc="generating", disable=not progress):
        indices = order[start : start + batch_size]
        batch = tokenizer(
            [sources[i] for i in indices],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=limit,
            split_special_tokens=True,
        ).to(model.device)
        ids = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        for i, text in zip(indices, tokenizer.batch_decode(ids, skip_special_tokens=True)):
            outputs[i] = text
    return outputs


def process_device() -> str:
    """This process's device: with CUDA, the GPU of its local rank (`torchrun` / `accelerate launch` set LOCAL_RANK),
    made the current one so that collectives and new tensors find it; else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def generate_across_processes(generate_share, sources: list[str]) -> list[str] | None:
    """Generation over a corpus on every process that `torchrun` or `accelerate launch` started (one process: all of
    it): process r of n takes the r-th contiguous share of `sources`, logs it as `process R of N: lines A-B`, runs
    `generate_share(share) -> outputs` on it, and the first process gathers the outputs in input order and returns
    them (the others return None). The texts are gathered over gloo (CPU), whatever devices the processes decode on:
    strings need no GPU, and a GPU-only NCCL group would need every process on its own current device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return generate_share(sources)
    import torch.distributed as distributed

    started_here = not distributed.is_initialized()
    if started_here:
        distributed.init_process_group("gloo")
    group = None if distributed.get_backend() == "gloo" else distributed.new_group(backend="gloo")
    rank = distributed.get_rank()
    start, end = rank * len(sources) // world, (rank + 1) * len(sources) // world
    print(f"process {rank + 1} of {world}: lines {start + 1}-{end}", flush=True)
    shares = [None] * world if rank == 0 else None
    distributed.gather_object(generate_share(sources[start:end]), shares, dst=0, group=group)
    if started_here:
        distributed.destroy_process_group()
    return [text for share in shares for text in share] if rank == 0 else None


def select_knobs(
    model,
    tokenizer,
    sources: list[str],
    references: list[str],
    candidates: dict[str, list[float]],
    max_iterations: int,
    metric: str,
    refinement: str = "edits",
    progress: bool = True,
) -> list[dict]:
    """Choose the knobs of one kind of round (`refinement`) on validation pairs, one after the other, and set them
    in the model's generation config (ties go to the smaller value):

    * `blank_penalty` is subtracted from the CTC blank's score at every draft frame: larger values, longer drafts;
    * edits: `deletion_penalty` is subtracted from the deletion head's "delete" score in every round (larger values
      delete less), then `eos_penalty` from the insertion head's "insert nothing" score (larger values, longer
      outputs);
    * redraft: `reveal_threshold`, the confidence above which a frame's word is revealed to the next pass.

    Each is chosen at the values chosen before it, the others neutral (penalties 0, threshold 0.9), all at
    `max_iterations` rounds; at 0 rounds only `blank_penalty` matters and only it is chosen. `references` are
    normalised (training.metrics). Returns every candidate's scores."""
    config = model.generation_config
    set_decoding(
        model,
        max_iterations=max_iterations,
        refinement=refinement,
        eos_penalty=0.0,
        deletion_penalty=0.0,
        reveal_threshold=0.9,
    )
    rows = []
    for name in REFINEMENTS[refinement][: 1 if max_iterations == 0 else None]:
        tried = []
        for value in tqdm(candidates[name], desc=f"{refinement}: {name} candidates", disable=not progress):
            setattr(config, name, value)
            outputs = generate_texts(model, tokenizer, sources, progress=False)
            words = sum(len(text.split()) for text in outputs) / len(outputs)
            tried.append(
                {
                    "refinement": refinement,
                    "tuned": name,
                    **{knob: getattr(config, knob) for knob in KNOBS},
                    **score(outputs, references),
                    "words_per_output": words,
                }
            )
        setattr(config, name, max(tried, key=lambda row: (row[metric], -row[name]))[name])
        rows += tried
    return rows


# A round count is kept as the default only if it scores at least this share of the best score above fewer rounds
# (0.1 BLEU at 20): more rounds cost time, and smaller differences are noise. Relative, so that a model scoring near
# 0 (early in training) is not held at the draft by a margin larger than its scores.
ROUND_TOLERANCE = 0.005


def kept_max_iterations(round_rows: list[dict], metric: str) -> dict:
    """Of the scored (kind of round, round count) rows, the one to keep: the fewest rounds scoring within
    `ROUND_TOLERANCE` of the best (the better score among equal counts)."""
    best = max(row[metric] for row in round_rows)
    return min(
        (row for row in round_rows if row[metric] >= best - ROUND_TOLERANCE * abs(best)),
        key=lambda row: (row["max_iterations"], -row[metric]),
    )


def tune_knobs(
    model,
    tokenizer,
    sources: list[str],
    targets: list[str],
    metric: str,
    max_iterations: int,
    candidates: dict[str, list[float]],
    max_iterations_candidates: list[int] | None = None,
    refinements: tuple[str, ...] = tuple(REFINEMENTS),
    save_dir: str | None = None,
    validation_file: str | None = None,
    progress: bool = True,
) -> str:
    """For each kind of round in `refinements`, `select_knobs` on validation pairs (`targets` as written: they are
    normalised here) at `max_iterations` rounds, then scores every round count in `max_iterations_candidates` with
    those knobs (without them, `max_iterations` only). The kind, its knobs and `max_iterations` kept are those of the
    fewest rounds that score within `ROUND_TOLERANCE` of the best score of any kind and count (the better score among
    equal counts); the other kinds' own knobs are kept as chosen for them too, so that `refinement=` switches to a
    tuned round. With `save_dir`, the generation config is saved there and every candidate's scores go to
    tune_generation.json beside it. Prints each candidate; returns a one-line summary."""
    references = normalize(tokenizer, targets)
    config = model.generation_config
    rows, round_rows, chosen = [], [], {}
    for refinement in refinements:
        tried = select_knobs(
            model, tokenizer, sources, references, candidates, max_iterations, metric, refinement, progress=progress
        )
        for row in tried:
            print(
                f"{refinement:>7} | "
                + " | ".join(f"{name} {row[name]:4g}" for name in REFINEMENTS[refinement])
                + f" | BLEU {row['bleu']:6.2f} | chrF {row['chrf']:6.2f} | ROUGE-L {row['rougeL']:6.2f} | "
                f"{row['words_per_output']:.1f} words per output"
            )
        chosen[refinement] = {name: getattr(config, name) for name in KNOBS}
        tuned_row = next(
            row for row in reversed(tried) if all(row[name] == value for name, value in chosen[refinement].items())
        )
        for rounds in sorted(set(max_iterations_candidates or [max_iterations])):
            scores = (
                tuned_row
                if rounds == max_iterations
                else score(
                    generate_texts(model, tokenizer, sources, progress=False, max_iterations=rounds), references
                )
            )
            round_rows.append(
                {
                    "refinement": refinement,
                    "max_iterations": rounds,
                    **{name: scores[name] for name in ("bleu", "chrf", "rougeL")},
                }
            )
            print(
                f"{refinement:>7} | max_iterations {rounds} | BLEU {scores['bleu']:6.2f} | chrF {scores['chrf']:6.2f}"
                f" | ROUGE-L {scores['rougeL']:6.2f}"
            )
        rows += tried
    kept = kept_max_iterations(round_rows, metric)
    config.refinement, config.max_iterations = kept["refinement"], kept["max_iterations"]
    for refinement in chosen:  # each kind's own knobs as chosen for it (a user may switch kinds), then the kept
        for name in REFINEMENTS[refinement]:  # kind's (the draft's blank_penalty is shared)
            setattr(config, name, chosen[refinement][name])
    for name in REFINEMENTS[kept["refinement"]]:
        setattr(config, name, chosen[kept["refinement"]][name])
    knobs = {name: getattr(config, name) for name in REFINEMENTS[config.refinement]}
    summary = (
        f"refinement {config.refinement}, "
        + ", ".join(f"{name} {value:g}" for name, value in knobs.items())
        + f" (best {metric} on {len(sources)} validation pairs at {max_iterations} rounds), max_iterations "
        f"{config.max_iterations}"
    )
    if save_dir is not None:
        config.save_pretrained(save_dir)
        with open(os.path.join(save_dir, "tune_generation.json"), "w") as handle:
            json.dump(
                {
                    "validation_file": validation_file,
                    "select_max_iterations": max_iterations,
                    "metric": metric,
                    "refinement": config.refinement,
                    **{name: getattr(config, name) for name in KNOBS},
                    "max_iterations": config.max_iterations,
                    "candidates": rows,
                    "rounds": round_rows,
                },
                handle,
                indent=2,
            )
        summary += " saved to " + os.path.join(save_dir, "generation_config.json")
    return summary


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(bos, eos, pad) of a BERT-family tokenizer: [CLS]/[SEP]/[PAD] or <s>/</s>/<pad>."""
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if bos is None or eos is None or tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path} needs cls/bos, sep/eos and pad tokens.")
    return bos, eos, tokenizer.pad_token_id


def load_ar(path: str) -> EncoderDecoderModel:
    return EncoderDecoderModel.from_pretrained(path).eval()


def ar_generate(model: EncoderDecoderModel, input_ids, attention_mask):
    """Greedy decoding with the KV cache, at most the length the model was trained to write."""
    return model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=False,
        num_beams=1,
        max_length=model.generation_config.max_length,
    )


def ar_generate_texts(model, tokenizer, sources: list[str], batch_size: int) -> list[str]:
    outputs = []
    limit = model.config.encoder.max_position_embeddings
    for start in range(0, len(sources), batch_size):
        batch = tokenizer(
            sources[start : start + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=limit
        ).to(model.device)
        with torch.no_grad():
            ids = ar_generate(model, batch.input_ids, batch.attention_mask)
        outputs += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return outputs
