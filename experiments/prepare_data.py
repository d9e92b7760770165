"""Extract a real task's verse pairs into JSON lines: train.jsonl, validation.jsonl, test.jsonl.

    python -m experiments.prepare_data --task {bible-de-en,bible-kjv-bbe} --output_dir DIR \
        [--max_length 32 --tokenizer PATH]

Each line holds `source`, `target` and the verse reference (`book`, `chapter`, `verse`). Split by book: test =
John (43), validation = Luke and Philippians to Philemon (42, 50-57), train = every other book, so no test or
validation verse is in train. With
`--max_length`, only the pairs whose source and target both fit in that many tokens of `--tokenizer` (specials
included) are kept, in every split: short verses make short CPU runs.
"""

import os

from experiments.bible import SPLITS, load_bible_pairs, tiny_bert_path
from experiments.tasks import TASKS
from training.cli import new_parser
from training.data import fitting_pairs, write_jsonl


def prepare_data_parser():
    parser = new_parser(__doc__)
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--max_length", type=int, default=None, help="keep only pairs whose source and target fit in this many tokens"
    )
    parser.add_argument("--tokenizer", default=None, help="counts the tokens (default: the real tiny BERT's)")
    return parser


def prepare(task: str, output_dir: str, max_length: int | None = None, tokenizer=None) -> dict[str, int]:
    splits = load_bible_pairs(task)
    if max_length is not None:
        splits = {name: fitting_pairs(tokenizer, pairs, max_length) for name, pairs in splits.items()}
    os.makedirs(output_dir, exist_ok=True)
    for name in SPLITS:
        write_jsonl(splits[name], os.path.join(output_dir, f"{name}.jsonl"))
    return {name: len(rows) for name, rows in splits.items()}


def main(argv=None):
    args = prepare_data_parser().parse_args(argv)
    if args.max_length is not None and args.max_length < 3:
        raise SystemExit("error: --max_length must be at least 3 (bos, one token, eos)")
    tokenizer = None
    if args.max_length is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or tiny_bert_path())
    try:
        sizes = prepare(args.task, args.output_dir, args.max_length, tokenizer)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    print(
        f"{args.task}: "
        + ", ".join(f"{name} {size} pairs" for name, size in sizes.items())
        + f" written to {args.output_dir}"
    )


if __name__ == "__main__":
    main()
