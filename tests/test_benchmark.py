"""The trade-off pieces: the autoregressive reference (training.train_ar), the random-init ablation, the short-pair
data filter and the benchmark grid (JSON rows, markdown, plot)."""

import json
import os
import shutil

import pytest
import torch
from conftest import FIXTURES, load_pairs
from test_training_scripts import TRAIN_FILE, VALIDATION_FILE, run_args
from transformers import AutoTokenizer, EncoderDecoderModel

import modeling_deer
from experiments.benchmark import main as benchmark_main
from experiments.measure import non_embedding_parameters
from experiments.prepare_data import prepare
from modeling_deer import DeerForConditionalGeneration
from training.data import fitting_pairs
from training.decoding import ar_generate_texts, load_ar
from training.distill import main as distill_main
from training.evaluate import main as evaluate_main
from training.train import main as train_main
from training.train_ar import main as train_ar_main


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory, tiny_bert_path):
    """A DEER run (with pruning levels) and a BERT2BERT run of the same steps on the same data: 3 steps each."""
    root = tmp_path_factory.mktemp("runs")
    common = ("--do_train", "--max_steps", "3", "--save_strategy", "no")
    train_main(run_args(root / "deer", tiny_bert_path, *common, "--sparsity_levels", "0", "0.5"))
    train_ar_main(run_args(root / "ar", tiny_bert_path, *common))
    # Three steps leave the insertion head untrained: make it insert at most two per slot, so decoding stays quick.
    deer = DeerForConditionalGeneration.from_pretrained(root / "deer")
    with torch.no_grad():
        deer.insertion_head.bias[3:] = -1e4
    deer.save_pretrained(root / "deer")
    return root


def test_ar_reference_is_warm_started_from_the_mlm_and_writes_its_command(trained_pair, tiny_bert_path):
    model = EncoderDecoderModel.from_pretrained(trained_pair / "ar")
    tokenizer = AutoTokenizer.from_pretrained(trained_pair / "ar")
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id
    assert model.generation_config.eos_token_id == tokenizer.sep_token_id
    assert model.config.decoder.add_cross_attention and model.config.decoder.is_decoder
    assert json.loads((trained_pair / "ar" / "trainer_state.json").read_text())["global_step"] == 3
    command = (trained_pair / "ar" / "run_command.txt").read_text()
    assert command.startswith("python -m training.train_ar ") and "--max_steps 3" in command
    # Greedy decoding starts from [CLS] and stops at [SEP] or the trained length.
    batch = tokenizer(["Im Anfang war das Wort."], return_tensors="pt")
    ids = model.generate(**batch, do_sample=False, num_beams=1)
    assert ids[0, 0] == tokenizer.cls_token_id and ids.shape[1] <= model.generation_config.max_length


def test_ar_reference_trims_its_vocabulary_as_deer_does(tmp_path, tiny_bert_path):
    """deer-train-ar --trim_vocabulary: both embedding tables and the LM head keep the training data's tokens (the
    same rows rule as DEER's --trim_vocabulary), the tokenizer is saved trimmed to match, and the training rows in
    the new ids are what the trimmed tokenizer gives for their texts."""
    trainer = train_ar_main(
        run_args(tmp_path / "ar", tiny_bert_path, "--max_steps", "2", "--save_strategy", "no", "--trim_vocabulary")
    )
    deer = train_main(
        run_args(tmp_path / "deer", tiny_bert_path, "--max_steps", "1", "--save_strategy", "no", "--trim_vocabulary")
    )
    model = EncoderDecoderModel.from_pretrained(tmp_path / "ar")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ar")
    rows = len(tokenizer)
    assert rows == len(deer.model.config.vocabulary_ids) < 30522  # the same tokens as DEER keeps
    assert model.config.decoder.vocab_size == model.config.encoder.vocab_size == rows
    assert model.get_output_embeddings().weight.shape[0] == model.get_input_embeddings().weight.shape[0] == rows
    with open(TRAIN_FILE, encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    assert (
        trainer.train_dataset[0]["input_ids"]
        == tokenizer(first["source"], truncation=True, max_length=48)["input_ids"]
    )
    assert (
        trainer.train_dataset[0]["labels"]
        == tokenizer(first["target"], truncation=True, max_length=48)["input_ids"][1:]
    )
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id
    assert model.generation_config.eos_token_id == model.config.eos_token_id == tokenizer.sep_token_id
    ids = model.generate(**tokenizer(["Im Anfang war das Wort."], return_tensors="pt"), max_new_tokens=5)
    assert ids[0, 0] == tokenizer.cls_token_id and int(ids.max()) < rows
    with pytest.raises(SystemExit, match="--trim_vocabulary reads every training token"):
        train_ar_main(
            run_args(tmp_path / "s", tiny_bert_path, "--max_steps", "1", "--trim_vocabulary", "--streaming", "true")
        )


def test_ar_labels_drop_the_leading_bos(tmp_path, tiny_bert_path):
    trainer = train_ar_main(
        run_args(tmp_path, tiny_bert_path, "--do_train", "--max_steps", "1", "--save_strategy", "no")
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    first = trainer.train_dataset[0]["labels"]
    assert first[0] != tokenizer.cls_token_id and first[-1] == tokenizer.sep_token_id


def test_random_init_ablation_keeps_the_shape_but_not_the_weights(tmp_path, tiny_bert_path):
    train_main(
        run_args(
            tmp_path,
            tiny_bert_path,
            "--do_train",
            "--max_steps",
            "1",
            "--save_strategy",
            "no",
            "--random_init",
            "--learning_rate",
            "1e-9",
        )
    )
    ablated = DeerForConditionalGeneration.from_pretrained(tmp_path)
    converted = DeerForConditionalGeneration.from_mlm(tiny_bert_path)
    assert non_embedding_parameters(ablated) == non_embedding_parameters(converted)
    assert ablated.config.bos_token_id == converted.config.bos_token_id
    for (name, mine), (_, theirs) in zip(ablated.named_parameters(), converted.named_parameters()):
        if mine.numel() > 1000:  # every real weight matrix differs (tiny biases may both be zero)
            assert not torch.allclose(mine, theirs), name


def test_short_pair_filter_counts_tokens_with_specials(tmp_path, tiny_bert_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    pairs = [{"source": "a b c", "target": "d e"}, {"source": "a " * 40, "target": "d"}]
    assert fitting_pairs(tokenizer, pairs, 5) == pairs[:1]  # [CLS] a b c [SEP]
    assert fitting_pairs(tokenizer, pairs, 4) == []
    sizes = prepare("bible-de-en", str(tmp_path), max_length=16, tokenizer=tokenizer)
    assert 0 < sizes["test"] < 879
    with open(tmp_path / "test.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert all(len(tokenizer(row["source"]).input_ids) <= 16 for row in rows)


def test_benchmark_writes_the_grid_table_and_plot(trained_pair, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open(os.path.join(FIXTURES, "bible-de-en.test.jsonl"), encoding="utf-8") as handle:
        (data_dir / "test.jsonl").write_text(handle.read(), encoding="utf-8")
    output = tmp_path / "results" / "bible-de-en-tiny.json"
    benchmark_main(
        [
            "--task",
            "bible-de-en",
            "--data_dir",
            str(data_dir),
            "--deer",
            str(trained_pair / "deer"),
            "--ar",
            str(trained_pair / "ar"),
            "--deer_random",
            str(trained_pair / "deer"),
            "--deer_distilled",
            str(trained_pair / "deer"),
            "--iterations",
            "0",
            "2",
            "--sparsities",
            "0",
            "0.5",
            "--repeats",
            "1",
            "--b1_sentences",
            "2",
            "--threads",
            "1",
            "--max_eval_samples",
            "32",
            "--output",
            str(output),
        ]
    )
    report = json.loads(output.read_text())
    rows = report["rows"]
    assert len(rows) == 3 * 2 * 2 + 1
    assert [row["system"] for row in rows].count("ar") == 1
    for row in rows:
        for key in (
            "system",
            "iterations",
            "sparsity",
            "bleu",
            "chrf",
            "latency_ms_b1",
            "latency_ms_b32",
            "peak_rss_mb",
            "params_nonembedding",
        ):
            assert key in row, key
        assert row["latency_ms_b1"] > 0 and row["latency_ms_b32"] > 0 and row["peak_rss_mb"] > 50
    deer = {(row["run"], row["sparsity"], row["iterations"]): row for row in rows if row["system"] == "deer"}
    assert {run for run, _, _ in deer} == {"deer", "deer_random", "deer_distilled"}
    assert deer[("deer", 0.5, 0)]["params_nonembedding"] < deer[("deer", 0.0, 0)]["params_nonembedding"]
    ar = next(row for row in rows if row["system"] == "ar")
    assert ar["params_nonembedding"] > deer[("deer", 0.0, 0)]["params_nonembedding"]  # encoder + decoder
    assert report["training_steps"] == {"deer": 3, "deer_random": 3, "deer_distilled": 3, "ar": 3}
    assert report["runs"]["ar"]["command"].startswith("python -m training.train_ar")
    assert report["hardware"]["threads"] == 1 and report["test_pairs"] == 32
    table = (tmp_path / "results" / "bible-de-en-tiny.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "AR (BERT2BERT, greedy)" in table
    assert "| DEER (distilled data) |" in table and "| DEER (random init) |" in table
    assert (tmp_path / "results" / "bible-de-en-tiny.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_on_your_own_task_split_file_and_metrics(trained_pair, tmp_path):
    own = tmp_path / "my_split.jsonl"
    with open(os.path.join(FIXTURES, "bible-de-en.test.jsonl"), encoding="utf-8") as handle:
        own.write_text("".join(handle.readlines()[:32]), encoding="utf-8")
    output = tmp_path / "mine.json"
    benchmark_main(
        [
            "--task",
            "my-task",
            "--test_file",
            str(own),
            "--metrics",
            "rougeL",
            "bleu",
            "--deer",
            str(trained_pair / "deer"),
            "--ar",
            str(trained_pair / "ar"),
            "--iterations",
            "0",
            "--sparsities",
            "0",
            "--repeats",
            "1",
            "--b1_sentences",
            "1",
            "--threads",
            "1",
            "--output",
            str(output),
        ]
    )
    report = json.loads(output.read_text())
    assert report["task"] == "my-task" and report["metrics"] == ["rougeL", "bleu"] and report["test_pairs"] == 32
    assert report["test_file"] == str(own)
    assert "| ROUGE-L | BLEU |" in (tmp_path / "mine.md").read_text()


def test_benchmark_refuses_bad_settings(trained_pair, tmp_path, capsys):
    base = [
        "--task",
        "bible-de-en",
        "--data_dir",
        str(tmp_path),
        "--deer",
        str(trained_pair / "deer"),
        "--ar",
        str(trained_pair / "ar"),
        "--output",
        str(tmp_path / "x.json"),
    ]
    for extra, message in (
        (["--sparsities", "1.0"], "sparsities"),
        (["--iterations", "-1"], "iterations"),
        (["--repeats", "0"], "at least 1"),
    ):
        with pytest.raises(SystemExit):
            benchmark_main(base + extra)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark_main(base[:2])
    assert "required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark_main(
            [
                "--task",
                "bible-de-en",
                "--data_dir",
                str(tmp_path),
                "--deer",
                str(tmp_path / "missing"),
                "--ar",
                str(trained_pair / "ar"),
                "--output",
                str(tmp_path / "x.json"),
            ]
        )
    assert "not a checkpoint directory" in capsys.readouterr().err
    (tmp_path / "test.jsonl").write_text('{"source": "a", "target": "b"}\n')
    with pytest.raises(SystemExit, match="needs 32"):
        benchmark_main(base)


def test_evaluate_select_saves_the_knobs_chosen_on_validation(trained_pair, tmp_path, capsys):
    model_dir = tmp_path / "deer"
    shutil.copytree(trained_pair / "deer", model_dir)
    evaluate_main(
        [
            "--model",
            str(model_dir),
            "--validation_file",
            VALIDATION_FILE,
            "--select",
            "bleu",
            "--save",
            "--eos_penalties",
            "0",
            "5",
            "--blank_penalties",
            "0",
            "8",
            "--deletion_penalties",
            "0",
            "1e4",
            "--select_refinements",
            "edits",
            "--threads",
            "1",
        ]
    )
    report = json.loads((model_dir / "tune_generation.json").read_text())
    stage = lambda name: {row[name]: row for row in report["candidates"] if row["tuned"] == name}
    blank_rows, deletion_rows, eos_rows = stage("blank_penalty"), stage("deletion_penalty"), stage("eos_penalty")
    assert set(blank_rows) == {0.0, 8.0} and set(deletion_rows) == {0.0, 1e4} and set(eos_rows) == {0.0, 5.0}
    # Larger penalties on the blank and on "insert nothing" write longer outputs; on "delete", no shorter ones.
    assert blank_rows[8.0]["words_per_output"] > blank_rows[0.0]["words_per_output"]
    assert eos_rows[5.0]["words_per_output"] > eos_rows[0.0]["words_per_output"]
    assert deletion_rows[1e4]["words_per_output"] >= deletion_rows[0.0]["words_per_output"]
    # Each knob is chosen at the values chosen before it: blank, then deletion, then eos.
    best = lambda rows, name: max(rows.values(), key=lambda row: (row["bleu"], -row[name]))[name]
    best_blank, best_deletion = best(blank_rows, "blank_penalty"), best(deletion_rows, "deletion_penalty")
    assert all(row["blank_penalty"] == best_blank for row in [*deletion_rows.values(), *eos_rows.values()])
    assert all(row["deletion_penalty"] == best_deletion for row in eos_rows.values())
    chosen = (best_blank, best_deletion, best(eos_rows, "eos_penalty"))
    assert (report["blank_penalty"], report["deletion_penalty"], report["eos_penalty"]) == chosen
    saved = DeerForConditionalGeneration.from_pretrained(model_dir).generation_config
    assert (saved.blank_penalty, saved.deletion_penalty, saved.eos_penalty) == chosen
    # Then the round count: of 0 / 1 / 2 / 4 with those knobs, the fewest within 0.5 % of the best; 2 reuses the
    # scores of the last candidate.
    assert report["select_max_iterations"] == 2
    assert [row["max_iterations"] for row in report["rounds"]] == [0, 1, 2, 4]
    assert report["rounds"][2]["bleu"] == eos_rows[chosen[2]]["bleu"]
    best = max(row["bleu"] for row in report["rounds"])  # the fewest rounds within 0.5 % of the best
    best_count = min(row["max_iterations"] for row in report["rounds"] if row["bleu"] >= best * 0.995)
    assert saved.max_iterations == report["max_iterations"] == best_count
    out = capsys.readouterr().out
    assert "saved to" in out and " | sparsity " not in out  # with --select, no split is scored unless named

    # Without --save the choice is used for the splits named, and the checkpoint is left as it was.
    before = (model_dir / "generation_config.json").read_text()
    evaluate_main(
        [
            "--model",
            str(model_dir),
            "--validation_file",
            VALIDATION_FILE,
            "--select",
            "chrf",
            "--select_max_iterations",
            "0",
            "--max_iterations_candidates",
            "0",
            "--blank_penalties",
            "0",
            "8",
            "--splits",
            VALIDATION_FILE,
            "--max_iterations",
            "0",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "best chrf" in out and "saved to" not in out and " | max_iterations 0 | " in out
    assert (model_dir / "generation_config.json").read_text() == before
    for extra, message in (
        (["--select", "bleu", "--select_max_iterations", "-1"], "at least 0"),
        (["--select", "bleu", "--max_iterations_candidates", "0", "-2"], "at least 0"),
        (["--select", "bleu", "--eos_penalties", "-1"], ">= 0"),
        (["--select", "bleu", "--eos_penalty", "1"], "give none of them"),
        (["--save"], "give --select METRIC too"),
    ):
        with pytest.raises(SystemExit):
            evaluate_main(["--model", str(model_dir), "--validation_file", VALIDATION_FILE, *extra])
        assert message in capsys.readouterr().err


def test_distill_replaces_targets_with_the_teachers_outputs(trained_pair, tmp_path, capsys):
    source_file, output = tmp_path / "train.jsonl", tmp_path / "distilled" / "train.jsonl"
    with open(TRAIN_FILE, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:10]
    source_file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    distill_main(
        [
            "--teacher",
            str(trained_pair / "ar"),
            "--input",
            str(source_file),
            "--output",
            str(output),
            "--batch_size",
            "4",
            "--threads",
            "1",
        ]
    )
    distilled = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["source"] for row in distilled] == [row["source"] for row in rows]
    assert [row["reference"] for row in distilled] == [row["target"] for row in rows]
    assert all(row["target"].strip() and row["book"] == original["book"] for row, original in zip(distilled, rows))
    # The targets are the teacher's greedy outputs, in the input order.
    teacher, tokenizer = load_ar(str(trained_pair / "ar")), AutoTokenizer.from_pretrained(trained_pair / "ar")
    expected = ar_generate_texts(teacher, tokenizer, [rows[3]["source"]], batch_size=1)[0]
    assert distilled[3]["target"] in (expected, rows[3]["target"])  # an empty output keeps its reference
    assert "10 targets distilled" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        distill_main(
            ["--teacher", str(trained_pair / "ar"), "--input", str(source_file), "--output", str(source_file)]
        )
    assert "must differ" in capsys.readouterr().err


def test_quality_report_table_and_curves(trained_pair, tmp_path):
    from experiments.quality_report import main as quality_main

    data = tmp_path / "data"
    data.mkdir()
    with open(VALIDATION_FILE, encoding="utf-8") as handle:
        lines = handle.read().splitlines()[:6]
    for split in ("validation", "test"):
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    deer = trained_pair / "deer"
    (deer / "learning_curve.jsonl").write_text(
        '{"step": 2, "train_seconds": 1.0, "eval_bleu": 0.5}\n{"step": 3, "train_seconds": 1.5, "eval_bleu": 0.7}\n'
        '{"step": 3, "train_seconds": 1.5, "eval_bleu": 0.7}\n'
    )
    output = tmp_path / "report"
    quality_main(
        [
            "--task",
            "bible-de-en",
            "--data_dir",
            str(data),
            "--runs",
            f"deer={deer}",
            "--ar",
            str(trained_pair / "ar"),
            "--iterations",
            "0",
            "1",
            "--threads",
            "1",
            "--output",
            str(output),
        ]
    )
    report = json.loads(output.with_suffix(".json").read_text())
    deer_rows = [row for row in report["rows"] if row["run"] == "deer"]
    # tuned and untuned knobs x two splits x two iteration counts, and the AR model once per split.
    assert len(deer_rows) == 8 and len(report["rows"]) == 10
    assert {row["knobs"] for row in deer_rows} == {"tuned", "untuned"}
    assert all(0 <= row["bleu"] <= 100 and row["length_ratio"] >= 0 for row in report["rows"])
    assert [row["step"] for row in report["learning_curves"]["deer"]] == [2, 3]  # a repeated step counts once
    table = output.with_suffix(".md").read_text()
    assert table.count("\n| deer |") == 2 and "AR (BERT2BERT, greedy)" in table
    assert (tmp_path / "report-curves.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        quality_main(
            ["--task", "bible-de-en", "--data_dir", str(data), "--runs", "no-equals-sign", "--output", str(output)]
        )


def test_shipped_ar_checkpoint_has_a_trimmed_vocabulary_and_the_same_scores(trained_pair, tmp_path):
    from experiments.ship_checkpoint import main as ship_main

    ship_main(["--run", str(trained_pair / "ar"), "--output_dir", str(tmp_path / "ar"), "--train_file", TRAIN_FILE])
    full, full_tokenizer = load_ar(trained_pair / "ar"), AutoTokenizer.from_pretrained(trained_pair / "ar")
    small, small_tokenizer = load_ar(tmp_path / "ar"), AutoTokenizer.from_pretrained(tmp_path / "ar")
    assert small.dtype == torch.float32  # stored in float16, loaded as trained
    assert small.config.decoder.vocab_size == small.config.encoder.vocab_size == len(small_tokenizer) < 3000
    assert (tmp_path / "ar" / "model.safetensors").stat().st_size < 0.2 * (
        trained_pair / "ar" / "model.safetensors"
    ).stat().st_size
    assert (tmp_path / "ar" / "run_command.txt").read_text() == (trained_pair / "ar" / "run_command.txt").read_text()
    assert not (tmp_path / "ar" / "training_args.bin").exists()
    # Training text reads as the same pieces; the special tokens keep their roles under their new ids.
    with open(TRAIN_FILE, encoding="utf-8") as handle:
        pairs = [json.loads(line) for line in handle][:4]
    sources = [pair["source"] for pair in pairs]
    targets = [pair["target"] for pair in pairs]
    assert small.config.decoder_start_token_id == small_tokenizer.cls_token_id
    pieces = [full_tokenizer.convert_ids_to_tokens(ids) for ids in full_tokenizer(sources + targets).input_ids]
    assert pieces == [
        small_tokenizer.convert_ids_to_tokens(ids) for ids in small_tokenizer(sources + targets).input_ids
    ]
    assert small.generation_config.eos_token_id == small_tokenizer.sep_token_id
    # Teacher-forced scores of the kept tokens are the full model's, up to the float16 storage.
    kept = torch.tensor(
        full_tokenizer.convert_tokens_to_ids(small_tokenizer.convert_ids_to_tokens(list(range(len(small_tokenizer)))))
    )
    with torch.no_grad():
        logits = {}
        for name, model, tokenizer in (("full", full, full_tokenizer), ("small", small, small_tokenizer)):
            source = tokenizer(sources, return_tensors="pt", padding=True)
            target = tokenizer(targets, return_tensors="pt", padding=True)
            logits[name] = model(
                **source, decoder_input_ids=target.input_ids, decoder_attention_mask=target.attention_mask
            ).logits
    assert torch.allclose(logits["full"][..., kept], logits["small"], atol=0.05)
    # The unknown is still unknown.
    assert small_tokenizer("zzqxj").input_ids[1] == small_tokenizer.unk_token_id


def test_ship_checkpoint_refuses_what_it_cannot_ship(trained_pair, tmp_path, capsys):
    from experiments.ship_checkpoint import main as ship_main

    with pytest.raises(SystemExit):  # an AR run needs the training data to know its vocabulary
        ship_main(["--run", str(trained_pair / "ar"), "--output_dir", str(tmp_path / "a")])
    assert "--train_file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="full vocabulary"):  # DEER is shipped only trimmed
        ship_main(["--run", str(trained_pair / "deer"), "--output_dir", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="over 0.001 MB"):
        ship_main(
            [
                "--run",
                str(trained_pair / "ar"),
                "--output_dir",
                str(tmp_path / "c"),
                "--train_file",
                TRAIN_FILE,
                "--max_file_mb",
                "0.001",
            ]
        )
    with pytest.raises(SystemExit):
        ship_main(["--run", str(tmp_path), "--output_dir", str(tmp_path / "d")])
    assert "not a checkpoint directory" in capsys.readouterr().err
    for output_dir in (trained_pair / "ar", trained_pair):  # the run itself, or a folder holding it: refused, kept
        with pytest.raises(SystemExit):
            ship_main(["--run", str(trained_pair / "ar"), "--output_dir", str(output_dir), "--train_file", TRAIN_FILE])
        assert "emptied before the copy" in capsys.readouterr().err
        assert (trained_pair / "ar" / "config.json").exists()


def test_shipped_deer_checkpoint_generates_as_the_run(trained_pair, tmp_path):
    from experiments.ship_checkpoint import main as ship_main

    run = DeerForConditionalGeneration.from_pretrained(trained_pair / "deer")
    tokenizer = AutoTokenizer.from_pretrained(trained_pair / "deer")
    run.config.unk_token_id = tokenizer.unk_token_id
    run.trim_vocabulary(range(1000, 3000))
    run.save_pretrained(tmp_path / "run")
    tokenizer.save_pretrained(tmp_path / "run")
    (tmp_path / "run" / "run_command.txt").write_text("python -m training.train ...")
    ship_main(["--run", str(tmp_path / "run"), "--output_dir", str(tmp_path / "shipped")])
    shipped = DeerForConditionalGeneration.from_pretrained(tmp_path / "shipped")
    batch = tokenizer(["Im Anfang war das Wort.", "Und das Wort war bei Gott."], return_tensors="pt", padding=True)
    assert torch.equal(shipped.generate(**batch, max_iterations=1), run.eval().generate(**batch, max_iterations=1))
    assert (tmp_path / "shipped" / "modeling_deer.py").is_symlink() and (
        tmp_path / "shipped" / "run_command.txt"
    ).exists()
    assert (tmp_path / "shipped" / "modeling_deer.py").samefile(
        os.path.join(os.path.dirname(modeling_deer.__file__), "modeling_deer.py")
    )


def test_edit_analysis_swaps_in_the_oracle_one_decision_at_a_time(trained_pair, tmp_path, capsys):
    from experiments.edit_analysis import main as analysis_main
    from training.decoding import generate_texts

    output = tmp_path / "analysis.json"
    analysis_main(
        [
            "--model",
            str(trained_pair / "deer"),
            "--data_file",
            VALIDATION_FILE,
            "--threads",
            "1",
            "--output",
            str(output),
        ]
    )
    report = json.loads(output.read_text())
    assert list(report["settings"]) == ["draft", "model round", "oracle deletions", "oracle deletions + counts"]
    # The first two settings are exactly what decoding writes at 0 and 1 iterations.
    model = DeerForConditionalGeneration.from_pretrained(trained_pair / "deer").eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_pair / "deer")
    with open(VALIDATION_FILE, encoding="utf-8") as handle:
        sources = [json.loads(line)["source"] for line in handle]
    assert report["outputs"]["draft"] == generate_texts(model, tokenizer, sources, progress=False, max_iterations=0)
    assert report["outputs"]["model round"] == generate_texts(
        model, tokenizer, sources, progress=False, max_iterations=1
    )
    # The oracle's deletions leave a common subsequence of the reference that its counts complete: every output
    # then has the reference's length in tokens (the words are the model's).
    with open(VALIDATION_FILE, encoding="utf-8") as handle:
        targets = [json.loads(line)["target"] for line in handle]
    completed = report["outputs"]["oracle deletions + counts"]
    assert [len(tokenizer(text).input_ids) for text in completed] == [len(tokenizer(t).input_ids) for t in targets]
    detector = report["deletion_head"]
    assert 0 <= detector["precision"] <= 1 and 0 < detector["oracle_delete_share"] <= 1
    # The insertion head against the oracle's counts on the oracle-kept draft: the oracle inserts what the kept
    # words lack of the references, so its words per output are the references' (the counts + kept words).
    insertion = report["insertion_head"]
    assert insertion["oracle_per_gap"] > 0 and insertion["model_per_gap"] >= 0
    assert 0 <= insertion["gaps_counted_right"] <= 1
    out = capsys.readouterr().out
    assert "deletion head at its own threshold" in out and "insertions per gap" in out


SHIPPED_DEER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints", "bible-de-en", "deer"
)
SHIPPED_AR = os.path.join(os.path.dirname(SHIPPED_DEER), "ar")


def test_bench_untrimmed_copy_decodes_exactly_as_the_trimmed_model():
    """The trimming rows time the same model with and without its full vocabulary: both must write the same."""
    from experiments.measure import untrimmed_copy

    trimmed = DeerForConditionalGeneration.from_pretrained(SHIPPED_DEER).eval()
    full = untrimmed_copy(trimmed)
    assert full.config.vocabulary_ids is None and full.lm_head.decoder.out_features == trimmed.config.vocab_size
    assert trimmed.lm_head.decoder.out_features < trimmed.config.vocab_size / 3
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_DEER)
    batch = tokenizer(
        [
            "Im Anfang war das Wort.",
            "Und das Licht scheint in der Finsternis, und die Finsternis hat es nicht begriffen.",
        ],
        return_tensors="pt",
        padding=True,
    )
    for iterations in (0, 2):
        assert torch.equal(
            full.generate(**batch, max_iterations=iterations), trimmed.generate(**batch, max_iterations=iterations)
        )


@pytest.mark.slow
def test_bench_basic_times_a_training_step_and_every_round_count(tmp_path, capsys):
    from experiments.bench import main as bench_main

    output = tmp_path / "bench.json"
    bench_main(
        ["--tables", "basic", "--repeats", "1", "--threads", "1", "--model", SHIPPED_DEER, "--output", str(output)]
    )
    basic = json.loads(output.read_text())["basic"]
    assert basic["train_step_ms_batch16"] > 0 and basic["source_shape"][0] == 16
    assert [(row["iterations"], row["batch_size"]) for row in basic["generate"]] == [
        (k, size) for k in (0, 1, 2) for size in (1, 32)
    ]
    assert all(
        row["ms_per_sentence"] * row["batch_size"] == pytest.approx(row["ms_per_call"]) for row in basic["generate"]
    )
    assert "| 2 | 32 |" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_every_table_on_the_tiny_shape(tmp_path, capsys):
    from experiments.bench import main as bench_main

    output = tmp_path / "bench.json"
    bench_main(
        ["--shapes", "tiny", "--repeats", "1", "--threads", "1", "--model", SHIPPED_DEER, "--output", str(output)]
    )
    results = json.loads(output.read_text())
    assert {row["system"] for row in results["speed"]} == {"floor", "deer-0", "deer-1", "deer-2", "deer-4", "ar"}
    assert {row["system"] for row in results["trimming"]} == {"untrimmed-0", "untrimmed-2", "trimmed-0", "trimmed-2"}
    levels = [row["level"] for row in results["pruning"]]
    assert levels == [0.0, 0.25, 0.5, 0.75] and all(row["peak_rss_mb"] > 0 for row in results["pruning"])
    params = [row["params_nonembedding"] for row in results["pruning"]]
    assert params == sorted(params, reverse=True)
    out = capsys.readouterr().out
    assert "deer-0 / floor" in out and "vocabulary trimming" in out and "x = ratio to level 0" in out


def test_memory_table_measures_a_call_beyond_the_model():
    from experiments.measure import scale_memory
    from experiments.report import bench_tables

    rows = []
    for call in ("generation", "training"):
        spec = {"shape": "tiny", "vocabulary": 2000, "batch": 2, "call": call}
        result = scale_memory(spec)
        assert result["peak_mb"] >= result["model_mb"] > 0 and result["extra_mb"] >= 0
        rows.append({**spec, **result})
    table = bench_tables({"threads": 1, "source_length": 48, "output_length": 32, "memory": rows}, ["tiny"])
    assert "| tiny | 2000 | 2 | training |" in table and "beyond the model MB" in table


def test_anatomy_times_each_part_of_generate_and_of_a_training_step():
    from experiments.measure import HALF_EDIT_ROWS, time_anatomy, time_shipped_training
    from experiments.report import bench_tables

    rows = time_anatomy("tiny", repeats=1, training_batch_size=2)
    parts = {row["part"]: row for row in rows}
    for part in (
        "draft: source + frames pass",
        "draft: LM head over the frames",
        "round: deletion pass",
        "round: insertion pass",
        "round: fill pass",
        "round: LM head over the placeholders",
    ):
        assert parts[part]["ms"] > 0 and parts[part]["macs"] > 0
    # a realistic round: it deletes and inserts, so its three passes see three different lengths of sequence
    sizes = next(row["tokens"] for row in rows if "tokens" in row)
    assert sizes["kept"] < sizes["draft"] and sizes["placeholders"] > 0
    # the joint pass runs source + frames through every layer: more multiply-adds than any one pass of a round
    assert parts["draft: source + frames pass"]["macs"] > 3 * parts["round: fill pass"]["macs"]
    assert {"DEER step", "DEER step, CTC-only phase (no edit passes)", "AR step"} <= set(parts)
    assert parts["generate, 2 rounds"]["ms"] > 0 and not any(part.startswith("before") for part in parts)
    # a DEER step multiplies more than the AR model's (a glancing pass, the CTC pass over twice the source, three
    # edit passes), and the CTC-only phase less than the whole step
    assert (
        parts["DEER step"]["macs"]
        > parts["DEER step, CTC-only phase (no edit passes)"]["macs"]
        > parts["AR step"]["macs"]
        > 0
    )
    # the edit passes on half the rows (1 of 2): between the whole step and the CTC-only phase
    assert (
        parts["DEER step"]["macs"]
        > parts[HALF_EDIT_ROWS]["macs"]
        > parts["DEER step, CTC-only phase (no edit passes)"]["macs"]
    )
    shipped = time_shipped_training(SHIPPED_DEER, SHIPPED_AR, repeats=1, batch_size=2)
    assert [row["part"] for row in shipped] == ["DEER step", HALF_EDIT_ROWS, "AR step"]
    assert all(row["ms"] > 0 for row in shipped)
    table = bench_tables({"threads": 1, "source_length": 48, "output_length": 32, "anatomy": rows + shipped}, ["tiny"])
    assert "draft + 2 rounds" in table and "| round: fill pass |" in table and "/ AR step" in table
    assert "shipped de-en checkpoints (6,044 and" in table and "| AR step | " in table


@pytest.mark.slow
def test_bench_batch_table_times_each_variant_against_the_ar_model(tmp_path, capsys):
    from experiments.bench import main as bench_main

    output = tmp_path / "bench.json"
    bench_main(
        [
            "--tables",
            "batch",
            "--shapes",
            "tiny",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--model",
            SHIPPED_DEER,
            "--output",
            str(output),
        ]
    )
    rows = json.loads(output.read_text())["batch"]
    assert {row["system"] for row in rows} == {"deer-0", "deer-2", "ar"}
    assert len({row["variant"] for row in rows}) == 4 and {row["batch_size"] for row in rows} == {32}
    assert "AR / deer-2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "scores, kept",
    [
        ([20.25, 20.38, 20.38, 20.38], (1, "edits")),  # 0.13 above the draft: more than 0.5 % of 20.38
        ([20.30, 20.38, 20.38, 20.38], (0, "edits")),  # 0.08: within 0.5 %, the draft is enough
        ([0.01, 0.05, 0.08, 0.09], (4, "edits")),  # near 0: the best, not the draft held by an absolute margin
        ([0.0, 0.0, 0.0, 0.0], (0, "edits")),
    ],
)
def test_the_round_count_kept_is_sensible_at_both_ends(scores, kept):
    from training.decoding import kept_max_iterations

    rows = [
        {"refinement": "edits", "max_iterations": count, "bleu": value} for count, value in zip((0, 1, 2, 4), scores)
    ]
    row = kept_max_iterations(rows, "bleu")
    assert (row["max_iterations"], row["refinement"]) == kept
    # Another kind of round that scores better at the same count is kept instead.
    better = [{"refinement": "redraft", "max_iterations": 1, "bleu": max(scores) + 1.0}]
    assert kept_max_iterations(rows + better, "bleu")["refinement"] == "redraft"


def small_splits(data_dir, rows: int):
    """A data directory holding the first `rows` pairs of the fixture's validation and test splits."""
    data_dir.mkdir()
    for split in ("validation", "test"):
        lines = [json.dumps(pair, ensure_ascii=False) for pair in load_pairs(split)[:rows]]
        (data_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_dir


def test_dial_report_writes_rounds_per_seed_and_levels(trained_pair, tmp_path):
    """results/dial.json's shape: per seed, the metric at every round count on validation and test; the levels
    model at every level on both splits, and the no-levels model's validation score."""
    from experiments.dial_report import main as dial_main
    from training.decoding import generate_texts
    from training.metrics import normalize, score

    data_dir = small_splits(tmp_path / "data", 12)
    deer = str(trained_pair / "deer")
    dial_main(
        [
            "--task",
            "bible-de-en",
            "--data_dir",
            str(data_dir),
            "--seeds",
            deer,
            deer,
            "--levels",
            deer,
            "--iterations",
            "0",
            "1",
            "--sparsities",
            "0",
            "0.5",
            "--threads",
            "1",
            "--output",
            str(tmp_path / "dial"),
        ]
    )
    report = json.loads((tmp_path / "dial.json").read_text())
    assert report["task"] == "bible-de-en" and report["plateau"] == []
    assert [row["seed"] for row in report["rounds"]] == [0, 1]
    assert report["rounds"][0]["validation"] == report["rounds"][1]["validation"]  # the same model twice
    assert set(report["rounds"][0]["test"]) == {"0", "1"}
    model = DeerForConditionalGeneration.from_pretrained(deer).eval()
    tokenizer = AutoTokenizer.from_pretrained(deer)
    pairs = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
    outputs = generate_texts(model, tokenizer, [pair["source"] for pair in pairs], progress=False, max_iterations=1)
    expected = score(outputs, normalize(tokenizer, [pair["target"] for pair in pairs]))["bleu"]
    assert report["rounds"][0]["test"]["1"] == round(expected, 2)
    levels = report["levels"]
    assert set(levels["validation"]) == set(levels["test"]) == {"0", "0.5"}
    assert levels["no_levels_validation"] >= 0
    assert "best rounds - draft" in (tmp_path / "dial.md").read_text()


def test_levels_report_compares_each_run_with_its_own_seed_without_levels(trained_pair, tmp_path):
    """results/dial.json "levels": each run's full-size cost against the run of the same training seed without
    levels (from the dial file's "rounds", another file's, or a run named for its seed), whatever the order of
    --runs."""
    from experiments.levels_report import main as levels_main

    data_dir = small_splits(tmp_path / "data", 6)
    rounds = [
        {"seed": seed, "run": f"r{seed}", "max_iterations": 0, "validation": {"0": 10.0 * seed}} for seed in (2, 1)
    ]
    (tmp_path / "dial.json").write_text(json.dumps({"rounds": [{"seed": 0, "run": "x", "max_iterations": 0}]}))
    (tmp_path / "other.json").write_text(json.dumps({"rounds": rounds}))
    deer = str(trained_pair / "deer")
    common = ["--task", "bible-de-en", "--data_dir", str(data_dir), "--runs", deer, deer, "--recipe", "tiny"]
    common += ["--dial", str(tmp_path / "dial.json"), "--sparsities", "0", "0.5", "--threads", "1"]
    levels_main(common + ["--seeds", "1", "2", "--no_levels", str(tmp_path / "other.json"), "--key", "tiny"])
    entry = json.loads((tmp_path / "dial.json").read_text())["tiny"]
    full = entry["seeds"][0]["validation"]["0"]
    assert [(row["seed"], row["no_levels_run"]) for row in entry["seeds"]] == [(1, "r1"), (2, "r2")]
    assert [row["full_size_cost"] for row in entry["seeds"]] == [round(10.0 - full, 2), round(20.0 - full, 2)]
    with pytest.raises(SystemExit):  # seed 5 has no run without levels
        levels_main(common + ["--seeds", "1", "5", "--no_levels", str(tmp_path / "other.json")])
    # A seed the file lacks: its run without levels named and scored here, at its saved decoding.
    other = ["--no_levels", str(tmp_path / "other.json"), "--key", "named"]
    levels_main(common + ["--seeds", "1", "5", "--no_levels_runs", f"5={deer}"] + other)
    named = json.loads((tmp_path / "dial.json").read_text())["named"]["seeds"][1]
    assert (named["seed"], named["no_levels_run"], named["full_size_cost"]) == (5, deer, 0.0)
    with pytest.raises(SystemExit):  # not SEED=RUN
        levels_main(common + ["--seeds", "1", "5", "--no_levels_runs", deer] + other)
    with pytest.raises(SystemExit):  # two runs, one seed
        levels_main(common + ["--seeds", "1"])

    # More seeds of the same recipe, added to its entry: the other seeds' rows kept, the mean over all.
    def add_seed_7(recipe):
        return levels_main(
            ["--task", "bible-de-en", "--data_dir", str(data_dir), "--runs", deer, "--recipe", recipe, "--seeds", "7"]
            + ["--dial", str(tmp_path / "dial.json"), "--sparsities", "0", "0.5", "--threads", "1", "--key", "tiny"]
            + ["--add_seeds", "--no_levels_runs", f"7={deer}"]
        )

    add_seed_7("tiny")
    entry = json.loads((tmp_path / "dial.json").read_text())["tiny"]
    assert [row["seed"] for row in entry["seeds"]] == [1, 2, 7]
    assert entry["mean_full_size_cost"] == round((10.0 - full + 20.0 - full + 0.0) / 3, 2)
    with pytest.raises(SystemExit):  # another recipe under that key
        add_seed_7("another")


def test_threads_table_times_two_calls_side_by_side_against_the_same_calls_in_turn():
    from experiments.measure import time_threads
    from experiments.report import bench_tables

    rows = time_threads("tiny", repeats=1, batch_size=2)
    assert [row["levels"] for row in rows] == ["same level", "levels 0 and 0.5"]
    for row in rows:
        assert row["serial_ms"] > 0 and row["two_threads_ms"] > 0
        assert row["ratio"] == row["two_threads_ms"] / row["serial_ms"]
        assert row["rounds"]["passes_per_round_b32"] == 3  # realistic rounds: each deletes and inserts
    table = bench_tables({"threads": 1, "source_length": 48, "output_length": 32, "concurrency": rows}, ["tiny"])
    assert "two threads / serial" in table and "| tiny | 2 | same level |" in table


def test_the_model_card_computes_what_the_levels_cost_and_how_the_run_stopped(tmp_path):
    """experiments.model_card on a checkpoint with pruning levels and an early-stopped trainer state: the card says
    what each level costs and buys at the model's saved round count, and the steps early stopping chose, every figure
    computed from the report and the state, none typed."""
    from conftest import tiny_model

    from experiments.model_card import main as card_main

    model = tiny_model(sparsity_levels=[0.0, 0.5])
    model.generation_config.max_iterations = 1
    model.save_pretrained(tmp_path / "model")
    state = {"global_step": 3000, "best_global_step": 2000, "best_metric": 17.256, "eval_steps": 500}
    (tmp_path / "model" / "trainer_state.json").write_text(json.dumps(state))
    rows = [
        {"system": "deer", "run": "deer", "sparsity": level, "iterations": rounds, "bleu": bleu, "chrf": 40.0,
         "latency_ms_b1": b1, "latency_ms_b32": b32, "params_nonembedding": 1, "peak_rss_mb": 1.0}
        for level, rounds, bleu, b1, b32 in [(0.0, 0, 20.0, 5.0, 2.0), (0.0, 1, 21.0, 9.0, 4.0),
                                             (0.5, 0, 18.0, 4.0, 1.0), (0.5, 1, 18.5, 8.0, 3.0)]
    ] + [{"system": "ar", "run": "ar", "sparsity": 0.0, "iterations": None, "bleu": 19.0, "chrf": 38.0,
          "latency_ms_b1": 50.0, "latency_ms_b32": 3.0, "params_nonembedding": 2, "peak_rss_mb": 1.0}]  # fmt: skip
    report = {"task": "bible-de-en", "metrics": ["bleu", "chrf"], "rows": rows, "test_pairs": 4}
    (tmp_path / "report.json").write_text(json.dumps(report))
    card_main(
        ["--model", str(tmp_path / "model"), "--name", "deer-test", "--results", str(tmp_path / "report.json"),
         "--description", "A test model."]
    )  # fmt: skip
    card = (tmp_path / "model" / "README.md").read_text()
    assert "A test model. Evaluated on the validation verses every 500 steps; training ended at step 3000" in card
    assert "the best one, step 2000 (validation BLEU 17.26)" in card
    assert "at 1 round against the full size: sparsity 0.5: BLEU 21.00 -> 18.50, its draft 1.25x as fast at" in card
    assert "batch 1 and 2.00x at batch 32." in card


def test_the_plateau_report_keeps_one_summary_per_report_in_the_dial_file(tmp_path):
    """`experiments.plateau_report --dial`: its summary (the curves left in the report) replaces the one from the same
    report file; other tasks' stay."""
    from experiments.plateau_report import update_dial

    dial = tmp_path / "dial.json"
    dial.write_text(json.dumps({"task": "bible-de-en", "plateau": [{"file": "old.json"}, {"file": "this.json"}]}))
    run = {"stopped_at_step": 40, "best_step": 20, "plateau": True, "curve": [{"step": 20}], "test": {"bleu": 9.0}}
    report = {"runs": {"deer": run, "ar": {**run, "test": {"bleu": 7.5}}}, "deer_minus_ar_test": 1.5}
    update_dial(str(dial), "this.json", report)
    entries = json.loads(dial.read_text())["plateau"]
    assert [entry["file"] for entry in entries] == ["old.json", "this.json"]
    assert entries[1]["deer"]["best_step"] == 20 and "curve" not in entries[1]["deer"]
    assert entries[1]["deer_minus_ar_test"] == 1.5 and entries[1]["command"] == "make plateau-report"
