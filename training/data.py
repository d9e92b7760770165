"""Tokenising (source, target) pairs for DEER and batching them for the Trainer."""

from dataclasses import dataclass

import torch


def tokenize_pairs(tokenizer, pairs, max_source_length: int, max_target_length: int) -> list[dict]:
    """Each pair -> {"input_ids": [cls ... sep], "labels": [cls ... sep]} (lists of ids), truncated."""
    sources = tokenizer([pair["source"] for pair in pairs], truncation=True, max_length=max_source_length,
                        split_special_tokens=True)  # a literal "[SEP]" in user text is text, not a control token
    targets = tokenizer([pair["target"] for pair in pairs], truncation=True, max_length=max_target_length,
                        split_special_tokens=True)
    return [
        {"input_ids": source, "labels": target}
        for source, target in zip(sources["input_ids"], targets["input_ids"])
    ]


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
