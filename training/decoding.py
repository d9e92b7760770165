"""Decoding many texts with a trained model: DEER (`generate_texts`, the knobs from a command line, and
`select_knobs`, which chooses them on validation data) and the AR reference (`load_ar`, `ar_generate`,
`ar_generate_texts`, and `trim_ar_vocabulary` for shipping it small).
"""

import copy
import json
import logging
import os

import tokenizers
import torch
from tqdm.auto import tqdm
from transformers import EncoderDecoderModel

from modeling_deer import DeerForConditionalGeneration
from training.cli import KNOBS, REFINEMENTS
from training.metrics import normalize, score

logger = logging.getLogger(__name__)


def apply_knob_arguments(model, args):
    """Set the knobs given on the command line; a bad value fails here, before any decoding."""
    for name in ("refinement", *KNOBS):
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
    lengths = [len(ids) for ids in tokenizer([sources[i] for i in order], split_special_tokens=True)["input_ids"]]
    too_long = sum(length > limit for length in lengths)
    if too_long:
        logger.warning(f"{too_long} of {len(sources)} sources are longer than the model's position table ({limit} "
                       "tokens): they are truncated to it.")
    for start in tqdm(range(0, len(order), batch_size), desc="generating", disable=not progress):
        indices = order[start : start + batch_size]
        batch = tokenizer([sources[i] for i in indices], return_tensors="pt", padding=True, truncation=True,
                          max_length=limit, split_special_tokens=True).to(model.device)
        ids = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             max_iterations=max_iterations)
        for i, text in zip(indices, tokenizer.batch_decode(ids, skip_special_tokens=True)):
            outputs[i] = text
    return outputs


def generate_across_processes(generate_share, sources: list[str]) -> list[str] | None:
    """Generation over a corpus on every process that `torchrun` or `accelerate launch` started (one process: all of
    it): process r of n takes the r-th contiguous share of `sources`, logs it as `process R of N: lines A-B`, runs
    `generate_share(share) -> outputs` on it, and the first process gathers the outputs in input order and returns
    them (the others return None). Processes talk over gloo on the CPU, over NCCL with one GPU each."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return generate_share(sources)
    import torch.distributed as distributed

    started_here = not distributed.is_initialized()
    if started_here:
        distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = distributed.get_rank()
    start, end = rank * len(sources) // world, (rank + 1) * len(sources) // world
    print(f"process {rank + 1} of {world}: lines {start + 1}-{end}", flush=True)
    shares = [None] * world if rank == 0 else None
    distributed.gather_object(generate_share(sources[start:end]), shares, dst=0)
    if started_here:
        distributed.destroy_process_group()
    return [text for share in shares for text in share] if rank == 0 else None


def select_knobs(model, tokenizer, sources: list[str], references: list[str], candidates: dict[str, list[float]],
                 iterations: int, metric: str, refinement: str = "edits", progress: bool = True) -> list[dict]:
    """Choose the knobs of one kind of round (`refinement`) on validation pairs, one after the other, and set them
    in the model's generation config (ties go to the smaller value):

    * `blank_penalty` is subtracted from the CTC blank's score at every draft frame: larger values, longer drafts;
    * edits: `deletion_penalty` is subtracted from the deletion head's "delete" score in every round (larger values
      delete less), then `eos_penalty` from the insertion head's "insert nothing" score (larger values, longer
      outputs);
    * redraft: `reveal_threshold`, the confidence above which a frame's word is revealed to the next pass.

    Each is chosen at the values chosen before it, the others neutral (penalties 0, threshold 0.9), all at
    `iterations` rounds; at 0 rounds only `blank_penalty` matters and only it is chosen. `references` are normalised
    (training.metrics). Returns every candidate's scores."""
    config = model.generation_config
    config.refinement = refinement
    config.eos_penalty = config.deletion_penalty = 0.0
    config.reveal_threshold = 0.9
    rows = []
    for name in REFINEMENTS[refinement][: 1 if iterations == 0 else None]:
        tried = []
        for value in tqdm(candidates[name], desc=f"{refinement}: {name} candidates", disable=not progress):
            setattr(config, name, value)
            outputs = generate_texts(model, tokenizer, sources, iterations, batch_size=32, progress=False)
            words = sum(len(text.split()) for text in outputs) / len(outputs)
            tried.append({"refinement": refinement, "tuned": name, **{knob: getattr(config, knob) for knob in KNOBS},
                          **score(outputs, references), "words_per_output": words})
        setattr(config, name, max(tried, key=lambda row: (row[metric], -row[name]))[name])
        rows += tried
    return rows


# A round count is kept as the default only if it scores at least this share of the best score above fewer rounds
# (0.1 BLEU at 20): more rounds cost time, and smaller differences are noise. Relative, so that a model scoring near
# 0 (early in training) is not held at the draft by a margin larger than its scores.
ROUND_TOLERANCE = 0.005


def kept_round_count(count_rows: list[dict], metric: str) -> dict:
    """Of the scored (kind of round, round count) rows, the one to keep: the fewest rounds scoring within
    `ROUND_TOLERANCE` of the best (the better score among equal counts)."""
    best = max(row[metric] for row in count_rows)
    return min((row for row in count_rows if row[metric] >= best - ROUND_TOLERANCE * abs(best)),
               key=lambda row: (row["iterations"], -row[metric]))


def tune_knobs(model, tokenizer, sources: list[str], targets: list[str], metric: str, iterations: int,
               candidates: dict[str, list[float]], counts: list[int] | None = None,
               refinements: tuple[str, ...] = tuple(REFINEMENTS), save_dir: str | None = None,
               validation_file: str | None = None, progress: bool = True) -> str:
    """For each kind of round in `refinements`, `select_knobs` on validation pairs (`targets` as written: they are
    normalised here) at `iterations` rounds, then scores every round count in `counts` with those knobs (without
    `counts`, `iterations` only). The kind, its knobs and `max_iterations` kept are those of the fewest rounds that
    score within `ROUND_TOLERANCE` of the best score of any kind and count (the better score among equal counts); the
    other kinds' own knobs are kept as chosen for them too, so that `refinement=` switches to a tuned round. With
    `save_dir`, the generation config is saved there and every candidate's scores go to tune_generation.json
    beside it. Prints each candidate; returns a one-line summary."""
    references = normalize(tokenizer, targets)
    config = model.generation_config
    rows, count_rows, chosen = [], [], {}
    for refinement in refinements:
        tried = select_knobs(model, tokenizer, sources, references, candidates, iterations, metric, refinement,
                             progress=progress)
        for row in tried:
            print(f"{refinement:>7} | " + " | ".join(f"{name} {row[name]:4g}" for name in REFINEMENTS[refinement])
                  + f" | BLEU {row['bleu']:6.2f} | chrF {row['chrf']:6.2f} | ROUGE-L {row['rougeL']:6.2f} | "
                  f"{row['words_per_output']:.1f} words per output")
        chosen[refinement] = {name: getattr(config, name) for name in KNOBS}
        tuned_row = next(row for row in reversed(tried) if all(row[name] == value
                                                               for name, value in chosen[refinement].items()))
        for count in sorted(set(counts or [iterations])):
            scores = tuned_row if count == iterations else score(
                generate_texts(model, tokenizer, sources, count, batch_size=32, progress=False), references)
            count_rows.append({"refinement": refinement, "iterations": count,
                               **{name: scores[name] for name in ("bleu", "chrf", "rougeL")}})
            print(f"{refinement:>7} | max_iterations {count} | BLEU {scores['bleu']:6.2f} | chrF {scores['chrf']:6.2f}"
                  f" | ROUGE-L {scores['rougeL']:6.2f}")
        rows += tried
    kept = kept_round_count(count_rows, metric)
    config.refinement, config.max_iterations = kept["refinement"], kept["iterations"]
    for refinement in chosen:  # each kind's own knobs as chosen for it (a user may switch kinds), then the kept
        for name in REFINEMENTS[refinement]:  # kind's (the draft's blank_penalty is shared)
            setattr(config, name, chosen[refinement][name])
    for name in REFINEMENTS[kept["refinement"]]:
        setattr(config, name, chosen[kept["refinement"]][name])
    knobs = {name: getattr(config, name) for name in REFINEMENTS[config.refinement]}
    summary = (f"refinement {config.refinement}, " + ", ".join(f"{name} {value:g}" for name, value in knobs.items())
               + f" (best {metric} on {len(sources)} validation pairs at {iterations} iterations), max_iterations "
               f"{config.max_iterations}")
    if save_dir is not None:
        config.save_pretrained(save_dir)
        with open(os.path.join(save_dir, "tune_generation.json"), "w") as handle:
            json.dump({"validation_file": validation_file, "iterations": iterations, "metric": metric,
                       "refinement": config.refinement, **{name: getattr(config, name) for name in KNOBS},
                       "max_iterations": config.max_iterations, "candidates": rows, "counts": count_rows},
                      handle, indent=2)
        summary += " saved to " + os.path.join(save_dir, "generation_config.json")
    return summary


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(bos, eos, pad) of a BERT-family tokenizer: [CLS]/[SEP]/[PAD] or <s>/</s>/<pad>."""
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if bos is None or eos is None or tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path} needs cls/bos, sep/eos and pad tokens.")
    return bos, eos, tokenizer.pad_token_id


def load_deer(path: str, sparsity: float = 0.0) -> DeerForConditionalGeneration:
    """A DEER checkpoint for decoding, physically pruned to `sparsity` (0: as saved)."""
    model = DeerForConditionalGeneration.from_pretrained(path).eval()
    if sparsity > 0:
        model.prune_to(sparsity)
    return model


def load_ar(path: str) -> EncoderDecoderModel:
    return EncoderDecoderModel.from_pretrained(path).eval()


def ar_generate(model: EncoderDecoderModel, input_ids, attention_mask):
    """Greedy decoding with the KV cache, at most the length the model was trained to write."""
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False, num_beams=1,
                          max_length=model.generation_config.max_length)


def ar_generate_texts(model, tokenizer, sources: list[str], batch_size: int) -> list[str]:
    outputs = []
    limit = model.config.encoder.max_position_embeddings
    for start in range(0, len(sources), batch_size):
        batch = tokenizer(sources[start : start + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=limit).to(model.device)
        with torch.no_grad():
            ids = ar_generate(model, batch.input_ids, batch.attention_mask)
        outputs += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return outputs


def trim_ar_vocabulary(model: EncoderDecoderModel, tokenizer, token_ids) -> tuple[EncoderDecoderModel, object]:
    """A copy of a BERT2BERT model and its WordPiece tokenizer with only `token_ids` (plus the special tokens) left,
    renumbered in their old order: the embedding tables and the LM head shrink to those rows. Words the kept pieces
    spell are tokenised exactly as before (WordPiece matches the longest piece, and every piece the full vocabulary
    chose for them is kept); other words read as unk. The AR model's counterpart of DEER's `trim_vocabulary`, which
    keeps the tokenizer and maps ids to rows instead: `EncoderDecoderModel` has no such map, so the ids change."""
    keep = sorted(set(int(i) for i in token_ids) | set(tokenizer.all_special_ids))
    new_id = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece" or spec["post_processor"]["type"] != "TemplateProcessing":
        raise ValueError("trim_ar_vocabulary handles BERT-style WordPiece tokenizers; this one is "
                         f"{spec['model']['type']} with {spec['post_processor']['type']}.")
    token_of = {index: token for token, index in spec["model"]["vocab"].items()}
    spec["model"]["vocab"] = {token_of[old]: new for new, old in enumerate(keep)}
    for added in spec["added_tokens"]:
        added["id"] = new_id[added["id"]]
    for special in spec["post_processor"]["special_tokens"].values():
        special["ids"] = [new_id[index] for index in special["ids"]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    trimmed_tokenizer = copy.deepcopy(tokenizer)
    trimmed_tokenizer._tokenizer = tokenizers.Tokenizer.from_str(json.dumps(spec))

    old_size = model.config.decoder.vocab_size
    rows = torch.tensor(keep)
    state = {key: tensor[rows] if tensor.dim() and tensor.shape[0] == old_size and ("word_embeddings" in key or
                                                                              ".predictions." in key) else tensor
             for key, tensor in model.state_dict().items()}
    config = copy.deepcopy(model.config)
    config.vocab_size = config.encoder.vocab_size = config.decoder.vocab_size = len(keep)
    generation_config = copy.deepcopy(model.generation_config)
    for holder in (config, generation_config):
        for name in ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(holder, name, None) is not None:
                setattr(holder, name, new_id[getattr(holder, name)])
    for sub in (config.encoder, config.decoder):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(sub, name, None) is not None and getattr(sub, name) in new_id:
                setattr(sub, name, new_id[getattr(sub, name)])
    trimmed = EncoderDecoderModel(config=config)
    trimmed.load_state_dict(state)
    trimmed.generation_config = generation_config
    return trimmed.eval(), trimmed_tokenizer
