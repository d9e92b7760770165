"""Offline metrics, used by every script that scores outputs.

Normalisation (the same everywhere): a reference is passed through the model's tokenizer and decoded back, i.e.
written the way the model can write it. For the uncased backbones here that lowercases, strips accents and applies
WordPiece's spacing around punctuation; the model's own outputs are decoded the same way. Scores are therefore
case-insensitive and not comparable to cased results.
"""

import os

import evaluate


METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


def load_metric(name: str):
    """A local evaluate module: "bleu_chrf" or "rouge_l"."""
    return evaluate.load(os.path.join(METRICS_DIR, name))


def normalize(tokenizer, texts: list[str]) -> list[str]:
    """Texts as the model's tokenizer writes them (tokenised and decoded back)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """BLEU, chrF and ROUGE-L (0-100) of decoded predictions against normalised references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references.")
    if not predictions:
        raise ValueError("nothing to score: no predictions.")
    results = load_metric("bleu_chrf").compute(predictions=predictions, references=references)
    results.update(load_metric("rouge_l").compute(predictions=predictions, references=references))
    return results
