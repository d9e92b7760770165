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
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.run, "config.json")):
        parser.error(f"{args.run} is not a checkpoint directory (no config.json)")
    model_type = AutoConfig.from_pretrained(args.run).model_type
    if model_type == "encoder-decoder" and not args.train_file:
        parser.error("an AR run needs --train_file: its vocabulary is trimmed to that file's tokens")
    if model_type not in ("deer", "encoder-decoder"):
        parser.error(f"{args.run} is a {model_type!r} model; this ships DEER and BERT2BERT runs")

    os.makedirs(args.output_dir, exist_ok=True)
    with torch.no_grad():
        if model_type == "deer":
            ship_deer(args.run, args.output_dir)
        else:
            ship_ar(args.run, args.output_dir, args.train_file)
    for name in RECORDS:
        if os.path.exists(os.path.join(args.run, name)):
            shutil.copy2(os.path.join(args.run, name), args.output_dir)

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
