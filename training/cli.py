"""The console commands that `pip install ".[train]"` puts on the PATH, each one a script of this package that then
works from any directory (`python -m training.<script>` from the repository root stays the same thing):

    deer-train          training.train              fine-tune DEER (every Seq2SeqTrainingArguments flag too)
    deer-train-ar       training.train_ar           the BERT2BERT reference
    deer-generate       training.generate           decode a file
    deer-evaluate       training.evaluate           score a checkpoint on split files; choose its knobs (--select)

The argument parsers of the scripts live here, with nothing but the standard library imported, so a command parses
its arguments, answers `--help` and rejects a bad flag before torch is loaded; only then does it import its script.
`deer-train --help` lists the script's own flags; `--help-all` adds transformers' (that loads transformers).
"""

import argparse
import ast
import csv
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import sys

from training.arguments import ARModelArguments, CardArguments, DataArguments, ModelArguments, StoppingArguments


METRICS = ("bleu", "chrf", "rougeL")  # the names training.metrics.score returns


def generation_class_attribute(name: str):
    """A literal class attribute of `DeerGenerationConfig` (the one definition of the decoding knobs), read from
    modeling_deer/generation_deer.py's source without importing the package (that would import torch, and the
    commands answer --help and refuse bad flags before torch loads)."""
    spec = importlib.util.find_spec("modeling_deer")  # (finds the package without running its __init__)
    with open(os.path.join(spec.submodule_search_locations[0], "generation_deer.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "DeerGenerationConfig")
    value = next(node.value for node in body.body if isinstance(node, ast.Assign) and node.targets[0].id == name)
    return ast.literal_eval(value)


# What a round does (DeerGenerationConfig.refinement), and the knobs each kind of round is tuned by, in the order
# `evaluate --select` chooses them; the knobs a command can override (the draft's, the edit rounds', the
# re-drafting rounds'), as DeerGenerationConfig.KNOBS derives them.
REFINEMENTS = generation_class_attribute("REFINEMENTS")
KNOBS = tuple(dict.fromkeys(knob for knobs in REFINEMENTS.values() for knob in knobs))
# The values `--select` (training.evaluate) and `--tune_decoding` (training.train) try for each knob.
CANDIDATES = {
    "blank_penalty": [0.0, 1.0, 2.0, 3.0, 4.0, 6.0],
    "deletion_penalty": [0.0, 1.0, 2.0, 4.0],
    "eos_penalty": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
    "reveal_threshold": [0.5, 0.7, 0.8, 0.9, 0.95],
}
# The round counts they then choose `max_iterations` among (the knobs fixed).
MAX_ITERATIONS_CANDIDATES = [0, 1, 2, 4]
# Every decoding setting a command passes on, all by one route: the model's generation config
# (training.decoding.set_decoding).
DECODING = ("max_iterations", "refinement", *KNOBS)


def script_doc(script: str) -> str:
    """A script's module docstring, read from its source without importing it (that would import torch)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{script}.py"), encoding="utf-8") as handle:
        return ast.get_docstring(ast.parse(handle.read())) or ""


def new_parser(description: str) -> argparse.ArgumentParser:
    """A parser whose help starts with `description` (a script's docstring)."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_knob_arguments(parser: argparse.ArgumentParser):
    """--refinement and the knobs (--blank_penalty, --deletion_penalty, --eos_penalty, --reveal_threshold): override
    the model's saved decoding choices."""
    parser.add_argument(
        "--refinement",
        choices=sorted(REFINEMENTS),
        default=None,
        help="what a round does: edits (delete / insert / fill) or redraft (the draft pass again with "
        "its confident words revealed); default: the model's generation config",
    )
    for name in KNOBS:
        parser.add_argument(f"--{name}", type=float, default=None, help="default: the model's generation config")


def add_data_arguments(parser, group=None):
    """Where a split's text is: flat columns (--source_column / --target_column), or the languages of a
    `translation` column of dicts (--source_lang / --target_lang)."""
    group = group or parser
    group.add_argument("--source_column", default="source", help="the sources' column (flat rows)")
    group.add_argument("--target_column", default="target", help="the targets' column (flat rows)")
    group.add_argument("--source_lang", default=None, help="the sources' language in a 'translation' column of dicts")
    group.add_argument("--target_lang", default=None, help="the targets' language in a 'translation' column of dicts")


# -- the parsers ------------------------------------------------------------------------------------------------------


def generate_parser() -> argparse.ArgumentParser:
    parser = new_parser(script_doc("generate"))
    parser.add_argument("--model", required=True, help="a DEER checkpoint directory (with its tokenizer)")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--max_iterations", type=int, default=None, help="default: the model's generation config")
    parser.add_argument(
        "--sparsity",
        type=float,
        default=None,
        help="mask the model to this pruning level (default: the model's own: 0, or the level a pruned checkpoint "
        "was cut to)",
    )
    add_knob_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=32)
    add_data_arguments(parser)
    parser.add_argument("--threads", type=int, default=None)
    return parser


def evaluate_parser() -> argparse.ArgumentParser:
    parser = new_parser(script_doc("evaluate"))
    parser.add_argument("--model", required=True, help="a DEER checkpoint directory (with its tokenizer)")
    parser.add_argument("--data_dir", default=None, help="a directory from experiments.prepare_data")
    parser.add_argument(
        "--splits",
        nargs="*",
        default=None,
        help="split names (DATA_DIR/NAME.jsonl) or paths of split files (JSON lines / CSV / TSV) "
        "(default: validation test, none with --select)",
    )
    parser.add_argument(
        "--max_iterations", nargs="+", type=int, default=[0, 1, 2, 4], help="the round counts to score"
    )
    parser.add_argument(
        "--sparsity",
        nargs="+",
        type=float,
        default=None,
        help="pruning levels (set_sparsity; default: the model's own: 0, or the level a pruned checkpoint was cut to)",
    )
    add_knob_arguments(parser)
    parser.add_argument("--batch_size", type=int, default=32)
    add_data_arguments(parser)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="where to decode: cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--upsample_ratio",
        type=float,
        default=None,
        help="draft this many frames per source token instead of the model's own ratio (fewer frames "
        "cost less; what it costs in quality is what this measures)",
    )
    parser.add_argument("--output", default=None)
    choice = parser.add_argument_group("choosing the knobs on validation (--select)")
    choice.add_argument(
        "--select",
        choices=METRICS,
        default=None,
        metavar="METRIC",
        help="choose the kind of round, its knobs and the round count by this metric: " + ", ".join(METRICS),
    )
    choice.add_argument("--save", action="store_true", help="write the choice to the model's generation_config.json")
    choice.add_argument("--validation_file", default=None, help="default: DATA_DIR/validation.jsonl")
    choice.add_argument(
        "--select_max_iterations", type=int, default=2, help="the rounds the knobs are chosen at (0 = the draft)"
    )
    choice.add_argument(
        "--max_iterations_candidates",
        type=int,
        nargs="+",
        default=MAX_ITERATIONS_CANDIDATES,
        help="then max_iterations: the best of these round counts with the knobs chosen",
    )
    choice.add_argument("--blank_penalties", type=float, nargs="+", default=CANDIDATES["blank_penalty"])
    choice.add_argument("--deletion_penalties", type=float, nargs="+", default=CANDIDATES["deletion_penalty"])
    choice.add_argument("--eos_penalties", type=float, nargs="+", default=CANDIDATES["eos_penalty"])
    choice.add_argument("--reveal_thresholds", type=float, nargs="+", default=CANDIDATES["reveal_threshold"])
    choice.add_argument(
        "--select_refinements",
        nargs="+",
        choices=sorted(REFINEMENTS),
        default=sorted(REFINEMENTS),
        help="the kinds of round to choose among (each with its own knobs)",
    )
    return parser


def dataclass_help_parser(script: str, classes: tuple) -> argparse.ArgumentParser:
    """A parser that only shows help: the flags of the script's own dataclasses (HfArgumentParser parses them for
    real, with transformers' `Seq2SeqTrainingArguments`)."""
    parser = new_parser(script_doc(script))
    for cls in classes:
        group = parser.add_argument_group(cls.__name__)
        for spec in dataclasses.fields(cls):
            if spec.default is not dataclasses.MISSING:
                default = f"default: {spec.default}"
            elif spec.default_factory is not dataclasses.MISSING:
                default = f"default: {spec.default_factory()}"
            else:
                default = "required"
            text = spec.metadata.get("help", "").replace("%", "%%")
            kind = spec.type.__name__ if isinstance(spec.type, type) else str(spec.type)
            group.add_argument(f"--{spec.name}", metavar=kind.upper(), help=f"{text} ({default})".strip())
    parser.epilog = (
        f"Every transformers Seq2SeqTrainingArguments flag works too (--output_dir, --max_steps, "
        f"--learning_rate, --per_device_train_batch_size, --eval_strategy, --save_steps, "
        f"--resume_from_checkpoint, --seed, --use_cpu, ...): `{parser.prog} --help-all` lists them."
    )
    return parser


PARSERS = {"generate": generate_parser, "evaluate": evaluate_parser}
TRAINING_FLAGS = {
    "train": (ModelArguments, DataArguments, StoppingArguments, CardArguments),
    "train_ar": (ARModelArguments, DataArguments, StoppingArguments),
}


# -- the commands -----------------------------------------------------------------------------------------------------


# A refusal of a command is one line; with --debug (or DEER_DEBUG=1) it is the whole traceback.
DEBUG_HELP = "run again with --debug for the traceback"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def refuse(message: str):
    """Exit with `error: message` as the command's only line on stderr."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def check_model_path(flag: str, path: str | None):
    """A model argument is a local folder or a Hub id (owner/name); anything else is refused before loading."""
    if path is None or os.path.isdir(path):
        return
    if os.path.exists(path):
        refuse(f"{flag} {path} is a file; give the model's folder (with config.json) or a Hub id")
    if path.startswith((".", "/", "~")) or path.endswith("/") or not HUB_ID.fullmatch(path):
        refuse(f"{flag} {path}: no such folder, and not a Hub id (owner/name)")


def check_arguments(script: str, args: argparse.Namespace):
    """What can be judged without torch: model paths, input files, counts and levels."""
    check_model_path("--model", args.model)
    rounds = getattr(args, "max_iterations", None)
    rounds = [] if rounds is None else rounds if isinstance(rounds, list) else [rounds]
    if any(count < 0 for count in rounds):
        refuse(f"iteration counts must be 0 or more (0 = the draft alone), got {min(rounds)}")
    levels = getattr(args, "sparsity", None)
    levels = [] if levels is None else levels if isinstance(levels, list) else [levels]
    if any(not 0 <= level < 1 for level in levels):
        refuse(
            f"pruning levels must be in [0, 1) (0 = the full model), got {next(l for l in levels if not 0 <= l < 1)}"
        )
    for name in ("batch_size", "threads"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            refuse(f"--{name} must be at least 1, got {getattr(args, name)}")
    if script == "generate" and args.input != "-" and not os.path.exists(args.input):
        refuse(f"--input {args.input}: no such file or folder")
    files = {
        "generate": [getattr(args, "input", None)],
        "evaluate": [getattr(args, "validation_file", None)]
        + [split for split in getattr(args, "splits", None) or [] if os.path.isfile(split)],
    }.get(script, [])
    for path in files:
        check_columns(path, args)


def check_columns(path: str | None, args: argparse.Namespace):
    """The columns a JSON lines / CSV / TSV file's first row names, judged before torch loads: the sources' column
    (or, with --source_lang, a `translation` column) must be there. Other forms are checked when they are read."""
    extension = path.rsplit(".", 1)[-1].lower() if path and "." in os.path.basename(path) else ""
    if not path or not os.path.isfile(path) or extension not in ("jsonl", "csv", "tsv"):
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    if extension == "jsonl":
        try:
            row = json.loads(first)
        except ValueError:
            return  # load_split names the bad line
        columns = list(row) if isinstance(row, dict) else []
    else:
        columns = next(csv.reader([first], delimiter="\t" if extension == "tsv" else ","), [])
    wanted = "translation" if getattr(args, "source_lang", None) else args.source_column
    if columns and wanted not in columns:
        hint = (
            "set --source_lang / --target_lang"
            if "translation" in columns and wanted != "translation"
            else "set --source_column / --target_column"
            if wanted != "translation"
            else "for flat columns use --source_column / --target_column"
        )
        refuse(f"{path} has columns {columns}, not '{wanted}'; {hint}")


def run(script: str, argv: list[str] | None = None):
    """Parse the arguments of `training.<script>` here (help and flag errors exit before torch loads), check what
    can be checked without torch, then import the script and run its `main`. Its refusals (a bad file, a model that
    cannot be loaded, an impossible setting) are one line; `--debug` (or DEER_DEBUG=1) shows the traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("DEER_DEBUG", "0") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    if script in TRAINING_FLAGS:
        if "-h" in argv or "--help" in argv:
            dataclass_help_parser(script, TRAINING_FLAGS[script]).print_help()
            raise SystemExit(0)
        argv = ["--help" if arg == "--help-all" else arg for arg in argv]
        if "--model_name_or_path" in argv[:-1]:
            check_model_path("--model_name_or_path", argv[argv.index("--model_name_or_path") + 1])
    else:
        check_arguments(script, PARSERS[script]().parse_args(argv))
    try:
        importlib.import_module(f"training.{script}").main(argv)
    except (OSError, ValueError, TypeError) as error:
        if debug:
            raise
        lines = str(error).strip().splitlines()
        refuse(f"{lines[0] if lines else type(error).__name__} ({DEBUG_HELP})")


def train():
    run("train")


def train_ar():
    run("train_ar")


def generate():
    run("generate")


def evaluate():
    run("evaluate")
