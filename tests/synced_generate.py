"""Run by tests/test_generation.py under `torchrun --nproc_per_node 2` (gloo, CPU): the same tiny DEER on each
process, each decoding its own rows (process 0 a source with no words, whose output is final after the draft;
process 1 real sources, which change for several rounds), with and without `synced_gpus`. Each process writes the
backbone passes it ran and its outputs to OUTPUT_DIR/rank-N.json.

    torchrun --nproc_per_node 2 tests/synced_generate.py OUTPUT_DIR edits|redraft
"""

import json
import os
import sys

import torch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import BOS, EOS, PAD, random_batch, tiny_model  # noqa: E402


def rows(rank: int):
    if rank == 0:  # no words: nothing to refine
        return torch.tensor([[BOS, EOS, PAD]]), torch.tensor([[True, True, False]])
    return random_batch(3, 9, seed=10)


def main(output_dir: str, refinement: str):
    import torch.distributed as distributed

    distributed.init_process_group("gloo")
    rank = distributed.get_rank()
    model = tiny_model(seed=9, max_insertions=3, redraft_ratio=0.5).eval()
    passes = []
    for name in ("encode_and_target_pass", "target_pass"):
        method = getattr(model, name)
        setattr(
            model,
            name,
            lambda *args, _method=method, _name=name, **kwargs: passes.append(_name) or _method(*args, **kwargs),
        )
    source_ids, source_mask = rows(rank)
    record = {}
    for synced in (False, True):
        passes.clear()
        output = model.generate(
            source_ids, attention_mask=source_mask, max_iterations=4, refinement=refinement, synced_gpus=synced
        )
        record[str(synced)] = {"passes": len(passes), "output": output.tolist()}
    with open(os.path.join(output_dir, f"rank-{rank}.json"), "w") as handle:
        json.dump(record, handle)
    distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
