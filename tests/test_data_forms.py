"""A user's own data in the forms Hugging Face users hold it: every command reads it through `training.data.load_split`
(files by extension, save_to_disk folders, flat columns or `translation` dicts), and a form it cannot read is named."""

import json
import os

import datasets
import pytest
from conftest import load_pairs
from test_training_scripts import run_args

from training.data import load_split, read_inputs
from training.train import main as train_main


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """The same 16 training and 4 validation pairs as a DatasetDict folder, a parquet file, an arrow file and
    WMT-style JSON lines."""
    root = tmp_path_factory.mktemp("forms")
    train, validation = (
        datasets.Dataset.from_list(load_pairs("train")[:16]),
        datasets.Dataset.from_list(load_pairs("validation")[:4]),
    )
    datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(str(root / "dict"))
    train.to_parquet(str(root / "train.parquet"))
    arrow = datasets.Dataset.from_list(load_pairs("train")[:16])
    arrow.save_to_disk(str(root / "single"))
    arrow_file = next(name for name in os.listdir(root / "single") if name.endswith(".arrow"))
    os.replace(root / "single" / arrow_file, root / "train.arrow")
    with open(root / "wmt.jsonl", "w", encoding="utf-8") as handle:
        for pair in load_pairs("train")[:16]:
            handle.write(json.dumps({"translation": {"de": pair["source"], "en": pair["target"]}}) + "\n")
    return root


def test_every_form_gives_the_same_pairs(forms):
    expected = load_pairs("train")[:16]
    sources = [pair["source"] for pair in expected]
    for path, options in (
        (forms / "dict", {"split": "train"}),
        (forms / "train.parquet", {}),
        (forms / "train.arrow", {}),
        (forms / "wmt.jsonl", {"source_lang": "de", "target_lang": "en"}),
    ):
        dataset = load_split(str(path), "source", "target", None, **options)
        assert dataset["source"] == sources and dataset["target"] == [pair["target"] for pair in expected], path
    # A DatasetDict folder gives the split asked for by role; one split's folder works alone too.
    assert load_split(str(forms / "dict"), "source", "target", None, split="validation")["source"] == [
        pair["source"] for pair in load_pairs("validation")[:4]
    ]
    assert read_inputs(str(forms / "dict" / "validation"), "source", "target")[0] == [
        pair["source"] for pair in load_pairs("validation")[:4]
    ]
    # The languages may be read under other column names, and the other way round.
    flipped = load_split(str(forms / "wmt.jsonl"), "de", "en", 2, source_lang="en", target_lang="de")
    assert flipped["de"] == [pair["target"] for pair in expected[:2]]


@pytest.mark.parametrize(
    "form, options",
    [
        ("dict", []),
        ("train.parquet", []),
        ("wmt.jsonl", ["--source_lang", "de", "--target_lang", "en"]),
    ],
)
def test_training_two_steps_from_each_form(forms, tmp_path, tiny_bert_path, form, options):
    path = str(forms / form)
    validation = str(forms / "dict") if form == "dict" else path
    trainer = train_main(
        run_args(
            tmp_path,
            tiny_bert_path,
            "--train_file",
            path,
            "--validation_file",
            validation,
            "--do_eval",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",  # --do_train implied
            "--tune_decoding",
            "none",
            *options,
        )
    )
    assert trainer.state.global_step == 2
    assert len(trainer.train_dataset) == 16 and len(trainer.eval_dataset) == (4 if form == "dict" else 16)


def test_forms_it_cannot_read_are_named(forms, tmp_path):
    cases = []
    sheet = tmp_path / "pairs.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not text")
    cases.append(
        (
            sheet,
            {},
            r"a \.xlsx; DEER reads \.jsonl, \.json, \.csv, \.tsv, \.parquet, \.arrow or a folder "
            "written by save_to_disk",
        )
    )
    folder = tmp_path / "plain_folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    cases.append((folder, {}, "is a folder, but not one written by save_to_disk"))
    cases.append(
        (
            forms / "dict",
            {"split": "test"},
            "holds the splits train, validation and none is 'test'; give one split's folder",
        )
    )
    cases.append(
        (
            forms / "wmt.jsonl",
            {},
            r"its rows hold a 'translation' dict: set --source_lang / --target_lang "
            r"\(languages: de en\)",
        )
    )
    cases.append(
        (
            forms / "wmt.jsonl",
            {"source_lang": "fr", "target_lang": "en"},
            r"'translation' rows hold the languages \['de', 'en'\], not 'fr'",
        )
    )
    cases.append(
        (
            forms / "train.parquet",
            {"source_lang": "de", "target_lang": "en"},
            "no 'translation' column for --source_lang / --target_lang",
        )
    )
    broken = tmp_path / "broken.parquet"
    broken.write_text("source,target\nJa,Yes\n")
    cases.append((broken, {}, "cannot be read as .parquet"))
    for path, options, message in cases:
        with pytest.raises(ValueError, match=message):
            load_split(str(path), "source", "target", None, **options)


def test_training_from_a_dataset_name(tmp_path, tiny_bert_path):
    """--dataset_name goes through datasets.load_dataset: here a local folder of split files (offline), its train
    and validation splits by name."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    for split, count in (("train", 16), ("validation", 4)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(pair) + "\n" for pair in load_pairs(split)[:count])
    args = run_args(tmp_path / "run", tiny_bert_path)
    del args[args.index("--train_file") : args.index("--train_file") + 2]  # the dataset instead of the file
    trainer = train_main(
        args
        + [
            "--dataset_name",
            str(folder),
            "--do_eval",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--tune_decoding",
            "none",
            "--report_to",
            "tensorboard",
            "--logging_steps",
            "1",
        ]
    )
    assert trainer.state.global_step == 2 and len(trainer.train_dataset) == 16 and len(trainer.eval_dataset) == 4
    # tensorboard comes with the train extras: its event files are written
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(tmp_path / "run") for name in files)
    with pytest.raises(ValueError, match="--dataset_name .*nowhere.*: cannot be loaded"):
        load_split(str(tmp_path / "nowhere"), "source", "target", None, named=True)


@pytest.mark.parametrize("form", ["wmt.jsonl", "dict"])
def test_training_two_steps_from_a_stream(forms, tmp_path, tiny_bert_path, form):
    """--streaming trains from an IterableDataset read as training goes (data larger than memory), by --max_steps;
    the units are ranked on its first rows."""
    options = ["--source_lang", "de", "--target_lang", "en"] if form == "wmt.jsonl" else []
    trainer = train_main(
        run_args(
            tmp_path,
            tiny_bert_path,
            "--train_file",
            str(forms / form),
            "--streaming",
            "true",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--tune_decoding",
            "none",
            "--sparsity_levels",
            "0",
            "0.5",
            "--level_ranking",
            "importance",
            "--level_ranking_rows",
            "8",
            *options,
        )
    )
    assert isinstance(trainer.train_dataset, datasets.IterableDataset) and trainer.state.global_step == 2
    assert trainer.model.config.units_ranked  # on the stream's first rows
    row = next(iter(trainer.train_dataset))
    assert set(row) == {"input_ids", "labels"} and row["input_ids"][0] == 101


def test_streaming_refusals(forms, tmp_path, tiny_bert_path):
    base = run_args(tmp_path, tiny_bert_path, "--train_file", str(forms / "dict"), "--streaming", "true")
    with pytest.raises(SystemExit, match="--streaming needs --max_steps"):
        train_main(base)
    with pytest.raises(SystemExit, match="--trim_vocabulary reads every training token first: not with --streaming"):
        train_main(base + ["--max_steps", "2", "--trim_vocabulary"])


def test_a_test_file_is_scored_and_its_outputs_written(forms, tmp_path, tiny_bert_path):
    """--test_file (here one split's save_to_disk folder) is scored by generation after training (--do_predict
    implied), its outputs written to generated_predictions.txt, one per test row."""
    trainer = train_main(
        run_args(
            tmp_path,
            tiny_bert_path,
            "--train_file",
            str(forms / "train.parquet"),
            "--test_file",
            str(forms / "dict" / "validation"),
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--tune_decoding",
            "none",
            "--predict_with_generate",
        )
    )
    assert trainer.args.do_predict
    metrics = json.loads((tmp_path / "predict_results.json").read_text())
    assert {"predict_bleu", "predict_chrf", "predict_rougeL"} <= set(metrics)
    lines = (tmp_path / "generated_predictions.txt").read_text().splitlines()
    # The same as a plain generate() at the saved round count, on the sources cut to --max_source_length 48.
    model, tokenizer = trainer.model.eval(), trainer.processing_class
    batch = tokenizer(
        [pair["source"] for pair in load_pairs("validation")[:4]],
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=48,
    )
    expected = tokenizer.batch_decode(model.generate(**batch), skip_special_tokens=True)
    assert lines == [text.strip() for text in expected]
    with pytest.raises(SystemExit, match="--do_predict needs --test_file"):
        train_main(run_args(tmp_path / "none", tiny_bert_path, "--do_predict", "--max_steps", "1"))
