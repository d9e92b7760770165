"""Where an edit round gains or loses: the model's first round on its own draft against oracle edits.

    python -m experiments.edit_analysis --model runs/bible-de-en/deer-all \
        --data_file data/bible-de-en-32/validation.jsonl [--output results/bible-de-en-edit-analysis.json]

One edit round is three decisions: which draft words to delete (deletion head), how many words to insert in each
gap (insertion head), which words to write there (LM head). Each is swapped, one at a time from the first, for the
oracle's (the edits from the draft to the reference's longest common subsequence, `edit_ops.edit_oracle`), with
the model's decoding knobs as saved (`generation_config.json`):

  draft                      the draft alone (0 iterations);
  model round                one round, every decision the model's;
  oracle deletions           the oracle deletes, the model inserts and fills;
  oracle deletions + counts  the oracle deletes and says how many to insert, the model fills.

It also scores the deletion head, at its own threshold (no `deletion_penalty`), as a detector of the words the
oracle deletes: precision, recall, and the share of draft words the oracle deletes (the precision of deleting at
random); counts the words it deletes with the saved penalty; and scores the insertion head on the oracle-kept draft
(with the saved `eos_penalty`): its insertions per gap against the oracle's, and the share of gaps it counts right. Use
it on validation data: it reads the references.
"""

import argparse
import json
import os

import torch
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from modeling_deer.draft_deer import draft
from modeling_deer.edit_ops import apply_deletions, edit_oracle, inner_mask, insert_placeholders
from modeling_deer.generation_deer import edit_round, fill_round
from training.cli import add_data_arguments
from training.data import read_inputs
from training.metrics import normalize, score


SETTINGS = ("draft", "model round", "oracle deletions", "oracle deletions + counts")


@torch.no_grad()
def analyse(model, tokenizer, sources: list[str], targets: list[str], batch_size: int = 32) -> dict:
    config, knobs = model.config, model.generation_config
    pad = config.pad_token_id
    outputs = {name: [] for name in SETTINGS}
    counts = dict.fromkeys(
        (
            "draft_words",
            "oracle_deletes",
            "model_deletes",
            "model_deletes_right",
            "deletes_with_penalty",
            "gaps",
            "oracle_inserts",
            "model_inserts",
            "gaps_counted_right",
        ),
        0,
    )
    for start in range(0, len(sources), batch_size):
        # Tokenised as generation and training read text (a literal "[SEP]" is text).
        batch = tokenizer(
            sources[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=config.max_sequence_length,
            split_special_tokens=True,
        )
        gold = tokenizer(
            targets[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=config.max_sequence_length,
            split_special_tokens=True,
        ).input_ids
        encoder_output, drafted, _ = draft(model, batch.input_ids, batch.attention_mask, knobs.blank_penalty)
        words = inner_mask(drafted, pad)
        oracle = edit_oracle(drafted, gold, pad).delete_mask & words
        deletion_logits = model.deletion_head(model.target_pass(drafted, encoder_output))
        deletes = words & (deletion_logits[..., 1] > deletion_logits[..., 0])  # the head's own choice
        counts["draft_words"] += int(words.sum())
        counts["oracle_deletes"] += int(oracle.sum())
        counts["model_deletes"] += int(deletes.sum())
        counts["model_deletes_right"] += int((deletes & oracle).sum())
        counts["deletes_with_penalty"] += int(
            (words & (deletion_logits[..., 1] - knobs.deletion_penalty > deletion_logits[..., 0])).sum()
        )

        kept = apply_deletions(drafted, oracle, pad)
        insertions = edit_oracle(kept, gold, pad).insertion_counts
        # The insertion head on the oracle-kept draft (where the oracle's counts are the right answer), as a round
        # decides them (the saved eos_penalty).
        insertion_logits = model.insertion_logits(model.target_pass(kept, encoder_output))
        insertion_logits[..., 0] -= knobs.eos_penalty
        gaps = kept[:, 1:] != pad
        model_counts = insertion_logits.argmax(-1)[gaps]
        counts["gaps"] += int(gaps.sum())
        counts["oracle_inserts"] += int(insertions[gaps].sum())
        counts["model_inserts"] += int(model_counts.sum())
        counts["gaps_counted_right"] += int((model_counts == insertions[gaps]).sum())
        rows = {
            "draft": drafted,
            "model round": edit_round(model, drafted, encoder_output, knobs.eos_penalty, knobs.deletion_penalty),
            # An infinite deletion penalty: the round keeps every word of its input, the oracle's kept words here.
            "oracle deletions": edit_round(model, kept, encoder_output, knobs.eos_penalty, float("inf")),
            "oracle deletions + counts": fill_round(
                model,
                insert_placeholders(kept, insertions, config.placeholder_token_id, pad, config.max_sequence_length),
                encoder_output,
            ),
        }
        for name, ids in rows.items():
            outputs[name] += tokenizer.batch_decode(ids, skip_special_tokens=True)

    references = normalize(tokenizer, targets)
    results = {
        name: {**score(texts, references), "words_per_output": sum(len(t.split()) for t in texts) / len(texts)}
        for name, texts in outputs.items()
    }
    deleted = max(counts["model_deletes"], 1)
    detector = {
        **counts,
        "precision": counts["model_deletes_right"] / deleted,
        "recall": counts["model_deletes_right"] / max(counts["oracle_deletes"], 1),
        "oracle_delete_share": counts["oracle_deletes"] / max(counts["draft_words"], 1),
    }
    gaps = max(counts["gaps"], 1)
    insertion = {
        "oracle_per_gap": counts["oracle_inserts"] / gaps,
        "model_per_gap": counts["model_inserts"] / gaps,
        "gaps_counted_right": counts["gaps_counted_right"] / gaps,
    }
    return {
        "settings": results,
        "deletion_head": detector,
        "insertion_head": insertion,
        "reference_words_per_output": sum(len(t.split()) for t in references) / len(references),
        "outputs": outputs,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a DEER checkpoint directory (with its tokenizer)")
    parser.add_argument("--data_file", required=True, help="JSON lines / CSV / TSV with source and target columns")
    add_data_arguments(parser)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sources, targets = read_inputs(
        args.data_file, args.source_column, args.target_column, args.source_lang, args.target_lang, "validation"
    )
    if targets is None:
        parser.error(f"{args.data_file} has no '{args.target_column}' column: the oracle needs the references")

    model = DeerForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    report = analyse(model, tokenizer, list(sources), list(targets))
    knobs = {name: getattr(model.generation_config, name) for name in model.generation_config.REFINEMENTS["edits"]}
    report = {"model": args.model, "data_file": args.data_file, "pairs": len(sources), "knobs": knobs, **report}
    for name, row in report["settings"].items():
        print(
            f"{name:>26} | BLEU {row['bleu']:6.2f} | chrF {row['chrf']:6.2f} | ROUGE-L {row['rougeL']:6.2f} | "
            f"{row['words_per_output']:5.2f} words"
        )
    detector = report["deletion_head"]
    print(
        f"deletion head at its own threshold: precision {detector['precision']:.2f}, recall "
        f"{detector['recall']:.2f}; the oracle deletes {detector['oracle_delete_share']:.2f} of the draft's "
        f"{detector['draft_words']} words (the precision of deleting at random); with deletion_penalty "
        f"{knobs['deletion_penalty']:g} it deletes {detector['deletes_with_penalty']}; references average "
        f"{report['reference_words_per_output']:.2f} words"
    )
    insertion = report["insertion_head"]
    print(
        f"insertion head on the oracle-kept draft: {insertion['model_per_gap']:.2f} insertions per gap against the "
        f"oracle's {insertion['oracle_per_gap']:.2f}; {insertion['gaps_counted_right']:.2f} of the gaps counted right"
    )
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
