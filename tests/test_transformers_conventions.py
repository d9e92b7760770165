"""What a transformers model does that DEER must do too (transformers' common model tests check the same things;
`make test-transformers` runs those): gradient checkpointing, hidden states and attention weights, tuples with
`return_dict=False`, `attn_implementation`, any `GenerationConfig` at load, weights without a folder, a compiled
training step, and no trained parameter without a gradient."""

import json
import logging
from unittest import mock

import pytest
import torch
from conftest import PAD, random_batch, tiny_model
from transformers import GenerationConfig

from modeling_deer import DeerForConditionalGeneration, DeerModel
from modeling_deer.generation_deer import DeerGenerationConfig


def training_batch(seed: int = 5):
    source_ids, source_mask = random_batch(4, 10, seed=seed)
    labels, _ = random_batch(4, 7, seed=seed + 1, min_length=4)
    return {"input_ids": source_ids, "attention_mask": source_mask, "labels": labels.masked_fill(labels == PAD, -100)}


def step(model, batch, seed: int = 0):
    """One training step's loss and gradients (the objective's random draws from `seed`)."""
    model.zero_grad()
    torch.manual_seed(seed)
    loss = model(**batch).loss
    loss.backward()
    grads = {name.removeprefix("_orig_mod."): p.grad for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), {name: grad.clone() for name, grad in grads.items()}


# No dropout, so that a recomputed layer is the same layer.
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("levels", [[], [0.0, 0.5]])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(use_reentrant, levels):
    model = tiny_model(sparsity_levels=levels, **NO_DROPOUT).train()
    batch = training_batch()
    loss, grads = step(model, batch)
    calls = []
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    checkpointing = model.model.layers[0]._gradient_checkpointing_func
    for layer in model.model.layers:  # count the layer calls that go through checkpointing
        layer._gradient_checkpointing_func = lambda *args, **kwargs: calls.append(1) or checkpointing(*args, **kwargs)
    checkpointed_loss, checkpointed_grads = step(model, batch)
    assert model.is_activation_checkpointing
    # The encode and every target pass of the objective (the draft, the deletion and the insertion passes), per layer.
    assert len(calls) >= 4 * len(model.model.layers)
    torch.testing.assert_close(checkpointed_loss, loss)
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing


def test_gradient_checkpointing_leaves_generation_alone():
    model = tiny_model()
    source_ids, source_mask = random_batch(3, 9, seed=2)
    expected = model.generate(source_ids, attention_mask=source_mask, max_iterations=2)
    model.activation_checkpointing_enable()
    torch.testing.assert_close(model.generate(source_ids, attention_mask=source_mask, max_iterations=2), expected)


def test_hidden_states_attentions_and_tuples_are_returned_when_asked():
    model = tiny_model()
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    batch = training_batch()
    source_length = batch["input_ids"].shape[1]
    with torch.no_grad():
        plain = model(**batch)
        output = model(**batch, output_hidden_states=True, output_attentions=True)
        as_tuple = model(**batch, return_dict=False)
    assert plain.hidden_states is None and plain.attentions is None and plain.decoder_attentions is None
    torch.testing.assert_close(output.loss, plain.loss)
    assert len(output.hidden_states) == layers + 1 and len(output.attentions) == layers
    torch.testing.assert_close(output.hidden_states[-1], output.encoder_last_hidden_state)
    assert output.attentions[0].shape == (4, heads, source_length, source_length)
    # Each query's weights sum to 1 over the keys it may see; padding keys get none.
    torch.testing.assert_close(output.attentions[1].sum(-1), torch.ones(4, heads, source_length))
    assert output.attentions[0][~batch["attention_mask"][:, None, None, :].expand_as(output.attentions[0])].max() == 0
    # The draft pass that the CTC loss reads: over [source ; canvas].
    assert len(output.decoder_hidden_states) == layers + 1 and len(output.decoder_attentions) == layers
    canvas_length = output.decoder_hidden_states[0].shape[1]
    assert output.decoder_attentions[0].shape == (4, heads, canvas_length, source_length + canvas_length)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], plain.loss)
    # The config's flags are the defaults, as in transformers; the backbone alone too.
    model.config.output_hidden_states = True
    with torch.no_grad():
        assert len(model(input_ids=batch["input_ids"]).hidden_states) == layers + 1
        backbone = model.model(batch["input_ids"], output_attentions=True, return_dict=False)
    assert isinstance(model.model, DeerModel) and isinstance(backbone, tuple)
    torch.testing.assert_close(backbone[0], output.encoder_last_hidden_state)


def test_eager_and_sdpa_attention_give_the_same_outputs(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    batch = training_batch()
    source_ids, source_mask = random_batch(3, 9, seed=2)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = DeerForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert model.config._attn_implementation == implementation
        sdpa = torch.nn.functional.scaled_dot_product_attention
        calls = []
        with (
            mock.patch.object(
                torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k)
            ),
            torch.no_grad(),
        ):
            loss = model(**batch).loss
            generated = model.generate(source_ids, attention_mask=source_mask, max_iterations=2)
        assert bool(calls) == (implementation == "sdpa")
        outputs[implementation] = loss, generated
    torch.testing.assert_close(outputs["eager"][0], outputs["sdpa"][0])
    assert torch.equal(outputs["eager"][1], outputs["sdpa"][1])


def test_any_generation_config_at_load_gives_deers_fields_and_names_the_others(tmp_path, caplog):
    tiny_model().save_pretrained(tmp_path)
    stock = GenerationConfig(num_beams=4, do_sample=True, max_iterations=3, eos_penalty=1.5)
    with caplog.at_level(logging.WARNING, logger="modeling_deer"):
        model = DeerForConditionalGeneration.from_pretrained(tmp_path, generation_config=stock)
    settings = model.generation_config
    assert (settings.max_iterations, settings.eos_penalty) == (3, 1.5)
    assert settings.eos_token_id == model.config.eos_token_id and settings.num_beams is None
    warnings = [record.getMessage() for record in caplog.records if "ignores" in record.getMessage()]
    assert len(warnings) == 1 and "do_sample" in warnings[0] and "num_beams" in warnings[0]
    assert "max_iterations" not in warnings[0]
    # DEER's own config is taken as it is, with no warning.
    caplog.clear()
    own = model.generation_config.__class__(max_iterations=1)
    with caplog.at_level(logging.WARNING, logger="modeling_deer"):
        assert DeerForConditionalGeneration.from_pretrained(tmp_path, generation_config=own).generation_config == own
    assert "ignores" not in caplog.text


def test_deers_generation_config_is_a_full_generation_config(tmp_path):
    """Generic tools read any GenerationConfig attribute: DEER's has them all (the autoregressive ones unset), and
    saves only its own fields and the ones it shares."""
    settings = tiny_model().generation_config.updated(max_iterations=2, max_new_tokens=7)
    for name, value in vars(GenerationConfig()).items():
        if name not in DeerGenerationConfig.SHARED and not name.startswith("_") and name != "transformers_version":
            assert getattr(settings, name) == value, name
    assert settings.get_generation_mode().name == "GREEDY_SEARCH"
    settings.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    metadata = {"transformers_version", "_from_model_config"}
    assert set(saved) <= {*DeerGenerationConfig.DEFAULTS, *DeerGenerationConfig.SHARED, *metadata}
    assert (saved["max_iterations"], saved["max_new_tokens"]) == (2, 7)
    assert DeerGenerationConfig.from_pretrained(tmp_path) == settings
    # to_dict() writes every field, the unset ones too (as processes share a config): it reads back the same
    assert DeerGenerationConfig.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="unknown options \\['num_beams'\\]"):
        DeerGenerationConfig(num_beams=4)
    with pytest.raises(ValueError, match="unknown options \\['num_beams'\\]"):
        DeerGenerationConfig.from_dict({**settings.to_dict(), "num_beams": 4})


def test_weights_without_a_folder_load():
    model = tiny_model()
    loaded = DeerForConditionalGeneration.from_pretrained(None, config=model.config, state_dict=model.state_dict())
    loaded.eval()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    source_ids, source_mask = random_batch(3, 9, seed=2)
    assert torch.equal(
        loaded.generate(source_ids, attention_mask=source_mask), model.generate(source_ids, attention_mask=source_mask)
    )


@pytest.mark.parametrize("levels", [[], [0.0, 0.5]])
def test_every_trained_parameter_gets_a_gradient(levels):
    model = tiny_model(sparsity_levels=levels, **NO_DROPOUT).train()
    _, grads = step(model, training_batch())
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trained == set(grads)
    scores = {name for name, _ in model.named_parameters() if name.endswith("_scores")}
    assert bool(scores & trained) == bool(levels)
    # prune_to keeps the scores as they were (trained or frozen).
    if levels:
        model.prune_to(0.5)
        assert all(scores.requires_grad for scores in model.pruning_scores())
    else:
        assert all(not scores.requires_grad for scores in tiny_model().pruning_scores())


# torch's tracer reads `.grad` of every tensor it meets, which warns on non-leaf tensors: its warning, not ours.
compile_warnings = pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")


def compiled_step_matches_eager(model, shapes, **compile_options):
    compiled = torch.compile(model, **compile_options)
    for batch_size, source_length, target_length in shapes:
        source_ids, source_mask = random_batch(batch_size, source_length, seed=source_length)
        labels, _ = random_batch(batch_size, target_length, seed=target_length, min_length=4)
        labels = labels.masked_fill(labels == PAD, -100)
        batch = {"input_ids": source_ids, "attention_mask": source_mask, "labels": labels}
        eager_loss, eager_grads = step(model, batch)
        compiled_loss, compiled_grads = step(compiled, batch)
        torch.testing.assert_close(compiled_loss, eager_loss)
        assert compiled_grads.keys() == eager_grads.keys()
        for name, grad in eager_grads.items():
            torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@compile_warnings
def test_a_compiled_training_step_traces_with_symbolic_shapes():
    """torch.compile's tracing with symbolic shapes (what a second input shape brings) over a training step; the
    graphs run as traced (backend "eager"), so that the test stays short. The slow test below runs them compiled."""
    torch._dynamo.reset()
    compiled_step_matches_eager(tiny_model(**NO_DROPOUT).train(), [(3, 9, 6)], backend="eager", dynamic=True)


@pytest.mark.slow
@compile_warnings
def test_a_compiled_training_step_gives_the_same_loss_and_gradients():
    torch._dynamo.reset()
    with mock.patch("torch._inductor.config.fallback_random", True):  # the objective's draws as in eager
        compiled_step_matches_eager(tiny_model(**NO_DROPOUT).train(), [(3, 7, 5), (4, 9, 6)])
