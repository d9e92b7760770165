"""The public API under random input: every call returns finite outputs of the documented form or raises a
ValueError / TypeError that names what was wrong, a refused call leaves the model exactly as it was, and whatever
the calls did, the model saves and reloads to the same outputs."""

import math
import tempfile

import pytest
import torch
from conftest import BOS, EOS, PAD, TINY_VOCAB, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeling_deer import DeerForConditionalGeneration


UNK = 4
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(-2, 5), st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([None, "2", True])
)
levels = st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0.0, 0.25, 0.5, float("nan"), "0.5", None]))


@st.composite
def source_batches(draw):
    batch, length = draw(st.integers(0, 3)), draw(st.integers(0, 70))
    ids = torch.randint(5, TINY_VOCAB + draw(st.sampled_from([0, 0, 0, 3])), (batch, length))
    if batch and length:
        ids[:, 0] = BOS
        for row in range(batch):  # right padding of a random share of each row
            kept = draw(st.integers(0, length))
            ids[row, kept:] = PAD
    return ids.to(draw(st.sampled_from([torch.long, torch.long, torch.int32, torch.float32])))


calls = st.one_of(
    st.tuples(
        st.just("generate"),
        source_batches(),
        st.fixed_dictionaries(
            {},
            optional={
                "max_iterations": numbers,
                "eos_penalty": numbers,
                "blank_penalty": numbers,
                "deletion_penalty": numbers,
            },
        ),
    ),
    st.tuples(
        st.just("forward"),
        source_batches(),
        st.integers(0, 4),
        st.integers(0, 10),
        st.sampled_from([0, 0, TINY_VOCAB + 5, -7]),
    ),
    st.tuples(st.just("set_sparsity"), levels),
    st.tuples(st.just("prune_to"), levels),
    st.tuples(
        st.just("trim_vocabulary"),
        st.lists(st.one_of(st.integers(-2, TINY_VOCAB + 3), st.sampled_from([2.5, "7"])), max_size=12),
    ),
    st.tuples(st.just("save_load")),
)

# What a refused call's message must mention, per call.
NAMES = {
    "generate": ("input_ids", "attention_mask", "source", "max_iterations", "penalty"),
    "forward": ("input_ids", "source", "labels"),
    "set_sparsity": ("sparsity", "set_sparsity", "prune_to"),
    "prune_to": ("sparsity", "prune_to"),
    "trim_vocabulary": ("trim_vocabulary",),
    "save_load": (),  # never refused
}


def snapshot(model):
    return (
        {name: tensor.clone() for name, tensor in model.state_dict().items()},
        model.config.to_json_string(),
        model.sparsity_level,
        model.generation_config.to_json_string(),
    )


def assert_unchanged(model, before):
    weights, config, level, generation = snapshot(model)
    assert config == before[1] and level == before[2] and generation == before[3]
    assert weights.keys() == before[0].keys()
    assert all(torch.equal(weights[name], before[0][name]) for name in weights)


def run(model, call):
    kind = call[0]
    if kind == "generate":
        _, ids, options = call
        output = model.generate(input_ids=ids, max_iterations=options.pop("max_iterations", 1), **options)
        assert output.dtype == torch.long and output.shape[0] == ids.shape[0]
        assert (output[:, 0] == BOS).all() and ((output == EOS).sum(1) == 1).all()
    elif kind == "forward":
        _, ids, batch, length, bad_id = call
        labels = torch.randint(5, TINY_VOCAB, (batch, length))
        if batch and length:
            labels[:, 0], labels[:, -1] = BOS, EOS
            labels[0, length // 2] = bad_id or labels[0, length // 2]
        output = model(input_ids=ids, labels=labels)
        assert math.isfinite(output.loss.item())
    elif kind == "trim_vocabulary":
        model.trim_vocabulary(call[1])
        assert model.config.vocabulary_ids[:5] == sorted(model.config.vocabulary_ids)[:5]
    elif kind == "save_load":  # whatever the calls before did, the saved model decodes as the model did
        probe = torch.tensor([[BOS, 7, 8, 9, EOS], [BOS, 11, EOS, PAD, PAD]])
        with tempfile.TemporaryDirectory() as directory:
            model.save_pretrained(directory)
            loaded = DeerForConditionalGeneration.from_pretrained(directory)
            loaded.set_sparsity(model.sparsity_level)
            assert torch.equal(loaded.generate(input_ids=probe), model.generate(input_ids=probe))
    else:
        getattr(model, kind)(call[1])


def check(calls_made):
    model = tiny_model(max_insertions=3, unk_token_id=UNK, sparsity_levels=[0.0, 0.5])
    for call in calls_made:
        before = snapshot(model)
        try:
            run(model, call)
        except (ValueError, TypeError) as error:
            assert any(name in str(error) for name in NAMES[call[0]]), (call[0], str(error))
            assert_unchanged(model, before)


@FAST
@given(st.lists(calls, min_size=1, max_size=4))
def test_random_calls_answer_or_refuse_cleanly(calls_made):
    with torch.no_grad():
        check(calls_made)


@pytest.mark.slow
@LONG
@given(st.lists(calls, min_size=1, max_size=8))
def test_random_calls_answer_or_refuse_cleanly_long(calls_made):
    with torch.no_grad():
        check(calls_made)
