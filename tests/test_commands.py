"""Every shell command a user reads is one that runs: the commands in README.md, RESULTS.md, the model cards, the
shipped checkpoints' cards and the `command` strings of results/*.json are parsed (none is run): each `python -m`
module exists and its parser accepts every flag given, each `deer-*` command's flags are its script's, each `make`
target exists."""

import contextlib
import glob
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache

import pytest


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ("README.md", "RESULTS.md", "model_cards/**/*.md", "checkpoints/*/*/README.md")
# The console commands (setup.cfg) and the scripts they run.
CONSOLE = {
    "deer-train": "training.train",
    "deer-train-ar": "training.train_ar",
    "deer-generate": "training.generate",
    "deer-evaluate": "training.evaluate",
}
LAUNCHERS = ("accelerate", "torchrun")  # their own flags are theirs; what follows `-m MODULE` is checked
CHECKED = ("python", "make", *CONSOLE, *LAUNCHERS)
OPERATORS = {"&&", "||", "|", ";", "&"}


def read(path: str) -> str:
    with open(os.path.join(REPOSITORY, path), encoding="utf-8") as handle:
        return handle.read()


def documents() -> list[str]:
    paths = []
    for pattern in DOCUMENTS:
        paths += sorted(glob.glob(os.path.join(REPOSITORY, pattern), recursive=True))
    return [os.path.relpath(path, REPOSITORY) for path in paths]


def document_commands(text: str) -> list[str]:
    """The command lines of a Markdown text: the lines of its shell code blocks that start with a checked command
    (continuations joined, comments dropped), and the inline code spans that are a whole command."""
    lines = []
    for language, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if language in ("", "bash", "sh", "shell", "console"):
            lines += re.sub(r"\\\n\s*", " ", body).splitlines()
    outside_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += re.findall(r"`([^`\n]+)`", outside_blocks)
    return [line for line in map(str.strip, lines) if is_command(line)]


def result_commands() -> list[tuple[str, str]]:
    """(file, command) for every "command" string in results/*.json."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "command" and isinstance(value, str):
                    found.append((path, value))
                walk(value, path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for path in sorted(glob.glob(os.path.join(REPOSITORY, "results", "**", "*.json"), recursive=True)):
        with open(path, encoding="utf-8") as handle:
            walk(json.load(handle), os.path.relpath(path, REPOSITORY))
    return found


def is_command(line: str) -> bool:
    words = line.lstrip("$ ").split()
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VARIABLE=value before the command
        words.pop(0)
    return bool(words) and words[0] in CHECKED


def simple_commands(line: str) -> list[list[str]]:
    """A command line as its simple commands (split at && || | ; &), each a list of words; comments, leading
    variable assignments, `...` and the brackets around optional flags dropped."""
    lexer = shlex.shlex(line.lstrip("$ ").replace("[", " ").replace("]", " "), posix=True, punctuation_chars="&|;")
    lexer.commenters = "#"
    lexer.whitespace_split = True
    commands, words = [], []
    for word in lexer:
        if word in OPERATORS:
            commands.append(words)
            words = []
        elif word != "...":
            words.append(word)
    commands.append(words)
    for words in commands:
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words.pop(0)
    return [words for words in commands if words and words[0] in CHECKED]


@cache
def make_targets() -> frozenset:
    text = read("Makefile") + "".join(read(os.path.relpath(p, REPOSITORY)) for p in glob.glob(f"{REPOSITORY}/*/*.mk"))
    targets = set()
    for match in re.finditer(r"^([\w.%/ -]+):(?!=)", text, re.M):
        targets.update(match.group(1).split())
    return frozenset(targets)


@cache
def module_help(module: str) -> str:
    """What `python -m MODULE --help` prints (the script's parser; for the training scripts, every flag)."""
    script = importlib.import_module(module)
    if not hasattr(script, "main"):
        run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPOSITORY)
        return run.stdout + run.stderr
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output), pytest.raises(SystemExit):
        script.main(["--help"])
    return output.getvalue()


def problems(words: list[str]) -> list[str]:
    """What is wrong with one simple command (empty when nothing is)."""
    program, arguments = words[0], words[1:]
    if program == "make":
        missing = [word for word in arguments if "=" not in word and not word.startswith("-")]
        return [f"no make target {word!r}" for word in missing if word not in make_targets()]
    if program in CONSOLE:
        module = CONSOLE[program]
    elif "-m" in arguments:
        module, arguments = arguments[arguments.index("-m") + 1], arguments[arguments.index("-m") + 2 :]
    else:
        return [] if program in LAUNCHERS else [f"{program} without -m MODULE"]
    if module in ("pytest", "pip") or "<" in module:
        return []
    if importlib.util.find_spec(module) is None:
        return [f"no module {module}"]
    flags = {word.split("=")[0] for word in arguments if word.startswith("--") and len(word) > 2}
    text = module_help(module) if flags else ""
    return [
        f"{module} has no flag {flag}" for flag in sorted(flags) if not re.search(rf"(?<![\w-]){flag}(?![\w-])", text)
    ]


def every_command() -> list[tuple[str, str]]:
    found = [(path, line) for path in documents() for line in document_commands(read(path))]
    return found + result_commands()


def test_the_command_parser_finds_what_a_reader_would_run():
    text = "Run\n```bash\nmake venv && HF_HUB_OFFLINE=1 deer-train --model_name_or_path M \\\n"
    text += "  --max_steps 3  # note\n```\n"
    text += "and `python -m experiments.report HEADLINE x.json` or `deer-evaluate --select bleu`; `not a command`."
    lines = document_commands(text)
    assert lines == [
        "make venv && HF_HUB_OFFLINE=1 deer-train --model_name_or_path M  --max_steps 3  # note",
        "python -m experiments.report HEADLINE x.json",
        "deer-evaluate --select bleu",
    ]
    assert simple_commands(lines[0]) == [
        ["make", "venv"],
        ["deer-train", "--model_name_or_path", "M", "--max_steps", "3"],
    ]
    assert problems(["make", "no-such-target"]) == ["no make target 'no-such-target'"]
    assert problems(["deer-train", "--model_name_or_path", "M", "--max_step", "3"]) == [
        "training.train has no flag --max_step"
    ]
    assert problems(["python", "-m", "training.prepare_data"]) == ["no module training.prepare_data"]
    assert problems(["accelerate", "launch", "--multi_gpu", "-m", "training.evaluate", "--select", "bleu"]) == []


def test_every_documented_command_parses():
    found = every_command()
    assert len(found) > 50  # the documents were read
    broken = []
    for path, line in found:
        try:
            commands = simple_commands(line)
        except ValueError as error:  # an unclosed quote
            broken.append(f"{path}: {line[:100]}: {error}")
            continue
        broken += [f"{path}: {line[:100]}: {problem}" for words in commands for problem in problems(words)]
    assert not broken, "\n".join(broken)
