"""DEER on an accelerator: the same ids as the CPU in float32, sane half precision, training steps, pruning,
trimming, save/load and compiled passes on the device, and clear errors instead of device-side asserts.

Marked `gpu` and skipped without CUDA. `DEER_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py` runs them on the CPU
(the comparisons are then CPU against CPU), so the tests themselves are checked where no GPU is.
"""

import difflib
import os

import pytest
import torch
from conftest import random_batch, tiny_model
from transformers import AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from modeling_deer.modeling_deer import LENGTH_BUCKETS


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "checkpoints", "bible-de-en", "deer")  # a trained model that travels with the tree
DEVICE = os.environ.get("DEER_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE is None, reason="no CUDA device (DEER_TEST_DEVICE=cpu runs these tests on the CPU)"),
]
VERSES = [
    "Im Anfang war das Wort, und das Wort war bei Gott, und das Wort war Gott.",
    "Dieses war im Anfang bei Gott.",
    "Alles ward durch dasselbe, und ohne dasselbe ward auch nicht eines, das geworden ist.",
    "In ihm war Leben, und das Leben war das Licht der Menschen.",
    "Und das Licht scheint in der Finsternis, und die Finsternis hat es nicht erfaßt.",
    "Da war ein Mensch, von Gott gesandt, sein Name Johannes.",
    "Jesus weinte.",
    "Und das Wort ward Fleisch und wohnte unter uns.",
]


@pytest.fixture(scope="module")
def shipped():
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    batch = tokenizer(VERSES, return_tensors="pt", padding=True)
    return DeerForConditionalGeneration.from_pretrained(SHIPPED).eval(), tokenizer, batch


def on(batch, device):
    return {key: value.to(device) for key, value in batch.items() if key != "token_type_ids"}


def token_agreement(first: torch.Tensor, second: torch.Tensor) -> float:
    """How alike two batches of outputs are, row by row, averaged: the share of tokens the two rows have in common in
    order (difflib's ratio over the non-pad tokens), so that one word merged or inserted differently counts once, not
    at every position after it."""
    ratios = [
        difflib.SequenceMatcher(None, [t for t in a.tolist() if t], [t for t in b.tolist() if t]).ratio()
        for a, b in zip(first.cpu(), second.cpu())
    ]
    return sum(ratios) / len(ratios)


def test_generate_on_the_device_gives_the_cpus_ids_in_float32(shipped):
    model, _, batch = shipped
    on_device = DeerForConditionalGeneration.from_pretrained(SHIPPED).eval().to(DEVICE)
    for iterations in (0, 2, 4):
        expected = model.generate(**on(batch, "cpu"), max_iterations=iterations)
        got = on_device.generate(**on(batch, DEVICE), max_iterations=iterations)
        assert got.device.type == torch.device(DEVICE).type
        assert torch.equal(got.cpu(), expected), f"{iterations} rounds: {token_agreement(got, expected):.3f} agree"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_generation_is_finite_and_agrees_with_float32(shipped, dtype):
    model, _, batch = shipped
    reference = model.generate(**on(batch, "cpu"), max_iterations=2)
    half = DeerForConditionalGeneration.from_pretrained(SHIPPED, dtype=dtype).eval().to(DEVICE)
    assert half.lm_head.decoder.weight.dtype == dtype
    inputs = on(batch, DEVICE)
    with torch.no_grad():
        encoder_output = half.encode(inputs["input_ids"], inputs["attention_mask"].bool())
        draft = half.draft_canvas(inputs["input_ids"], inputs["attention_mask"].bool())
        frames = half.target_pass(draft, encoder_output)[:, 1:-1]
        assert torch.isfinite(half.draft_logits(frames).float().log_softmax(-1)).all()
    got = half.generate(**inputs, max_iterations=2)
    assert token_agreement(got, reference) >= 0.95


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_a_training_step_has_finite_losses_and_gradients(shipped, autocast):
    _, tokenizer, batch = shipped
    model = DeerForConditionalGeneration.from_pretrained(SHIPPED).to(DEVICE).train()
    labels = tokenizer(VERSES[::-1], return_tensors="pt", padding=True).input_ids
    labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100).to(DEVICE)
    device_type = torch.device(DEVICE).type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        output = model(**on(batch, DEVICE), labels=labels)
    for name in ("loss", "ctc_loss", "insertion_loss", "word_loss", "deletion_loss"):
        assert torch.isfinite(getattr(output, name)), name
    output.loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)


def test_prune_trim_save_load_on_the_device(tmp_path):
    cpu_model = tiny_model(sparsity_levels=[0.0, 0.5], unk_token_id=4)
    model = tiny_model(sparsity_levels=[0.0, 0.5], unk_token_id=4).to(DEVICE)
    source, mask = random_batch(6, 9, seed=3)
    for each in (cpu_model, model):
        each.trim_vocabulary(list(range(4, 30))).prune_to(0.5)
    assert model.lm_head.decoder.weight.device.type == torch.device(DEVICE).type
    expected = cpu_model.generate(input_ids=source, attention_mask=mask, max_iterations=2)
    got = model.generate(input_ids=source.to(DEVICE), attention_mask=mask.to(DEVICE), max_iterations=2)
    assert torch.equal(got.cpu(), expected)
    model.save_pretrained(tmp_path / "pruned")
    loaded = DeerForConditionalGeneration.from_pretrained(tmp_path / "pruned").to(DEVICE).eval()
    assert loaded.config.layer_num_heads == model.config.layer_num_heads
    assert torch.equal(
        loaded.generate(input_ids=source.to(DEVICE), attention_mask=mask.to(DEVICE), max_iterations=2).cpu(), expected
    )


def test_compiled_passes_match_eager_on_the_device(shipped):
    model, _, batch = shipped
    eager = DeerForConditionalGeneration.from_pretrained(SHIPPED).eval().to(DEVICE)
    compiled = DeerForConditionalGeneration.from_pretrained(SHIPPED).eval().to(DEVICE).compile_passes()
    inputs = on(batch, DEVICE)
    for iterations in (0, 2):
        expected = eager.generate(**inputs, max_iterations=iterations)
        got = compiled.generate(**inputs, max_iterations=iterations)
        assert token_agreement(got, expected) >= 0.99


def test_bucketed_cuda_graph_passes_match_eager_on_the_device(shipped):
    """compile_passes(buckets=LENGTH_BUCKETS, mode="reduce-overhead"): on CUDA each bucket's graph is captured once
    and replayed; the outputs are the eager ones (pads masked out), at one row and at the whole batch."""
    _, _, batch = shipped
    eager = DeerForConditionalGeneration.from_pretrained(SHIPPED).eval().to(DEVICE)
    graphs = DeerForConditionalGeneration.from_pretrained(SHIPPED).eval().to(DEVICE)
    graphs.compile_passes(buckets=LENGTH_BUCKETS, mode="reduce-overhead")
    inputs = on(batch, DEVICE)
    for rows in (slice(0, 1), slice(None)):
        part = {name: value[rows] for name, value in inputs.items()}
        for iterations in (0, 2):
            expected = eager.generate(**part, max_iterations=iterations)
            for _ in range(2):  # the second call replays what the first captured
                assert token_agreement(graphs.generate(**part, max_iterations=iterations), expected) >= 0.99


def test_out_of_vocabulary_ids_give_a_clear_error_not_a_device_assert(shipped):
    _, tokenizer, batch = shipped
    model = DeerForConditionalGeneration.from_pretrained(SHIPPED).to(DEVICE)
    inputs = on(batch, DEVICE)
    labels = tokenizer(VERSES, return_tensors="pt", padding=True).input_ids.to(DEVICE)
    labels[0, 1] = model.config.vocab_size + 5
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(**inputs, labels=labels)
    bad_source = inputs["input_ids"].clone()
    bad_source[0, 1] = model.config.vocab_size
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(input_ids=bad_source, attention_mask=inputs["attention_mask"])
    # The device is still usable afterwards (a device-side assert would poison it).
    assert model.generate(**inputs, max_iterations=0).shape[0] == len(VERSES)


def test_the_scale_out_paths_on_the_device(shipped, monkeypatch):
    """What the CPU tests prove with gloo, on the device: the time limit's flag is created on the training device (an
    NCCL group refuses CPU tensors); a process decodes on its local rank's GPU, made current; a bfloat16 load keeps
    the pruning scores float32 there and generates at every level."""
    from types import SimpleNamespace

    from training.decoding import process_device
    from training.trainer import TimeLimitCallback

    reduced = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, op=None: reduced.append(tensor.device))
    args = SimpleNamespace(device=torch.device(DEVICE), save_strategy="no")
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    callback = TimeLimitCallback(0)
    callback.on_train_begin(args, None, control)
    callback.on_step_end(args, SimpleNamespace(global_step=1), control)
    assert reduced == [args.device] and control.should_training_stop
    if DEVICE.startswith("cuda"):
        monkeypatch.setenv("LOCAL_RANK", "0")
        assert process_device() == "cuda:0" and torch.cuda.current_device() == 0
    half = DeerForConditionalGeneration.from_pretrained(SHIPPED, dtype=torch.bfloat16).eval().to(DEVICE)
    assert all(scores.dtype == torch.float32 for scores in half.pruning_scores())
    _, _, batch = shipped
    for level in (0.0, 0.25, 0.5, 0.75):
        ids = half.generate(**on(batch, DEVICE), max_iterations=1, sparsity=level)
        assert ids.shape[0] == batch["input_ids"].shape[0]


def test_the_trainer_trains_a_model_with_levels_under_fsdp_on_the_device(tmp_path):
    """`deer-train --fsdp` with the whole model as one unit (NO_WRAP; per-layer wrapping is refused for a model
    with levels), launched by torchrun: the shipped checkpoint trains 3 steps under the Trainer's FSDP2 (on the CPU
    the Trainer falls back to DDP; FSDP itself is tested there by tests/fsdp_steps.py), with finite losses, saves, and
    the saved model decodes. One process: the lent machines have one GPU, and NCCL needs one per process."""
    import json
    import subprocess
    import sys

    pytest.importorskip("datasets")
    pytest.importorskip("accelerate")
    from conftest import FIXTURES

    fsdp_config = tmp_path / "fsdp.json"
    fsdp_config.write_text(json.dumps({"auto_wrap_policy": "NO_WRAP"}))
    output = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "training.train",
        "--model_name_or_path", SHIPPED, "--train_file", os.path.join(FIXTURES, "bible-de-en.train.jsonl"),
        "--output_dir", str(output), "--max_steps", "3", "--per_device_train_batch_size", "4",
        "--max_source_length", "32", "--max_target_length", "32", "--ctc_only_steps", "1", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--tune_decoding", "none", "--disable_tqdm", "true",
        "--fsdp", "--fsdp_config", str(fsdp_config), *(["--use_cpu"] if DEVICE == "cpu" else []),
    ]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 3 and len(losses) == 3 and all(loss == loss and abs(loss) < 1e6 for loss in losses)
    model = DeerForConditionalGeneration.from_pretrained(output).eval().to(DEVICE)
    assert model.config.sparsity_levels == [0.0, 0.25, 0.5, 0.75]
    tokenizer = AutoTokenizer.from_pretrained(output)
    batch = tokenizer(VERSES[:2], return_tensors="pt", padding=True)
    assert model.generate(**on(batch, DEVICE), max_iterations=1, sparsity=0.5).shape[0] == 2
