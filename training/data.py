"""Data files: reading and checking splits (JSON lines / CSV / TSV, or plain text to generate from), tokenising them
for the Trainer, batching (source, target) pairs for DEER, and writing JSON lines."""

import csv
import io
import json
import os
from dataclasses import dataclass

import datasets
import torch

from training.arguments import DataArguments


def tokenize_texts(tokenizer, sources: list[str], targets: list[str], max_source_length: int,
                   max_target_length: int) -> dict[str, list]:
    """Sources and targets -> {"input_ids": [[cls ... sep], ...], "labels": [[cls ... sep], ...]}, truncated. User
    text never becomes a control token: a literal "[SEP]" or "[MASK]" is read as characters."""
    return {"input_ids": tokenizer(sources, truncation=True, max_length=max_source_length,
                                   split_special_tokens=True)["input_ids"],
            "labels": tokenizer(targets, truncation=True, max_length=max_target_length,
                                split_special_tokens=True)["input_ids"]}


def tokenize_pairs(tokenizer, pairs, max_source_length: int, max_target_length: int) -> list[dict]:
    """Each pair -> {"input_ids": [cls ... sep], "labels": [cls ... sep]} (lists of ids), truncated."""
    columns = tokenize_texts(tokenizer, [pair["source"] for pair in pairs], [pair["target"] for pair in pairs],
                             max_source_length, max_target_length)
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


def check_text_file(path: str):
    """Clear errors before `datasets` sees the file: missing, empty, not UTF-8."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path} does not exist.")
    with open(path, "rb") as handle:
        raw = handle.read()
    if not raw.strip():
        raise ValueError(f"data file {path} is empty.")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"data file {path} is not UTF-8 (byte {error.start}: {raw[error.start:error.start + 1]!r}); "
                         "re-encode it, e.g. `iconv -t UTF-8`.") from None


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


def check_rows(path: str, text_columns: tuple[str, ...]):
    """Every row of a JSON lines or CSV/TSV file, read before `datasets` sees it, so that a bad row is named by file
    and line: a line that is not one JSON object (or has a key twice), a CSV row with more or fewer fields than the
    header, and a row whose `text_columns` hold no text (null, a number, a list)."""
    extension = path.rsplit(".", 1)[-1].lower()
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    if extension == "json" and text.lstrip().startswith("["):
        return  # one JSON array: `datasets` reads it whole
    if extension in ("json", "jsonl"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
            except ValueError as error:
                raise ValueError(f"data file {path}, line {number}: not a JSON object ({error}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"data file {path}, line {number}: a JSON {type(row).__name__}, not an object with "
                                 "named columns.")
            rows.append((number, row))
    elif extension in ("csv", "tsv"):
        reader = csv.reader(io.StringIO(text), delimiter="\t" if extension == "tsv" else ",")
        header = next(reader, [])
        rows = []
        for row in reader:
            number = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"data file {path}, line {number}: {len(row)} fields, but the header has "
                                 f"{len(header)} ({', '.join(header)}).")
            rows.append((number, {name: value if value != "" else None for name, value in zip(header, row)}))
    else:
        return
    for number, row in rows:
        for column in text_columns:
            if column in row and not isinstance(row[column], str):
                raise ValueError(f"data file {path}, line {number}: column '{column}' holds {row[column]!r}, not "
                                 "text.")


def load_split(path: str, source_column: str, target_column: str, max_samples: int | None,
               target_required: bool = True) -> datasets.Dataset:
    """A JSON lines / CSV / TSV split, checked first (`check_text_file`, `check_rows`); the target column may be
    absent when `target_required` is False (text to generate from)."""
    check_text_file(path)
    check_rows(path, (source_column, target_column))
    extension = path.rsplit(".", 1)[-1].lower()
    if extension in ("json", "jsonl"):
        dataset = datasets.load_dataset("json", data_files=path, split="train")
    elif extension in ("csv", "tsv"):
        dataset = datasets.load_dataset("csv", data_files=path, split="train",
                                        delimiter="\t" if extension == "tsv" else ",")
    else:
        raise ValueError(f"data file {path}: use .jsonl, .json, .csv or .tsv.")
    for column in (source_column, target_column) if target_required else (source_column,):
        if column not in dataset.column_names:
            raise ValueError(f"data file {path} has columns {dataset.column_names}, not '{column}'; "
                             "set --source_column / --target_column.")
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
        return tokenize_texts(tokenizer, batch[data_args.source_column], batch[data_args.target_column],
                              data_args.max_source_length, data_args.max_target_length)

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="tokenizing")


def read_inputs(path: str, source_column: str, target_column: str) -> tuple[list[str], list[str] | None]:
    """Sources (and targets, where the file has that column) of a JSON lines / CSV / TSV file, or the lines of a
    plain text file: every line, blank ones too, so that output line i answers input line i. A row without text
    fails here, before any work, naming the file and line."""
    if path.rsplit(".", 1)[-1].lower() in ("jsonl", "json", "csv", "tsv"):
        dataset = load_split(path, source_column, target_column, None, target_required=False)
        targets = dataset[target_column] if target_column in dataset.column_names else None
        return list(dataset[source_column]), (list(targets) if targets is not None else None)
    check_text_file(path)
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines(), None


def write_jsonl(rows: list[dict], path: str):
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def fitting_pairs(tokenizer, pairs: list[dict], max_length: int) -> list[dict]:
    """The pairs whose source and target both fit in `max_length` tokens (specials included)."""
    sources = tokenizer([pair["source"] for pair in pairs])["input_ids"]
    targets = tokenizer([pair["target"] for pair in pairs])["input_ids"]
    return [pair for pair, s, t in zip(pairs, sources, targets) if len(s) <= max_length and len(t) <= max_length]
