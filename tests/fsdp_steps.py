"""Run by tests/test_training_scripts.py under `torchrun --nproc_per_node 2` (gloo, CPU), or imported for the
one-process reference: a tiny DEER with pruning levels sharded by FSDP2 (`fully_shard` on the whole model, and with
`layers` on each layer first), three optimizer steps on a fixed batch of 8 rows split between the processes, then
the full weights gathered and saved by the first process. The steps are deterministic (no glancing, CTC only, the
levels fixed by `full_every_step`), so the one-process run over all 8 rows must log the same losses and end at the
same weights.

    torchrun --nproc_per_node 2 tests/fsdp_steps.py OUTPUT_DIR whole|layers|layers-no-levels

`layers-no-levels`: each layer wrapped, on a model without pruning levels.
"""

import json
import os
import sys

import torch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import PAD, random_batch, tiny_model  # noqa: E402


STEPS = 3


def batch() -> dict:
    source_ids, source_mask = random_batch(8, 10, seed=8, min_length=9)  # every target fits its frames
    labels, _ = random_batch(8, 7, seed=9, min_length=4)
    return {"input_ids": source_ids, "attention_mask": source_mask, "labels": labels.masked_fill(labels == PAD, -100)}


def model(levels: bool = True):
    pruning = {"sparsity_levels": [0.0, 0.5], "full_every_step": True} if levels else {}
    return tiny_model(seed=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **pruning).train()


def train(deer, rows: dict) -> list[float]:
    optimizer = torch.optim.SGD(deer.parameters(), lr=1e-3)  # (AdamW would amplify rounding where gradients are ~0)
    losses = []
    for _ in range(STEPS):
        loss = deer(**rows, glancing_ratio=0.0, ctc_only=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def main(output_dir: str, wrap: str):
    import torch.distributed as distributed
    from torch.distributed.fsdp import fully_shard

    distributed.init_process_group("gloo")
    rank, world = distributed.get_rank(), distributed.get_world_size()
    levels = wrap != "layers-no-levels"
    deer = model(levels)
    if wrap.startswith("layers"):
        for layer in deer.model.layers:
            fully_shard(layer)
    fully_shard(deer)
    rows = {name: values[rank::world] for name, values in batch().items()}
    losses = torch.stack(train(deer, rows))
    distributed.all_reduce(losses)  # each process's mean over its rows; equal shares: their mean is the batch's
    full = {
        name: value.full_tensor() if hasattr(value, "full_tensor") else value
        for name, value in deer.state_dict().items()
    }
    if rank == 0:
        reference = model(levels)
        reference.load_state_dict(full)
        reference.save_pretrained(output_dir)
        with open(os.path.join(output_dir, "losses.json"), "w") as handle:
            json.dump((losses / world).tolist(), handle)
    distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
