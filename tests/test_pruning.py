import copy
import json
import shutil

import pytest
import torch
from conftest import PAD, random_batch, shortest_real_pairs, tiny_config, tiny_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from modeling_deer import DeerForConditionalGeneration
from modeling_deer.pruning_deer import head_parameter_count, neuron_parameter_count, select_units


LEVELS = (0.25, 0.5, 0.75)


def scored_model(seed=0, **overrides):
    """A tiny model whose pruning scores are random (as after training), so rankings are not decided by ties."""
    model = tiny_model(seed=seed, max_insertions=3, num_hidden_layers=3, **overrides)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for score in model.pruning_scores():
            score.copy_(torch.randn(score.shape, generator=generator))
    return model


def prunable_parameters(model):
    """Parameters actually held by attention heads and FFN neurons (q, k, v, o without o's bias; up, down without
    down's bias)."""
    total = 0
    for layer in model.model.layers:
        attention, ffn = layer.attention, layer.feed_forward
        total += sum(p.numel() for m in (attention.query, attention.key, attention.value) for p in m.parameters())
        total += attention.output.weight.numel() + ffn.up.weight.numel() + ffn.up.bias.numel()
        total += ffn.down.weight.numel()
    return total


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_removes_the_requested_share(level):
    model = scored_model()
    config = model.config
    report = model.set_sparsity(level).sparsity_report()
    head_size = head_parameter_count(config.hidden_size, config.head_dim)
    neuron_size = neuron_parameter_count(config.hidden_size)
    removed_attention = report.original_attention_parameters - report.attention_parameters
    removed_ffn = report.original_ffn_parameters - report.ffn_parameters
    assert abs(removed_attention - level * report.original_attention_parameters) <= head_size
    assert abs(removed_ffn - level * report.original_ffn_parameters) <= neuron_size
    # The report counts what physical pruning really leaves.
    unpruned = prunable_parameters(model)
    pruned = prunable_parameters(copy.deepcopy(model).prune_to(level))
    assert unpruned - pruned == removed_attention + removed_ffn
    assert "attention parameters kept" in str(report)


def test_levels_are_nested_and_ties_are_broken_by_position():
    model = scored_model()
    previous = None
    for level in (0.0, 0.25, 0.5, 0.75):
        heads, neurons = model._select_units(level)
        kept = torch.cat(heads + neurons)
        if previous is not None:
            assert not (kept & ~previous).any()  # every unit kept here was kept at the lower level
        previous = kept
    tied = select_units([torch.zeros(3), torch.zeros(3)], original_total=6, level=0.5)
    assert [keep.tolist() for keep in tied] == [[True, True, True], [False, False, False]]


@pytest.mark.parametrize("level", LEVELS)
def test_masks_and_physical_pruning_agree(level):
    model = scored_model(seed=1)
    source_ids, source_mask = random_batch(4, 12, seed=2)
    target_ids, _ = random_batch(4, 9, seed=3)
    model.set_sparsity(level)
    with torch.no_grad():
        masked_states = model.target_pass(target_ids, model.encode(source_ids, source_mask))
    masked_ids = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    pruned = copy.deepcopy(model).prune_to(level)
    with torch.no_grad():
        pruned_states = pruned.target_pass(target_ids, pruned.encode(source_ids, source_mask))
    real = target_ids != PAD
    assert (masked_states - pruned_states)[real].abs().max() < 1e-5
    assert torch.equal(masked_ids, pruned.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_set_sparsity_zero_restores_the_full_model():
    model = scored_model(seed=2)
    source_ids, source_mask = random_batch(3, 10, seed=4)

    def states():
        with torch.no_grad():
            return model.encode(source_ids, source_mask).last_hidden_state

    full_states = states()
    full_ids = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    model.set_sparsity(0.75)
    assert (states() - full_states)[source_mask].abs().max() > 1e-2
    model.set_sparsity(0.0)
    assert torch.equal(states(), full_states)
    assert torch.equal(model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2), full_ids)


def test_pruned_model_round_trips(tmp_path):
    model = scored_model(seed=3).prune_to(0.5)
    source_ids, source_mask = random_batch(3, 10, seed=5)
    expected = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    model.save_pretrained(tmp_path)
    for loaded in (
        DeerForConditionalGeneration.from_pretrained(tmp_path),
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path),
    ):
        assert loaded.config.layer_num_heads == model.config.layer_num_heads
        assert loaded.config.layer_intermediate_sizes == model.config.layer_intermediate_sizes
        assert loaded.config.pruned_sparsity == 0.5
        assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
        assert torch.equal(
            loaded.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2), expected
        )
    # Surviving scores were saved: the loaded model prunes further exactly like the original.
    further = DeerForConditionalGeneration.from_pretrained(tmp_path).prune_to(0.75)
    assert further.config.layer_num_heads == copy.deepcopy(model).prune_to(0.75).config.layer_num_heads


def test_pruning_a_model_not_trained_for_it_warns(caplog):
    with caplog.at_level("WARNING"):
        tiny_model().prune_to(0.5)
    assert "not trained with pruning levels" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        tiny_model(sparsity_levels=[0.0, 0.5]).set_sparsity(0.5)
        tiny_model().set_sparsity(0.0)
    assert "not trained with pruning levels" not in caplog.text


def test_pruning_only_goes_one_way():
    model = scored_model(seed=4).prune_to(0.5)
    with pytest.raises(ValueError, match=r"prune_to\(0.25\) after prune_to\(0.5\): a pruned model cannot grow back"):
        model.prune_to(0.25)
    with pytest.raises(ValueError, match="cannot grow back"):
        model.set_sparsity(0.0)
    model.prune_to(0.75)
    assert model.config.pruned_sparsity == 0.75
    assert model.sparsity_report().attention_share_kept == pytest.approx(0.25, abs=1 / 12)


def test_a_layer_with_no_head_and_no_neuron_runs(tmp_path):
    model = scored_model(seed=5)
    with torch.no_grad():
        model.model.layers[1].attention.head_scores.fill_(-10.0)
        model.model.layers[1].feed_forward.neuron_scores.fill_(-10.0)
    model.prune_to(0.5)  # 6 of 12 heads and 96 of 192 neurons go: all of layer 1's first
    assert model.config.layer_num_heads[1] == 0 and model.config.layer_intermediate_sizes[1] == 0
    source_ids, source_mask = random_batch(2, 8, seed=6)
    expected = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    labels, _ = random_batch(2, 6, seed=7)
    model.train()
    model(
        input_ids=source_ids, attention_mask=source_mask, labels=labels.masked_fill(labels == PAD, -100)
    ).loss.backward()
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = DeerForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2), expected)


def test_levels_as_numpy_and_torch_scalars_are_the_same_levels():
    import numpy as np

    model = scored_model(seed=4).prune_to(np.float32(0.3))
    assert model.config.pruned_sparsity == 0.3
    model.set_sparsity(0.3)  # not "cannot grow back": float32's 0.30000001 is the level 0.3
    model.set_sparsity(torch.tensor(0.5))
    assert model.sparsity_level == 0.5


@pytest.mark.parametrize("level", [-0.1, 1.0, 1.5, float("nan")])
def test_invalid_levels_raise_value_error(level):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        model.set_sparsity(level)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        model.prune_to(level)


@pytest.mark.parametrize("level", ["0.5", None, True, [0.5]])
def test_non_numeric_levels_raise_type_error(level):
    with pytest.raises(TypeError, match="number"):
        tiny_model().set_sparsity(level)


def test_training_with_levels_reports_the_regulariser_and_trains_the_scores():
    model = tiny_model(sparsity_levels=[0.0, 0.5, 0.75], sparsity_weight=10.0).train()
    source_ids, source_mask = random_batch(3, 10, seed=8)
    labels, _ = random_batch(3, 7, seed=9, min_length=4)
    output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels.masked_fill(labels == PAD, -100))
    assert output.sparsity_loss.item() == pytest.approx(10.0 * 0.5)  # scores start at 0: sigmoid = 0.5
    config = model.config
    components = (
        config.ctc_loss_weight * output.ctc_loss
        + config.insertion_loss_weight * output.insertion_loss
        + config.word_loss_weight * output.word_loss
        + config.deletion_loss_weight * output.deletion_loss
    )
    assert output.loss.item() == pytest.approx((components + output.sparsity_loss).item(), rel=1e-5)
    output.loss.backward()
    for score in model.pruning_scores():
        assert score.grad is not None and score.grad.abs().sum() > 0
    # The step's levels travelled with it: the model's own level is untouched, and a pass without a level has no
    # gates.
    assert model.sparsity_level == 0.0 and model.eval().encode(source_ids, source_mask).gates is None
    # Without levels there is no regulariser.
    assert (
        tiny_model().train()(input_ids=source_ids, labels=labels.masked_fill(labels == PAD, -100)).sparsity_loss
        is None
    )


def test_full_every_step_trains_the_full_size_and_one_smaller_level(monkeypatch):
    """With full_every_step a training step runs the objective twice: at the full size (no unit gated off), then at
    one level drawn from the smaller ones; the loss is the sum of the two (the regulariser once) and the components
    reported are the full size's. Without it, one level per step."""
    source_ids, source_mask = random_batch(3, 10, seed=8)
    labels, _ = random_batch(3, 7, seed=9, min_length=4)
    labels = labels.masked_fill(labels == PAD, -100)

    def step(**overrides):
        model = tiny_model(sparsity_levels=[0.0, 0.5, 0.75], **overrides).train()
        for module in model.modules():  # the two passes comparable to a single one
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        levels, losses = [], []
        deer_loss = model.deer_loss
        level_gates = model.level_gates
        monkeypatch.setattr(
            model, "level_gates", lambda level, **kwargs: levels.append(level) or level_gates(level, **kwargs)
        )

        def recorded(*args, **kwargs):  # each pass's output and its own loss (the step's output gets the sum)
            output = deer_loss(*args, **kwargs)
            losses.append((output, output.loss.item()))
            return output

        monkeypatch.setattr(model, "deer_loss", recorded)
        torch.manual_seed(0)
        output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels)
        return model, output, levels, losses

    for seed in range(4):
        torch.manual_seed(seed)
        model, output, levels, losses = step(full_every_step=True)
        assert levels[0] == 0.0 and levels[1] in (0.5, 0.75) and len(levels) == len(losses) == 2
        (full, full_loss), (smaller, smaller_loss) = losses
        assert full.sparsity_loss is not None and smaller.sparsity_loss is None
        assert output is full and smaller.ctc_loss != full.ctc_loss
        assert output.loss.item() == pytest.approx(full_loss + smaller_loss, rel=1e-6)
        output.loss.backward()
        assert all(score.grad is not None and score.grad.abs().sum() > 0 for score in model.pruning_scores())
    model, output, levels, losses = step()
    assert len(levels) == len(losses) == 1 and levels[0] in (0.0, 0.5, 0.75)
    with pytest.raises(ValueError, match="full_every_step"):
        tiny_config(full_every_step="yes")
    # level_loss_weight weighs the smaller level's loss against the full size's.
    model, output, levels, losses = step(full_every_step=True, level_loss_weight=0.25)
    (full, full_loss), (smaller, smaller_loss) = losses
    assert output.loss.item() == pytest.approx(full_loss + 0.25 * smaller_loss, rel=1e-6)
    with pytest.raises(ValueError, match="level_loss_weight"):
        tiny_config(sparsity_levels=[0.0, 0.5], level_loss_weight=0.5)  # nothing to weigh against


def _step_levels(monkeypatch, levels: list[float], seed: int = 0, **overrides):
    """One training step of a tiny model without dropout: the levels it ran at and each level's own output with its
    own loss (the step's output then carries the sum)."""
    source_ids, source_mask = random_batch(3, 10, seed=8)
    labels, _ = random_batch(3, 7, seed=9, min_length=4)
    labels = labels.masked_fill(labels == PAD, -100)
    model = tiny_model(sparsity_levels=levels, draft_edit_ratio=0.5, **overrides).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ran, outputs = [], []
    level_gates, deer_loss = model.level_gates, model.deer_loss
    monkeypatch.setattr(
        model, "level_gates", lambda level, **kwargs: ran.append(level) or level_gates(level, **kwargs)
    )

    def recorded(*args, **kwargs):
        outputs.append(deer_loss(*args, **kwargs))
        outputs[-1].own_loss = outputs[-1].loss.item()
        return outputs[-1]

    monkeypatch.setattr(model, "deer_loss", recorded)
    torch.manual_seed(seed)
    output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels)
    return model, output, ran, outputs


def test_the_sandwich_rule_trains_the_full_size_the_smallest_level_and_one_between(monkeypatch):
    drawn = set()
    for seed in range(8):
        model, output, ran, outputs = _step_levels(monkeypatch, [0.0, 0.25, 0.5, 0.75], seed, sandwich_rule=True)
        assert ran[:2] == [0.0, 0.75] and ran[2] in (0.25, 0.5) and len(ran) == len(outputs) == 3
        drawn.add(ran[2])
        assert output is outputs[0] and output.distillation_loss is None  # no distillation asked for
        assert output.loss.item() == pytest.approx(sum(o.own_loss for o in outputs), rel=1e-5)
    assert drawn == {0.25, 0.5}
    # Two levels: the full size and the smallest, nothing between.
    torch.manual_seed(0)
    _, _, ran, _ = _step_levels(monkeypatch, [0.0, 0.5], sandwich_rule=True)
    assert ran == [0.0, 0.5]
    with pytest.raises(ValueError, match="sandwich_rule"):
        tiny_config(sandwich_rule=1)


def test_in_place_distillation_reads_the_full_sizes_inputs_and_learns_its_outputs(monkeypatch):
    """A smaller level learns KL(full || level) on the full size's own inputs: a level that removes no unit (the
    same network) gets exactly the full size's losses and no distillation loss; a real level gets a positive one,
    whose gradient reaches the pruning scores. In the CTC-only phase only the frames are distilled."""
    torch.manual_seed(0)
    model, output, ran, outputs = _step_levels(monkeypatch, [0.0, 1e-6], sandwich_rule=True, distillation_weight=1.0)
    full, same = outputs
    assert ran == [0.0, 1e-6]
    for name in ("ctc_loss", "insertion_loss", "word_loss", "deletion_loss"):
        assert getattr(same, name).item() == pytest.approx(getattr(full, name).item(), rel=1e-4)
    assert same.distillation_loss.item() == pytest.approx(0.0, abs=1e-5)
    assert output.distillation_loss.item() == pytest.approx(0.0, abs=1e-5)

    torch.manual_seed(0)
    model, output, ran, outputs = _step_levels(
        monkeypatch, [0.0, 0.5, 0.75], sandwich_rule=True, distillation_weight=2.0
    )
    full, smallest, between = outputs
    assert output is full and smallest.distillation_loss > 0 and between.distillation_loss > 0
    assert output.distillation_loss.item() == pytest.approx(
        smallest.distillation_loss.item() + between.distillation_loss.item(), rel=1e-5
    )
    # Each smaller level's loss: its own four losses, then the distillation term at its weight.
    names = ("ctc_loss", "insertion_loss", "word_loss", "deletion_loss")
    own = sum(getattr(model.config, f"{name}_weight") * getattr(smallest, name).item() for name in names)
    assert smallest.own_loss == pytest.approx(own + 2.0 * smallest.distillation_loss.item(), rel=1e-4)
    output.loss.backward()
    assert all(score.grad is not None and score.grad.abs().sum() > 0 for score in model.pruning_scores())

    # CTC-only phase (edit weights 0): the frames' distributions alone are distilled.
    torch.manual_seed(0)
    _, output, _, outputs = _step_levels(
        monkeypatch,
        [0.0, 0.5],
        full_every_step=True,
        distillation_weight=1.0,
        insertion_loss_weight=0.0,
        word_loss_weight=0.0,
        deletion_loss_weight=0.0,
    )
    assert outputs[1].insertion_loss is None and outputs[1].distillation_loss > 0
    with pytest.raises(ValueError, match="distillation_weight"):
        tiny_config(sparsity_levels=[0.0, 0.5], distillation_weight=1.0)  # no full size on every step to learn from


def test_optimizer_groups_give_the_scores_their_own_learning_rate():
    model = tiny_model()
    groups = model.optimizer_parameter_groups(weight_decay=0.01, score_learning_rate=0.1)
    assert groups[-1]["lr"] == 0.1 and groups[-1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in model.pruning_scores()}
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # every parameter once
    torch.optim.AdamW(groups, lr=1e-3)


def test_short_run_on_real_pairs_lowers_the_loss_at_every_level(tiny_bert_path):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    source, labels = shortest_real_pairs(tokenizer, 16)
    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path, sparsity_levels=[0.0, 0.25, 0.5, 0.75])

    def losses():
        model.eval()
        values = {}
        for level in (0.0,) + LEVELS:
            model.set_sparsity(level)
            torch.manual_seed(1)  # the same random deletions at every evaluation
            with torch.no_grad():
                values[level] = model(
                    input_ids=source.input_ids, attention_mask=source.attention_mask, labels=labels
                ).loss.item()
        model.set_sparsity(0.0)
        return values

    before = losses()
    optimizer = torch.optim.AdamW(model.optimizer_parameter_groups(score_learning_rate=1e-2), lr=1e-3)
    model.train()
    for _ in range(40):
        model(input_ids=source.input_ids, attention_mask=source.attention_mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = losses()
    for level in before:
        assert after[level] < before[level], (level, before, after)


def test_per_call_sparsity_leaves_the_model_alone_and_threads_get_their_own_level():
    from concurrent.futures import ThreadPoolExecutor

    model = scored_model(seed=3, sparsity_levels=[0.0, 0.5])
    source_ids, source_mask = random_batch(3, 9, seed=4)
    expected = {
        level: copy.deepcopy(model)
        .set_sparsity(level)
        .generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
        for level in (0.0, 0.5)
    }
    assert not torch.equal(expected[0.0], expected[0.5])  # the levels really differ
    assert torch.equal(
        model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2, sparsity=0.5), expected[0.5]
    )
    assert model.sparsity_level == 0.0

    def decode(level):
        return model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2, sparsity=level)

    def switch(level):  # another thread moving the model's own level meanwhile
        model.set_sparsity(level)
        return None

    with ThreadPoolExecutor(4) as pool:
        jobs = [(level, pool.submit(decode, level)) for level in (0.0, 0.5) * 10]
        switches = [pool.submit(switch, level) for level in (0.5, 0.0) * 5]
        for level, job in jobs:
            assert torch.equal(job.result(), expected[level])
        for job in switches:
            job.result()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        model.generate(input_ids=source_ids, sparsity=1.5)


def test_two_generate_calls_run_inside_one_model_at_once():
    """Nothing serialises generate: two threads, at two levels, are inside their draft passes at the same time (a
    barrier in the pass that only both together can pass), and each gets its own level's output."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    model = scored_model(seed=3, sparsity_levels=[0.0, 0.5])
    source_ids, source_mask = random_batch(3, 9, seed=4)
    expected = {
        level: model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2, sparsity=level)
        for level in (0.0, 0.5)
    }
    barrier = threading.Barrier(2, timeout=20)
    draft_pass = model.encode_and_target_pass

    def waiting_draft_pass(*args, **kwargs):
        barrier.wait()  # raises BrokenBarrierError if the other call cannot get in meanwhile
        return draft_pass(*args, **kwargs)

    model.encode_and_target_pass = waiting_draft_pass
    try:
        with ThreadPoolExecutor(2) as pool:
            jobs = {
                level: pool.submit(
                    model.generate, input_ids=source_ids, attention_mask=source_mask, max_iterations=2, sparsity=level
                )
                for level in (0.0, 0.5)
            }
            outputs = {level: job.result() for level, job in jobs.items()}
    finally:
        del model.encode_and_target_pass
    assert all(torch.equal(outputs[level], expected[level]) for level in (0.0, 0.5))
    assert not torch.equal(outputs[0.0], outputs[0.5])


def test_loading_keeps_the_pruning_scores_frozen_without_levels(tmp_path):
    """The scores learn only where levels are trained; from_pretrained (and the Auto classes) must not make them
    trainable again, or a user's own loop trains them and DDP waits for their gradients."""
    from transformers import AutoModelForSeq2SeqLM

    for levels in ([], [0.0, 0.5]):
        tiny_model(sparsity_levels=levels).save_pretrained(tmp_path / str(len(levels)))
        for loader in (DeerForConditionalGeneration.from_pretrained, AutoModelForSeq2SeqLM.from_pretrained):
            model = loader(tmp_path / str(len(levels)))
            assert all(score.requires_grad == bool(levels) for score in model.pruning_scores())
    model, info = DeerForConditionalGeneration.from_pretrained(tmp_path / "0", output_loading_info=True)
    assert not any(score.requires_grad for score in model.pruning_scores())


def test_bfloat16_loading_ranks_the_pruning_scores_in_float32(tmp_path):
    """Scores that differ in their last bits (as trained scores do) keep the same units at every level when the
    model loads in bfloat16: they stay float32 (at 8 bits of mantissa they would tie), and the gates take the
    activations' dtype."""
    model = tiny_model(sparsity_levels=[0.0, 0.5])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for scores in model.pruning_scores():
            scores.copy_(1.0 + 1e-3 * torch.rand(scores.shape, generator=generator))
    model.save_pretrained(tmp_path)
    full = DeerForConditionalGeneration.from_pretrained(tmp_path)
    half = DeerForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.model.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert all(scores.dtype == torch.float32 for scores in half.pruning_scores())
    for level in (0.25, 0.5, 0.75):
        for kept_full, kept_half in zip(*(m._select_units(level) for m in (full, half))):
            assert all(torch.equal(a, b) for a, b in zip(kept_full, kept_half))
    source_ids, source_mask = random_batch(2, 8, seed=1)
    ids = half.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=1, sparsity=0.5)
    assert ids.dtype == torch.long


def ranking_batches(count: int = 2) -> list[dict]:
    batches = []
    for seed in range(count):
        source_ids, source_mask = random_batch(3, 10, seed=20 + seed)
        labels, _ = random_batch(3, 7, seed=40 + seed, min_length=4)
        batches.append({"input_ids": source_ids, "attention_mask": source_mask, "labels": labels})
    return batches


def importance_loss(model, batch, gates) -> torch.Tensor:
    torch.manual_seed(5)  # the same glancing draws for every call
    encoder_output = model.encode(batch["input_ids"], batch["attention_mask"], gates)
    return model.deer_loss(batch["input_ids"], batch["attention_mask"], encoder_output, batch["labels"]).loss


def test_ranking_by_importance_scores_each_unit_by_how_much_the_loss_needs_it():
    model = tiny_model(sparsity_levels=[0.0, 0.25, 0.5, 0.75], level_ranking="importance")
    head_dim = model.config.head_dim
    with torch.no_grad():  # layer 0's head 1 writes nothing: switching it off cannot change the loss
        model.model.layers[0].attention.output.weight[:, head_dim : 2 * head_dim] = 0
    batch = ranking_batches(1)[0]
    torch.manual_seed(5)
    assert model.rank_units([batch]) == 1 and model.config.units_ranked
    head_scores = [layer.attention.head_scores for layer in model.model.layers]
    flat = torch.cat([score.detach() for score in head_scores])
    assert flat[1] == 0 and (flat[torch.arange(8) != 1] > 0).all()
    # The first head any level drops is the one the loss does not need (8 heads: level 0.25 keeps 6; by position
    # alone it would drop two of layer 1's).
    assert not select_units(head_scores, 8, 0.25)[0][1]
    # Each score is |dL/dgate|: the loss's first-order change when the unit is switched off, checked by finite
    # differences on a layer-0 head and a layer-1 neuron.
    ones = [(torch.ones(4), torch.ones(64)), (torch.ones(4), torch.ones(64))]
    base = importance_loss(model, batch, ones).item()
    for layer, kind, unit, score in (
        (0, 0, 2, head_scores[0][2]),
        (1, 1, 7, model.model.layers[1].feed_forward.neuron_scores[7]),
    ):
        gates = [list(pair) for pair in ones]
        gates[layer][kind] = gates[layer][kind].clone()
        gates[layer][kind][unit] = 1 - 1e-2
        nudged = importance_loss(model, batch, tuple(tuple(pair) for pair in gates)).item()
        assert abs(base - nudged) / 1e-2 == pytest.approx(score.item(), rel=0.05, abs=1e-4)


def test_ranked_scores_stay_fixed_through_training_saving_and_loading(tmp_path):
    model = tiny_model(sparsity_levels=[0.0, 0.5, 0.75], level_ranking="importance", full_every_step=True).train()
    batch = ranking_batches(1)[0]
    labels = batch["labels"].masked_fill(batch["labels"] == PAD, -100)
    with pytest.raises(ValueError, match="rank the units before training"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    model.rank_units(ranking_batches(2))
    assert model.training  # rank_units measures without dropout and gives the model back as it was
    scores = [score.detach().clone() for score in model.pruning_scores()]
    assert not any(score.requires_grad for score in model.pruning_scores())
    groups = model.optimizer_parameter_groups(score_learning_rate=0.1)
    assert not any(p.requires_grad for p in groups[-1]["params"])  # the trainer leaves such a group out
    output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    assert output.sparsity_loss is None  # no regulariser: nothing to pull the scores down
    output.loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert all(torch.equal(before, after) for before, after in zip(scores, model.pruning_scores()))
    assert model.rank_units(ranking_batches(1)) == 0  # ranked once: left alone unless forced
    model.save_pretrained(tmp_path)
    loaded = DeerForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.level_ranking == "importance" and loaded.config.units_ranked
    assert all(torch.equal(before, after) for before, after in zip(scores, loaded.pruning_scores()))
    assert not any(score.requires_grad for score in loaded.pruning_scores())
    assert loaded.rank_units(ranking_batches(1), force=True) == 1
    with pytest.raises(ValueError, match="level_ranking"):
        tiny_config(level_ranking="magnitude")


def test_the_level_units_report_lists_what_each_level_keeps(tmp_path):
    from experiments import level_units

    model = tiny_model(sparsity_levels=[0.0, 0.5, 0.75], level_ranking="importance")
    model.rank_units(ranking_batches(1))
    model.save_pretrained(tmp_path / "run")
    validation = {"0": 20.0, "0.5": 17.0, "0.75": 15.0}
    dial = {"levels": {"seeds": [{"run": str(tmp_path / "run"), "seed": 0, "validation": validation}]}}
    (tmp_path / "dial.json").write_text(json.dumps(dial))
    output = str(tmp_path / "units")
    level_units.main(["--dial", str(tmp_path / "dial.json"), "--keys", "levels", "--output", output])
    entry = json.loads((tmp_path / "units.json").read_text())["entries"]["levels"][0]
    assert entry["level_ranking"] == "importance" and entry["validation"] == validation
    for level in validation:
        assert entry["levels"][level]["heads"] == model.sparsity_report(float(level)).heads_per_layer
    assert "| levels | 0 | importance | 0.75 |" in (tmp_path / "units.md").read_text()
    with pytest.raises(SystemExit):
        level_units.main(["--dial", str(tmp_path / "dial.json"), "--keys", "rounds", "--output", output])
    # A run folder that is gone keeps the units the earlier report recorded; with no record, it is an error.
    first = (tmp_path / "units.json").read_text()
    shutil.rmtree(tmp_path / "run")
    level_units.main(["--dial", str(tmp_path / "dial.json"), "--keys", "levels", "--output", output])
    assert (tmp_path / "units.json").read_text() == first
    (tmp_path / "units.json").unlink()
    with pytest.raises(SystemExit):
        level_units.main(["--dial", str(tmp_path / "dial.json"), "--keys", "levels", "--output", output])
