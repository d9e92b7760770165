"""Behaviour pinned across refactorings: a generation, a training step and a pruned model's generation, for fixed
seeds, against outputs stored in tests/fixtures/reference_outputs.json by the code before the change.

Ids must match exactly. Losses and weight sums must match to 1e-6 (relative, or absolute for sums near zero such as
the key biases, which attention ignores): run alone on one machine they are bit-identical, and the tolerance only
absorbs another thread count's or CPU's float summation order. After a change that is meant to alter the
numbers, regenerate the file with `python tests/test_reference_outputs.py` and say why in the commit.
"""

import json
import os
import sys

import pytest
import torch


sys.path.insert(0, os.path.dirname(__file__))
from conftest import FIXTURES, random_batch, tiny_model  # noqa: E402


REFERENCE = os.path.join(FIXTURES, "reference_outputs.json")


def generations() -> dict:
    """Full-size and pruned generations of a tiny random model, at 0, 1 and 3 rounds, with and without a cap."""
    model = tiny_model(seed=3, sparsity_levels=[0.0, 0.5])
    with torch.no_grad():
        generator = torch.Generator().manual_seed(4)
        for scores in model.pruning_scores():
            scores.copy_(torch.randn(scores.shape, generator=generator))
        model.insertion_head.bias[3:] = -4.0  # mostly short insertions: rounds that delete and insert a little
    input_ids, attention_mask = random_batch(5, 12, seed=5)
    out = {}
    for rounds in (0, 1, 3):
        out[f"full_{rounds}"] = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                               max_iterations=rounds).tolist()
    out["capped_2"] = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_iterations=2,
                                     max_new_tokens=6).tolist()
    out["level_0.5_2"] = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_iterations=2,
                                        sparsity=0.5).tolist()
    model.prune_to(0.5)
    out["pruned_2"] = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_iterations=2).tolist()
    out["pruned_parameters"] = sum(p.numel() for p in model.parameters())
    return out


def training_step() -> dict:
    """Loss components of one step and the weights after one AdamW step, with pruning levels and glancing."""
    model = tiny_model(seed=6, sparsity_levels=[0.0, 0.5], draft_edit_ratio=0.5).train()
    input_ids, attention_mask = random_batch(4, 10, seed=7)
    labels, _ = random_batch(4, 8, seed=8)
    labels = labels.masked_fill(labels == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(9)
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    output.loss.backward()
    optimizer.step()
    losses = {name: float(getattr(output, name).detach()) for name in
              ("loss", "ctc_loss", "insertion_loss", "word_loss", "deletion_loss", "sparsity_loss")
              if getattr(output, name) is not None}
    return {"losses": losses,
            "weight_sums": {name: float(p.detach().double().sum()) for name, p in model.named_parameters()}}


def current() -> dict:
    return {"generations": generations(), "training_step": training_step()}


@pytest.fixture(scope="module")
def stored() -> dict:
    with open(REFERENCE) as handle:
        return json.load(handle)


def test_generations_match_the_stored_ones(stored):
    assert generations() == stored["generations"]


def test_a_training_step_matches_the_stored_one(stored):
    step = training_step()
    for group in ("losses", "weight_sums"):
        assert step[group].keys() == stored["training_step"][group].keys()
        for name, value in stored["training_step"][group].items():
            assert step[group][name] == pytest.approx(value, rel=1e-6, abs=1e-6), f"{group} {name}"


if __name__ == "__main__":
    with open(REFERENCE, "w") as handle:
        json.dump(current(), handle, indent=1)
    print(f"wrote {REFERENCE}")
