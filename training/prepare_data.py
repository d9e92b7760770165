"""Extract a real task's verse pairs into JSON lines: train.jsonl, validation.jsonl, test.jsonl.

    python -m training.prepare_data --task {bible-de-en,bible-kjv-bbe} --output_dir DIR

Each line holds `source`, `target` and the verse reference (`book`, `chapter`, `verse`). Split by book: test =
John (43), validation = Philippians (50), train = every other book, so no test verse is in train.
"""

import argparse
import json
import os

from training.bible import SPLITS, TASKS, load_bible_pairs


def write_jsonl(rows: list[dict], path: str):
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def prepare(task: str, output_dir: str) -> dict[str, int]:
    splits = load_bible_pairs(task)
    os.makedirs(output_dir, exist_ok=True)
    for name in SPLITS:
        write_jsonl(splits[name], os.path.join(output_dir, f"{name}.jsonl"))
    return {name: len(rows) for name, rows in splits.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()
    try:
        sizes = prepare(args.task, args.output_dir)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{args.task}: " + ", ".join(f"{name} {size} pairs" for name, size in sizes.items())
          + f" written to {args.output_dir}")


if __name__ == "__main__":
    main()
