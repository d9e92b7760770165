"""The console commands of `pip install ".[train]"`: installed (not editable) into a folder of their own, run from
another directory, `--help` without loading torch, and one real job each for train and generate."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training import cli


REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["deer-train", "deer-train-ar", "deer-generate", "deer-evaluate"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed with pip into its own folder (no editable link to the repository), and an
    environment whose Python finds it there first."""
    target = tmp_path_factory.mktemp("install")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    environment = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    work = tmp_path_factory.mktemp("elsewhere")
    return target, environment, work


def run(installed, command: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    target, environment, work = installed
    return subprocess.run(
        [str(target / "bin" / command), *args],
        env=environment,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_the_installed_copy_is_the_one_that_runs(installed):
    target, environment, work = installed
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import training, modeling_deer; print(training.__file__); print(modeling_deer.__file__)",
        ],
        env=environment,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout
    assert sorted(path.name for path in (target / "bin").iterdir()) == sorted(COMMANDS)
    assert (target / "training" / "metrics" / "bleu_chrf" / "bleu_chrf.py").is_file()  # the metric scripts travel


@pytest.mark.parametrize("command", COMMANDS)
def test_help_answers_fast_from_anywhere(installed, command):
    started = time.perf_counter()
    result = run(installed, command, "--help")
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {command}") and "--" in result.stdout
    assert seconds < 2.0, f"{command} --help took {seconds:.1f} s"


def test_a_bad_flag_fails_before_anything_loads(installed):
    started = time.perf_counter()
    result = run(installed, "deer-generate", "--model", "m", "--input", "i", "--output", "o", "--beams", "4")
    assert result.returncode == 2 and "unrecognized arguments: --beams" in result.stderr
    assert time.perf_counter() - started < 2.0


def test_train_help_lists_its_own_flags_and_help_all_adds_transformers(installed):
    short = run(installed, "deer-train", "--help").stdout
    assert "--draft_input" in short and "--train_file" in short and "--card_language" in short
    assert "--help-all" in short and "--lr_scheduler_type" not in short
    full = run(installed, "deer-train", "--help-all")
    assert full.returncode == 0, full.stderr[-2000:]
    assert "--lr_scheduler_type" in full.stdout and "--draft_input" in full.stdout


def test_train_and_generate_from_another_directory(installed, tiny_bert_path):
    _, _, work = installed
    from transformers import AutoTokenizer

    from experiments.prepare_data import prepare

    prepare("bible-de-en", str(work / "data"), 16, AutoTokenizer.from_pretrained(tiny_bert_path))
    trained = run(
        installed,
        "deer-train",
        "--model_name_or_path",
        tiny_bert_path,
        "--output_dir",
        "run",
        "--train_file",
        "data/train.jsonl",
        "--max_source_length",
        "16",
        "--max_target_length",
        "16",
        "--do_train",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--use_cpu",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (work / "run" / "model.safetensors").is_file()
    sources = [json.loads(line)["source"] for line in (work / "data" / "test.jsonl").read_text().splitlines()[:3]]
    (work / "in.txt").write_text("\n".join(sources) + "\n")
    generated = run(
        installed,
        "deer-generate",
        "--model",
        "run",
        "--input",
        "in.txt",
        "--output",
        "out.txt",
        "--max_iterations",
        "1",
        "--batch_size",
        "2",
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert len((work / "out.txt").read_text().splitlines()) == 3


def test_every_script_parser_is_the_commands():
    """The scripts parse with the parsers here, so `python -m training.X` and `deer-X` take the same flags."""
    assert set(cli.PARSERS) | set(cli.TRAINING_FLAGS) == {"train", "train_ar", "generate", "evaluate"}
    from modeling_deer.model_card_deer import METRIC_NAMES

    assert set(cli.METRICS) == set(METRIC_NAMES)
    with pytest.raises(SystemExit):
        cli.run("generate", ["--model", "m"])  # --input and --output missing: argparse exits before any import


# -- refusals: one line, before anything loads where they can be judged without torch ---------------------------------


def refusal(capsys, script: str, *args: str) -> str:
    """The command's refusal: exit status 2 and a single line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(script, list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def test_refusals_are_one_line(capsys, tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("Ja.\n")
    not_a_model = tmp_path / "empty_folder"
    not_a_model.mkdir()
    flat, wmt = tmp_path / "pairs.csv", tmp_path / "wmt.jsonl"
    flat.write_text("de,en\nJa.,Yes.\n")
    wmt.write_text(json.dumps({"translation": {"de": "Ja.", "en": "Yes."}}) + "\n")
    cases = [
        (
            ("generate", "--model", "runs/nowhere/deer", "--input", str(data), "--output", "o"),
            "error: --model runs/nowhere/deer: no such folder, and not a Hub id (owner/name)",
        ),
        (
            ("generate", "--model", "./deer", "--input", str(data), "--output", "o"),
            "error: --model ./deer: no such folder, and not a Hub id (owner/name)",
        ),
        (
            ("evaluate", "--model", str(data), "--data_dir", str(tmp_path)),
            f"error: --model {data} is a file; give the model's folder (with config.json) or a Hub id",
        ),
        (
            ("generate", "--model", str(not_a_model), "--input", str(tmp_path / "missing.txt"), "--output", "o"),
            f"error: --input {tmp_path / 'missing.txt'}: no such file or folder",
        ),
        (
            ("generate", "--model", str(not_a_model), "--input", str(data), "--output", "o", "--max_iterations", "-1"),
            "error: iteration counts must be 0 or more (0 = the draft alone), got -1",
        ),
        (
            ("evaluate", "--model", str(not_a_model), "--max_iterations", "0", "-2"),
            "error: iteration counts must be 0 or more (0 = the draft alone), got -2",
        ),
        (
            ("generate", "--model", str(not_a_model), "--input", str(data), "--output", "o", "--sparsity", "1.5"),
            "error: pruning levels must be in [0, 1) (0 = the full model), got 1.5",
        ),
        (
            ("evaluate", "--model", str(not_a_model), "--sparsity", "0", "-0.5"),
            "error: pruning levels must be in [0, 1) (0 = the full model), got -0.5",
        ),
        (
            ("generate", "--model", str(not_a_model), "--input", str(data), "--output", "o", "--batch_size", "0"),
            "error: --batch_size must be at least 1, got 0",
        ),
        (
            ("train", "--model_name_or_path", "../missing", "--output_dir", str(tmp_path / "o")),
            "error: --model_name_or_path ../missing: no such folder, and not a Hub id (owner/name)",
        ),
        (
            ("generate", "--model", str(not_a_model), "--input", str(flat), "--output", "o"),
            f"error: {flat} has columns ['de', 'en'], not 'source'; set --source_column / --target_column",
        ),
        (
            ("evaluate", "--model", str(not_a_model), "--splits", str(wmt), "--source_column", "de"),
            f"error: {wmt} has columns ['translation'], not 'de'; set --source_lang / --target_lang",
        ),
        (
            (
                "evaluate",
                "--model",
                str(not_a_model),
                "--validation_file",
                str(flat),
                "--select",
                "bleu",
                "--source_lang",
                "de",
                "--target_lang",
                "en",
            ),
            f"error: {flat} has columns ['de', 'en'], not 'translation'; for flat columns use --source_column / "
            "--target_column",
        ),
    ]
    for args, message in cases:
        assert refusal(capsys, *args) == message
    # What only loading can tell (a folder without a model) is one line too, the traceback one flag away.
    message = refusal(capsys, "generate", "--model", str(not_a_model), "--input", str(data), "--output", "o")
    assert str(not_a_model) in message and message.endswith("(run again with --debug for the traceback)")
    with pytest.raises(OSError):
        cli.run("generate", ["--model", str(not_a_model), "--input", str(data), "--output", "o", "--debug"])


def test_train_without_data_refuses_in_one_line(capsys, tmp_path, tiny_bert_path):
    with pytest.raises(SystemExit, match="^error: nothing to do: give --train_file"):
        cli.run(
            "train",
            [
                "--model_name_or_path",
                tiny_bert_path,
                "--output_dir",
                str(tmp_path / "o"),
                "--report_to",
                "none",
                "--use_cpu",
            ],
        )
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing left behind


def test_generation_across_two_processes_writes_the_one_process_file(tmp_path, tiny_bert_path):
    """torchrun with two processes (gloo, CPU): each generates its share of the lines, logged, and the first writes
    the file in input order, the same as one process writes."""
    from transformers import AutoTokenizer

    from modeling_deer import DeerForConditionalGeneration

    model_dir = tmp_path / "model"
    DeerForConditionalGeneration.from_mlm(tiny_bert_path).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_bert_path).save_pretrained(model_dir)
    lines = [
        "Im Anfang war das Wort.",
        "",
        "Und das Wort war bei Gott.",
        "Ja.",
        "Und Gott war das Wort.",
        "Dieses war im Anfang bei Gott.",
    ]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    environment = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)
    )
    common = [
        "-m",
        "training.generate",
        "--model",
        str(model_dir),
        "--input",
        str(tmp_path / "in.txt"),
        "--max_iterations",
        "1",
        "--batch_size",
        "2",
    ]
    one = subprocess.run(
        [sys.executable, *common, "--output", str(tmp_path / "one.txt")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    two = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "--module",
            *common[1:],
            "--output",
            str(tmp_path / "two.txt"),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    logged = two.stdout + two.stderr
    assert "process 1 of 2: lines 1-3" in logged and "process 2 of 2: lines 4-6" in logged
    assert (tmp_path / "two.txt").read_text() == (tmp_path / "one.txt").read_text()
    assert len((tmp_path / "one.txt").read_text().splitlines()) == 6
    # Standard input to standard output: the same texts, and nothing else on standard output.
    piped = subprocess.run(
        [sys.executable, *common[:4], "--input", "-", *common[6:], "--output", "-"],
        input="\n".join(lines) + "\n",
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert piped.stdout == (tmp_path / "one.txt").read_text() and "6 outputs written" in piped.stderr
