import pytest
import torch
from conftest import BOS, EOS, MASK, PAD, random_batch, tiny_model
from transformers import AutoModelForSeq2SeqLM

from modeling_deer import DeerForConditionalGeneration


UNK = 4


def model_with_unk(seed=0, **overrides):
    return tiny_model(seed=seed, max_insertions=3, unk_token_id=UNK, **overrides)


def test_trimmed_lm_head_scores_the_kept_tokens_as_before():
    reference = model_with_unk()
    model = model_with_unk().trim_vocabulary([5, 9, 17, 30])
    kept = model.config.vocabulary_ids
    assert kept == [PAD, BOS, EOS, MASK, UNK, 5, 9, 17, 30]
    assert model.get_input_embeddings().weight.shape[0] == 9
    assert model.lm_head.decoder.weight is model.get_input_embeddings().weight
    source_ids, source_mask = random_batch(3, 10, seed=1)
    source_ids = source_ids.masked_fill(~torch.isin(source_ids, torch.tensor(kept)), UNK)
    with torch.no_grad():
        expected = reference.lm_head(reference.encode(source_ids, source_mask).last_hidden_state)[..., kept]
        trimmed = model.lm_head(model.encode(source_ids, source_mask).last_hidden_state)
    assert torch.allclose(trimmed, expected, atol=1e-5)


def test_trimmed_tokens_read_as_unk_and_are_never_generated():
    model = model_with_unk(seed=2).trim_vocabulary(range(5, 15))
    source_ids, source_mask = random_batch(4, 12, seed=3)  # ids up to 39: many not kept
    replaced = source_ids.masked_fill(source_ids >= 15, UNK)
    assert torch.equal(
        model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2),
        model.generate(input_ids=replaced, attention_mask=source_mask, max_iterations=2),
    )
    output = model.generate(
        input_ids=source_ids,
        attention_mask=source_mask,
        max_iterations=3,
        return_dict_in_generate=True,
        output_history=True,
    )
    allowed = set(model.config.vocabulary_ids)
    for sequences in output.history:
        assert set(sequences.unique().tolist()) <= allowed


def test_trimming_to_every_token_the_model_uses_keeps_its_generations():
    model = model_with_unk(seed=4)
    source_ids, source_mask = random_batch(4, 12, seed=5)
    output = model.generate(
        input_ids=source_ids,
        attention_mask=source_mask,
        max_iterations=3,
        return_dict_in_generate=True,
        output_history=True,
    )
    used = torch.cat([source_ids.flatten()] + [h.flatten() for h in output.history]).unique()
    assert len(used) < 40  # a real trim
    model.trim_vocabulary(used)
    assert torch.equal(
        model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=3), output.sequences
    )


def test_trimmed_model_trains_saves_and_loads(tmp_path):
    model = model_with_unk(seed=6).trim_vocabulary(range(5, 25))
    source_ids, source_mask = random_batch(3, 10, seed=7)
    labels, _ = random_batch(3, 8, seed=8, min_length=4)
    labels = labels.masked_fill(labels >= 25, 6).masked_fill(labels == PAD, -100)
    model.train()
    output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0
    model.eval()
    expected = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    model.save_pretrained(tmp_path)
    for loaded in (
        DeerForConditionalGeneration.from_pretrained(tmp_path),
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path),
    ):
        assert loaded.config.vocabulary_ids == model.config.vocabulary_ids
        assert torch.equal(loaded.model.embeddings.row_to_token, model.model.embeddings.row_to_token)
        assert torch.equal(
            loaded.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2), expected
        )


def test_trimming_again_only_removes():
    model = model_with_unk().trim_vocabulary(range(5, 20))
    model.trim_vocabulary(range(10, 30))  # 20..29 were trimmed already: they stay gone
    assert model.config.vocabulary_ids == [PAD, BOS, EOS, MASK, UNK] + list(range(10, 20))


def test_trimming_needs_an_unk_token_and_valid_ids():
    with pytest.raises(ValueError, match="unk_token_id"):
        tiny_model().trim_vocabulary([5, 6])
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        model_with_unk().trim_vocabulary([5, 99])


def test_trimming_takes_ids_or_a_mask_and_refuses_anything_else():
    import numpy as np

    mask = torch.zeros(40, dtype=torch.bool)
    mask[5:20] = True
    by_mask = model_with_unk().trim_vocabulary(mask).config.vocabulary_ids
    assert by_mask == model_with_unk().trim_vocabulary(range(5, 20)).config.vocabulary_ids
    assert by_mask == model_with_unk().trim_vocabulary(np.arange(5, 20)).config.vocabulary_ids
    assert by_mask == model_with_unk().trim_vocabulary(mask.tolist()).config.vocabulary_ids
    for bad, error, message in (
        (torch.ones(7, dtype=torch.bool), ValueError, "one entry per token"),
        ([5.0, 6.5], TypeError, "integers"),
        (torch.tensor([5.0]), TypeError, "integers"),
        (["5", "6"], TypeError, "token_ids must be integer ids"),
        ([[5, 6], [7]], TypeError, "token_ids must be integer ids"),
    ):
        model = model_with_unk()
        with pytest.raises(error, match=message):
            model.trim_vocabulary(bad)
        assert model.config.vocabulary_ids is None  # a refused call changes nothing


def test_resizing_a_trimmed_model_is_refused():
    model = model_with_unk().trim_vocabulary(range(5, 20))
    with pytest.raises(ValueError, match="vocabulary is trimmed"):
        model.resize_token_embeddings(64)
    untrimmed = model_with_unk()
    untrimmed.resize_token_embeddings(48)
    assert untrimmed.get_input_embeddings().weight.shape[0] == 48


def test_pruning_and_trimming_combine(tmp_path):
    model = model_with_unk(seed=9).trim_vocabulary(range(5, 30)).prune_to(0.5)
    source_ids, source_mask = random_batch(2, 9, seed=10)
    expected = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    model.save_pretrained(tmp_path)
    loaded = DeerForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2), expected)
