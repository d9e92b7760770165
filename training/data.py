"""Data: reading and checking splits in every form a Hugging Face user holds them (JSON lines, JSON, CSV, TSV, parquet,
arrow, a `save_to_disk` folder; flat columns or `translation` dicts; plain text to generate from), tokenising them
for the Trainer, batching (source, target) pairs for DEER, and writing JSON lines."""

import csv
import io
import json
import os
from dataclasses import dataclass

import datasets
import torch

from training.arguments import DataArguments


def tokenize_texts(
    tokenizer, sources: list[str], targets: list[str], max_source_length: int, max_target_length: int
) -> dict[str, list]:
    """Sources and targets -> {"input_ids": [[cls ... sep], ...], "labels": [[cls ... sep], ...]}, truncated. User
    text never becomes a control token: a literal "[SEP]" or "[MASK]" is read as characters."""
    return {
        "input_ids": tokenizer(sources, truncation=True, max_length=max_source_length, split_special_tokens=True)[
            "input_ids"
        ],
        "labels": tokenizer(targets, truncation=True, max_length=max_target_length, split_special_tokens=True)[
            "input_ids"
        ],
    }


def tokenize_pairs(tokenizer, pairs, max_source_length: int, max_target_length: int) -> list[dict]:
    """Each pair -> {"input_ids": [cls ... sep], "labels": [cls ... sep]} (lists of ids), truncated."""
    columns = tokenize_texts(
        tokenizer,
        [pair["source"] for pair in pairs],
        [pair["target"] for pair in pairs],
        max_source_length,
        max_target_length,
    )
    return [{"input_ids": source, "labels": target} for source, target in zip(columns["input_ids"], columns["labels"])]


@dataclass
class DeerDataCollator:
    """Pads a list of tokenised pairs: input_ids with pad, attention_mask, labels with -100."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        def pad(rows, value):
            width = max(len(row) for row in rows)
            return torch.tensor([list(row) + [value] * (width - len(row)) for row in rows], dtype=torch.long)

        input_ids = pad([feature["input_ids"] for feature in features], self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_token_id).long()}
        if "labels" in features[0]:
            batch["labels"] = pad([feature["labels"] for feature in features], -100)
        return batch


def extension(path: str) -> str:
    """A file name's extension, lower case, without the dot ('' if it has none)."""
    name = os.path.basename(path)
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def read_text(path: str) -> str:
    """A text file's contents, with clear errors before `datasets` sees it: missing, empty, not UTF-8."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path} does not exist.")
    with open(path, "rb") as handle:
        raw = handle.read()
    if not raw.strip():
        raise ValueError(f"data file {path} is empty.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"data file {path} is not UTF-8 text (byte {error.start}: {raw[error.start : error.start + 1]!r})"
            f"; re-encode it, e.g. `iconv -t UTF-8`, or give one of {FORMS}."
        ) from None


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


def check_rows(path: str, text: str, text_columns: tuple[str, ...]):
    """Every row of a JSON lines or CSV/TSV file's `text`, read before `datasets` sees it, so that a bad row is named
    by file and line: a line that is not one JSON object (or has a key twice), a CSV row with more or fewer fields
    than the header, and a row whose `text_columns` hold no text (null, a number, a list)."""
    kind, rows = extension(path), []
    if kind == "json" and text.lstrip().startswith("["):
        return  # one JSON array: `datasets` reads it whole
    if kind in ("json", "jsonl"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
            except ValueError as error:
                raise ValueError(f"data file {path}, line {number}: not a JSON object ({error}).") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"data file {path}, line {number}: a JSON {type(row).__name__}, not an object with named columns."
                )
            rows.append((number, row))
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",")
        header = next(reader, [])
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"data file {path}, line {reader.line_num}: {len(row)} fields, but the header has "
                    f"{len(header)} ({', '.join(header)})."
                )
            rows.append((reader.line_num, {name: value if value != "" else None for name, value in zip(header, row)}))
    for number, row in rows:
        for column in text_columns:
            if column in row and not isinstance(row[column], str):
                raise ValueError(
                    f"data file {path}, line {number}: column '{column}' holds {row[column]!r}, not text."
                )


# The forms a split may come in: a file, by its extension, and the `datasets` builder that reads it; or a folder
# written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
TABLE_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet", "arrow": "arrow"}
FORMS = ".jsonl, .json, .csv, .tsv, .parquet, .arrow or a folder written by save_to_disk"


def pick_split(loaded, split: str | None, where: str, hint: str = ""):
    """Of a `DatasetDict` (or a dict of streams), the split `split`, else its only split."""
    names = list(loaded)
    if split in loaded:
        return loaded[split]
    if len(names) == 1:
        return loaded[names[0]]
    raise ValueError(f"{where} holds the splits {', '.join(names)} and none is '{split}'{hint}.")


def open_table(
    path: str, split: str | None = None, streaming: bool = False, text_columns: tuple[str, ...] = ()
) -> datasets.Dataset:
    """The rows of a split, whatever form it has: a data file (`TABLE_BUILDERS`; a text file checked first by
    `read_text` and, for `text_columns`, `check_rows`) or a `save_to_disk` folder. A `DatasetDict` folder gives its
    split `split` (the role the caller reads it for: train, validation, test), or its only split. With `streaming`,
    an `IterableDataset` read as training goes (a text file is then not read ahead to check its rows)."""
    if os.path.isdir(path):
        try:
            loaded = datasets.load_from_disk(path)
        except FileNotFoundError:
            raise ValueError(
                f"{path} is a folder, but not one written by save_to_disk; give a data file ({FORMS})."
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            loaded = pick_split(loaded, split, path, f"; give one split's folder, e.g. {path}/{next(iter(loaded))}")
        return loaded.to_iterable_dataset() if streaming else loaded
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} does not exist.")
    kind = extension(path)
    if kind not in TABLE_BUILDERS:
        raise ValueError(
            f"data file {path}: a {'.' + kind if kind else 'file without an extension'}; DEER reads {FORMS}."
        )
    builder = TABLE_BUILDERS[kind]
    if builder in ("json", "csv") and not streaming:
        check_rows(path, read_text(path), text_columns)
    elif os.path.getsize(path) == 0:
        raise ValueError(f"data file {path} is empty.")
    options = {"delimiter": "\t" if kind == "tsv" else ","} if builder == "csv" else {}
    try:
        return datasets.load_dataset(builder, data_files=path, split="train", streaming=streaming, **options)
    except Exception as error:  # a parquet or arrow file that is not one
        if builder in ("json", "csv"):
            raise
        raise ValueError(f"data file {path} cannot be read as .{kind} ({type(error).__name__}: {error}).") from None


def open_named(
    name: str, config_name: str | None = None, split: str | None = None, streaming: bool = False
) -> datasets.Dataset:
    """`--dataset_name` / `--dataset_config_name`: a dataset through `datasets.load_dataset` (a local dataset folder
    or script offline, a Hub id when online), its split `split` (or its only split)."""
    try:
        loaded = datasets.load_dataset(name, config_name, streaming=streaming)
    except (FileNotFoundError, ConnectionError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--dataset_name {name}: cannot be loaded ({first}).") from None
    return pick_split(loaded, split, f"--dataset_name {name}")


def pair_columns(
    dataset: datasets.Dataset,
    path: str,
    source_column: str,
    target_column: str,
    source_lang: str | None = None,
    target_lang: str | None = None,
    target_required: bool = True,
) -> datasets.Dataset:
    """The split with its text under `source_column` and `target_column`: flat columns as they are, or, with
    `source_lang` / `target_lang`, the languages of a `translation` column of dicts (`{"translation": {"de": ...,
    "en": ...}}`, the form of most translation sets on the Hub) copied out under those names."""
    first_row = next(iter(dataset), None)  # an IterableDataset may not know its columns before it is read
    columns = dataset.column_names or list(first_row or {})
    if source_lang is not None or target_lang is not None:
        if "translation" not in columns:
            raise ValueError(
                f"{path} has columns {columns} and no 'translation' column for --source_lang / "
                "--target_lang; for flat columns use --source_column / --target_column."
            )
        first = first_row["translation"] if first_row else {}
        languages = sorted(first) if isinstance(first, dict) else []
        wanted = [lang for lang in (source_lang, target_lang) if lang is not None]
        missing = [lang for lang in wanted if lang not in languages]
        if missing or not isinstance(first, dict):
            raise ValueError(
                f"{path}: its 'translation' rows hold the languages {languages}, not "
                f"{', '.join(repr(lang) for lang in missing or wanted)}."
            )

        def flatten(batch):
            out = {}
            for name, lang in ((source_column, source_lang), (target_column, target_lang)):
                if lang is not None:
                    out[name] = [row.get(lang) if isinstance(row, dict) else None for row in batch["translation"]]
            return out

        return map_rows(dataset, flatten, "reading translation pairs", batched=True, remove_columns=columns)
    for column in (source_column, target_column) if target_required else (source_column,):
        if column not in columns:
            hint = "set --source_column / --target_column"
            if "translation" in columns:
                first = first_row["translation"] if first_row else None
                languages = " ".join(sorted(first)) if isinstance(first, dict) else "SRC TGT"
                hint = (
                    f"its rows hold a 'translation' dict: set --source_lang / --target_lang (languages: {languages})"
                )
            raise ValueError(f"data file {path} has columns {columns}, not '{column}'; {hint}.")
    return dataset


def map_rows(dataset, function, description: str, **options):
    """`dataset.map`, with a progress description where the dataset is not a stream (an `IterableDataset` maps
    lazily, as it is read)."""
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(function, **options)
    return dataset.map(function, desc=description, **options)


def load_split(
    path: str,
    source_column: str,
    target_column: str,
    max_samples: int | None,
    target_required: bool = True,
    source_lang: str | None = None,
    target_lang: str | None = None,
    split: str | None = None,
    dataset_config_name: str | None = None,
    named: bool = False,
    streaming: bool = False,
) -> datasets.Dataset:
    """A split in any form `open_table` reads (with `named`, `path` is a `--dataset_name` for `open_named`), its
    text under `source_column` / `target_column` (`pair_columns`); the target may be absent when `target_required`
    is False (text to generate from). With `streaming`, an `IterableDataset` (data larger than memory). Every
    command reads its data here."""
    if named:
        table = open_named(path, dataset_config_name, split, streaming)
    else:
        table = open_table(path, split, streaming, (source_column, target_column))
    dataset = pair_columns(table, path, source_column, target_column, source_lang, target_lang, target_required)
    if streaming:
        if next(iter(dataset), None) is None:
            raise ValueError(f"data file {path} holds no rows.")
        return dataset.take(max_samples) if max_samples is not None else dataset
    if len(dataset) == 0:
        raise ValueError(f"data file {path} holds no rows.")
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return dataset


def tokenize_split(dataset, tokenizer, data_args: DataArguments) -> datasets.Dataset:
    def tokenize(batch):
        for column in (data_args.source_column, data_args.target_column):
            missing = [i for i, text in enumerate(batch[column]) if not isinstance(text, str)]
            if missing:
                raise ValueError(f"column '{column}' has rows without text (e.g. {batch[column][missing[0]]!r}).")
        return tokenize_texts(
            tokenizer,
            batch[data_args.source_column],
            batch[data_args.target_column],
            data_args.max_source_length,
            data_args.max_target_length,
        )

    columns = dataset.column_names or list(next(iter(dataset)))
    return map_rows(dataset, tokenize, "tokenizing", batched=True, remove_columns=columns)


def read_inputs(
    path: str,
    source_column: str,
    target_column: str,
    source_lang: str | None = None,
    target_lang: str | None = None,
    split: str | None = None,
) -> tuple[list[str], list[str] | None]:
    """Sources (and targets, where the data has them) of a split in any form `load_split` reads, or the lines of a
    plain text file (any other name: .txt, .de, ...): every line, blank ones too, so that output line i answers input
    line i. A row without text fails here, before any work, naming the file and line."""
    if os.path.isdir(path) or extension(path) in TABLE_BUILDERS:
        dataset = load_split(
            path,
            source_column,
            target_column,
            None,
            target_required=False,
            source_lang=source_lang,
            target_lang=target_lang,
            split=split,
        )
        for column in (source_column, target_column):
            if column in dataset.column_names:
                missing = [i for i, text in enumerate(dataset[column]) if not isinstance(text, str)]
                if missing:
                    raise ValueError(
                        f"data file {path}, row {missing[0] + 1}: column '{column}' holds "
                        f"{dataset[missing[0]][column]!r}, not text."
                    )
        targets = dataset[target_column] if target_column in dataset.column_names else None
        return list(dataset[source_column]), (list(targets) if targets is not None else None)
    return read_text(path).splitlines(), None


def read_texts(path: str, args, split: str | None = None) -> tuple[list[str], list[str] | None]:
    """`read_inputs` with the columns and languages a command's flags give (`args.source_column`, ...)."""
    return read_inputs(path, args.source_column, args.target_column, args.source_lang, args.target_lang, split)


def write_jsonl(rows: list[dict], path: str):
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def fitting_pairs(tokenizer, pairs: list[dict], max_length: int) -> list[dict]:
    """The pairs whose source and target both fit in `max_length` tokens (specials included)."""
    sources = tokenizer([pair["source"] for pair in pairs])["input_ids"]
    targets = tokenizer([pair["target"] for pair in pairs])["input_ids"]
    return [pair for pair, s, t in zip(pairs, sources, targets) if len(s) <= max_length and len(t) <= max_length]
