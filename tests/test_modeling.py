import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    BOS,
    EOS,
    MASK,
    PAD,
    TINY_VOCAB,
    load_pairs,
    random_batch,
    shortest_real_pairs,
    tiny_config,
    tiny_model,
)
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    RobertaConfig,
    RobertaForMaskedLM,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from modeling_deer import DeerForConditionalGeneration, draft_deer, objective_deer
from modeling_deer.draft_deer import collapse_frames, frame_words
from modeling_deer.edit_ops import ctc_best_alignment, inner_mask
from modeling_deer.objective_deer import _ctc_loss, ctc_columns, ctc_frame_scores, frame_choices


# -- faithfulness: the converted model is the MLM ---------------------------------------------------------------------


def assert_same_mlm_logits(model, mlm, input_ids, attention_mask, atol=1e-4):
    """The converted model's LM head gives the MLM's logits, but for the mask token's column (the CTC blank), whose
    bias starts at the mean of the MLM's biases."""
    with torch.no_grad():
        ours = model.lm_head(model.encode(input_ids, attention_mask).last_hidden_state)
        theirs = mlm(input_ids=input_ids, attention_mask=attention_mask).logits
    real = attention_mask.bool()
    blank = model.config.placeholder_token_id
    mlm_bias = mlm.get_output_embeddings().bias
    words = torch.arange(ours.shape[-1]) != blank
    assert (ours[real][:, words] - theirs[real][:, words]).abs().max().item() < atol
    shift = mlm_bias.mean() - mlm_bias[blank]
    assert (ours[real][:, blank] - theirs[real][:, blank] - shift).abs().max().item() < atol
    assert model.lm_head.decoder.bias[blank].item() == pytest.approx(mlm_bias.mean().item(), abs=1e-6)


def test_real_tiny_bert_logits_match(tiny_bert_path):
    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path)
    assert not model.training  # like from_pretrained
    mlm = BertForMaskedLM.from_pretrained(tiny_bert_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    batch = tokenizer([pair["target"] for pair in load_pairs("validation")[:6]], return_tensors="pt", padding=True)
    assert_same_mlm_logits(model, mlm, batch.input_ids, batch.attention_mask)
    assert model.config.bos_token_id == tokenizer.cls_token_id
    assert model.config.placeholder_token_id == tokenizer.mask_token_id
    assert model.lm_head.decoder.weight is model.model.embeddings.word_embeddings.weight


ROBERTA_STYLE = [
    (RobertaConfig, RobertaForMaskedLM),
    (XLMRobertaConfig, XLMRobertaForMaskedLM),
]


@pytest.mark.parametrize("config_class, model_class", ROBERTA_STYLE)
def test_tiny_roberta_style_logits_match(tmp_path, config_class, model_class):
    torch.manual_seed(0)
    config = config_class(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    mlm = model_class(config).eval()
    mlm.save_pretrained(tmp_path)
    # <s>=0 <pad>=1 </s>=2 <mask>=3, given explicitly since the directory holds no tokenizer.
    model = DeerForConditionalGeneration.from_mlm(
        tmp_path, bos_token_id=0, pad_token_id=1, eos_token_id=2, placeholder_token_id=3
    ).eval()
    assert model.config.position_offset == 2  # RoBERTa positions start after the padding index
    assert model.config.max_sequence_length == 38
    ids = torch.randint(4, 60, (3, 38))
    lengths = torch.tensor([38, 20, 5])
    mask = torch.arange(38) < lengths[:, None]
    ids = ids.masked_fill(~mask, 1)
    assert_same_mlm_logits(model, mlm, ids, mask.long())
    # Without those ids and without tokenizer files, from_mlm refuses to guess.
    with pytest.raises(ValueError, match="not this checkpoint's|pass"):
        DeerForConditionalGeneration.from_mlm(tmp_path)


def test_tiny_bert_with_type_ids_and_untied_decoder(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    mlm = BertForMaskedLM(config).eval()
    mlm.save_pretrained(tmp_path)
    model = DeerForConditionalGeneration.from_mlm(
        tmp_path, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, placeholder_token_id=MASK
    ).eval()
    ids, mask = random_batch(3, 20)
    assert_same_mlm_logits(model, mlm, ids, mask.long())


def test_plain_encoder_loads_with_a_warning(minilm_path, caplog):
    with caplog.at_level(logging.WARNING, logger="modeling_deer"):
        model = DeerForConditionalGeneration.from_mlm(minilm_path).eval()
    assert "no MLM head" in caplog.text
    encoder = BertModel.from_pretrained(minilm_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    batch = tokenizer(["In the beginning was the Word.", "God said"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ours = model.encode(batch.input_ids, batch.attention_mask).last_hidden_state
        theirs = encoder(**batch).last_hidden_state
    real = batch.attention_mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() < 1e-4
    assert model.lm_head.decoder.weight is model.model.embeddings.word_embeddings.weight


def test_unsupported_checkpoint_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="from_mlm supports"):
        DeerForConditionalGeneration.from_mlm(tmp_path)


# -- the source K/V cache ---------------------------------------------------------------------------------------------


def joint_pass(model, source_ids, source_mask, target_ids):
    """[source ; target] through the layers at once, with DEER's mask: source queries see only source keys."""
    embeddings = model.model.embeddings
    target_mask = target_ids != PAD
    hidden = torch.cat([embeddings(source_ids, source_mask, 0), embeddings(target_ids, target_mask, 1)], dim=1)
    source_length = source_ids.shape[1]
    total = hidden.shape[1]
    key_is_real = torch.cat([source_mask, target_mask], dim=1)
    query_is_source = torch.arange(total) < source_length
    key_is_target = torch.arange(total) >= source_length
    allowed = ~(query_is_source[:, None] & key_is_target[None, :])
    mask = key_is_real[:, None, :] & allowed[None]
    for layer in model.model.layers:
        hidden = layer(hidden, mask)[0]
    return hidden[:, :source_length], hidden[:, source_length:]


def test_cached_target_pass_and_the_drafts_joint_pass_equal_a_joint_pass():
    model = tiny_model()
    source_ids, source_mask = random_batch(4, 12, seed=1)
    target_ids, target_mask = random_batch(4, 9, seed=2)
    with torch.no_grad():
        encoder_output = model.encode(source_ids, source_mask)
        cached = model.target_pass(target_ids, encoder_output)
        joint_source, joint_target = joint_pass(model, source_ids, source_mask, target_ids)
    assert (encoder_output.last_hidden_state - joint_source)[source_mask].abs().max() < 1e-5
    assert (cached - joint_target)[target_mask].abs().max() < 1e-5
    # The draft's encode_and_target_pass is that joint pass inside the model, and keeps the same source cache.
    with torch.no_grad():
        joint_output, joint_target = model.model.encode_and_target_pass(source_ids, source_mask, target_ids)
    assert (encoder_output.last_hidden_state - joint_output.last_hidden_state)[source_mask].abs().max() < 1e-5
    assert (cached - joint_target)[target_mask].abs().max() < 1e-5
    assert torch.equal(joint_output.attention_mask, source_mask)
    for (key, value), (joint_key, joint_value) in zip(encoder_output.key_values, joint_output.key_values):
        real = source_mask[:, None, :, None].expand_as(key)
        assert (key - joint_key)[real].abs().max() < 1e-5 and (value - joint_value)[real].abs().max() < 1e-5
        assert joint_key.is_contiguous()


# -- training ---------------------------------------------------------------------------------------------------------


def test_loss_components_are_finite_and_unfit_rows_are_counted():
    model = tiny_model().train()
    source_ids, source_mask = random_batch(3, 10, seed=3)
    source_ids[2, 2:] = PAD  # row 2: source bos eos -> a draft of 4 frames, 2 of them for tokens
    source_ids[2, 1] = EOS
    source_mask = source_ids != PAD
    labels, _ = random_batch(3, 8, seed=4, min_length=8)  # 6 inner tokens cannot fit 2 frames
    labels = labels.masked_fill(labels == PAD, -100)
    output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels)
    for name in ("loss", "ctc_loss", "insertion_loss", "word_loss", "deletion_loss"):
        assert torch.isfinite(getattr(output, name)), name
    assert output.num_unfit_targets.item() == 1


def test_evaluation_loss_is_the_same_every_time_and_training_still_samples():
    model = tiny_model().eval()
    source_ids, source_mask = random_batch(4, 10, seed=3)
    labels, _ = random_batch(4, 8, seed=4, min_length=5)
    labels = labels.masked_fill(labels == PAD, -100)
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # whatever the global random state
        with torch.no_grad():
            losses.append(model(input_ids=source_ids, attention_mask=source_mask, labels=labels).loss)
    assert torch.equal(losses[0], losses[1])
    model.train()
    torch.manual_seed(1)
    first = model(input_ids=source_ids, attention_mask=source_mask, labels=labels).word_loss
    torch.manual_seed(2)
    assert not torch.equal(first, model(input_ids=source_ids, attention_mask=source_mask, labels=labels).word_loss)


def test_found_by_fuzzing_int32_ids_and_a_draft_without_frames():
    model = tiny_model()
    source_ids, source_mask = random_batch(2, 8, seed=3)
    assert torch.equal(
        model.generate(input_ids=source_ids.int(), attention_mask=source_mask),
        model.generate(input_ids=source_ids, attention_mask=source_mask),
    )
    # One source token: a draft of bos and eos only, which an empty target fits.
    output = model.train()(input_ids=torch.tensor([[BOS]]), labels=torch.tensor([[BOS, EOS]], dtype=torch.int32))
    assert torch.isfinite(output.loss) and output.ctc_loss.item() == 0.0


def test_all_rows_unfit_still_gives_a_finite_loss():
    model = tiny_model().train()
    source_ids = torch.tensor([[BOS, EOS]])
    labels = torch.tensor([[BOS, 5, 6, 7, 8, EOS]])
    output = model(input_ids=source_ids, labels=labels)
    assert torch.isfinite(output.loss) and output.num_unfit_targets.item() == 1
    output.loss.backward()


def test_gradients_reach_the_backbone_and_every_head():
    model = tiny_model().train()
    source_ids, source_mask = random_batch(4, 10, seed=5)
    labels, _ = random_batch(4, 7, seed=6, min_length=4)
    model(
        input_ids=source_ids, attention_mask=source_mask, labels=labels.masked_fill(labels == PAD, -100)
    ).loss.backward()
    for name in (
        "model.embeddings.word_embeddings.weight",
        "model.embeddings.position_embeddings.weight",
        "model.layers.0.attention.query.weight",
        "model.layers.1.feed_forward.down.weight",
        "lm_head.dense.weight",
        "lm_head.decoder.bias",
        "insertion_head.weight",
        "deletion_head.weight",
        "blank_head.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_edit_losses_skipped_when_their_weights_are_zero():
    model = tiny_model(insertion_loss_weight=0.0, word_loss_weight=0.0, deletion_loss_weight=0.0).train()
    source_ids, source_mask = random_batch(3, 10, seed=5)
    labels, _ = random_batch(3, 7, seed=6, min_length=4)
    output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels.masked_fill(labels == PAD, -100))
    assert output.insertion_loss is None and output.word_loss is None and output.deletion_loss is None
    assert torch.equal(output.loss, output.ctc_loss) or output.loss.item() == pytest.approx(output.ctc_loss.item())
    output.loss.backward()  # the heads take part with a zero gradient (DDP expects one from every parameter)
    assert not model.insertion_head.weight.grad.any() and not model.deletion_head.weight.grad.any()


def test_edit_heads_train_on_the_draft_that_decoding_writes():
    """With draft_edit_ratio, the edit losses start from the collapsed draft of the frame scores: in eval mode it is
    exactly the draft `generate(max_iterations=0)` returns."""
    model = tiny_model(seed=2, draft_edit_ratio=1.0)
    source_ids, source_mask = random_batch(4, 10, seed=7)
    with torch.no_grad():
        canvas = model.draft_canvas(source_ids, source_mask)
        hidden_states = model.target_pass(canvas, model.encode(source_ids, source_mask))[:, 1:-1]
        _, _, words, _ = frame_choices(model, hidden_states, torch.zeros(4, 1, dtype=torch.long))
        frame_mask = inner_mask(canvas, PAD)[:, 1:-1]
        own_draft = collapse_frames(model, words[frame_mask], canvas, frame_mask)
    generated = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=0)
    assert torch.equal(own_draft[:, : generated.shape[1]], generated)
    labels, _ = random_batch(4, 7, seed=8, min_length=4)
    model.train()
    output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels.masked_fill(labels == PAD, -100))
    for name in ("loss", "insertion_loss", "word_loss", "deletion_loss"):
        assert torch.isfinite(getattr(output, name)), name
    output.loss.backward()
    assert model.deletion_head.weight.grad.abs().sum() > 0


def test_edit_rows_ratio_runs_the_edit_passes_on_a_share_of_the_rows(monkeypatch):
    """With edit_rows_ratio, a training step runs the glancing and CTC passes on every row and the three edit passes
    on that share of the rows (drawn at random, trimmed to their own width); with all rows drawn (ratio 1) or in
    evaluation the edit losses are those of the whole batch."""
    source_ids, source_mask = random_batch(6, 10, seed=7)
    labels, _ = random_batch(6, 8, seed=8, min_length=4)
    labels = labels.masked_fill(labels == PAD, -100)

    def step(ratio, training=True, seed=9):
        model = tiny_model(seed=5, draft_edit_ratio=0.5, edit_rows_ratio=ratio).train(training)
        rows_seen = []
        target_pass = model.target_pass
        monkeypatch.setattr(
            model, "target_pass", lambda tokens, *args: rows_seen.append(len(tokens)) or target_pass(tokens, *args)
        )
        torch.manual_seed(seed)
        output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels)
        output.loss.backward()
        return output, rows_seen

    output, rows_seen = step(0.5)
    assert rows_seen == [6, 6, 3, 3, 3]  # glancing, CTC; insertion, word, deletion
    assert all(torch.isfinite(getattr(output, name)) for name in ("insertion_loss", "word_loss", "deletion_loss"))
    assert step(0.5, seed=10)[0].word_loss != output.word_loss  # other rows drawn
    assert step(0.01)[1][2:] == [1, 1, 1]  # at least one row
    whole, whole_rows = step(1.0, training=False)
    evaluated, evaluated_rows = step(0.5, training=False)
    assert whole_rows == evaluated_rows == [6] * 5
    for name in ("loss", "insertion_loss", "word_loss", "deletion_loss"):
        assert getattr(evaluated, name).item() == pytest.approx(getattr(whole, name).item(), rel=1e-6), name
    for bad in (0, 1.5, -0.5, "half"):
        with pytest.raises(ValueError, match="edit_rows_ratio"):
            tiny_config(edit_rows_ratio=bad)


def test_redraft_rows_read_their_own_confident_words(monkeypatch):
    """With redraft_ratio 1, every row's CTC pass reads the canvas with the glancing pass's own words written in
    at the non-blank frames above the row's threshold (none of the gold words glancing would reveal); with 0 the
    CTC pass reads the glanced canvas; evaluation never reveals anything."""
    source_ids, source_mask = random_batch(6, 10, seed=7)
    labels, _ = random_batch(6, 8, seed=8, min_length=4)
    labels = labels.masked_fill(labels == PAD, -100)

    def passes(ratio, training=True, thresholds=(0.0, 0.0)):
        monkeypatch.setattr(objective_deer, "REDRAFT_THRESHOLDS", thresholds)
        model = tiny_model(seed=5, redraft_ratio=ratio, glancing_ratio=1.0).train(training)
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        seen = []
        target_pass = model.target_pass
        monkeypatch.setattr(
            model, "target_pass", lambda tokens, *args: seen.append(tokens.clone()) or target_pass(tokens, *args)
        )
        output = model(input_ids=source_ids, attention_mask=source_mask, labels=labels)
        return model, seen[0], seen[1], output

    model, canvas, redrafted, output = passes(1.0)
    with torch.no_grad():  # the glancing pass's own words (no blank penalty)
        logits = model.draft_logits(model.target_pass(canvas, model.encode(source_ids, source_mask)))[:, 1:-1]
        logits[..., [BOS, EOS, PAD]] = float("-inf")
        words = logits.argmax(-1)
    frame_mask = inner_mask(canvas, PAD)[:, 1:-1]
    reveal = frame_mask & (words != MASK)  # threshold 0: every non-blank frame
    assert torch.equal(redrafted[:, 1:-1], torch.where(reveal, words, canvas[:, 1:-1]))
    assert torch.isfinite(output.loss)
    _, canvas, nothing, _ = passes(1.0, thresholds=(1.01, 1.01))  # above every probability: the bare canvas
    assert torch.equal(nothing, canvas)
    _, canvas, glanced, _ = passes(0.0)
    assert not torch.equal(glanced, canvas)  # glancing (ratio 1) reveals gold words instead
    _, canvas, evaluated, _ = passes(1.0, training=False)
    assert torch.equal(evaluated, canvas)
    for bad in (-0.1, 1.5, "all"):
        with pytest.raises(ValueError, match="redraft_ratio"):
            tiny_config(redraft_ratio=bad)


@pytest.mark.parametrize("frames_per_chunk", [None, 4])
def test_ctc_on_the_columns_it_reads_equals_ctc_over_the_whole_vocabulary(monkeypatch, frames_per_chunk):
    """A training step's CTC loss reads only the blank's and the targets' columns, the LM head run a chunk of frames
    at a time (recomputed in the backward pass): the same loss, gradients and frame choices as the whole log_softmax
    over the vocabulary, repeated target tokens and padding included."""
    model = tiny_model(seed=3)
    if frames_per_chunk is not None:
        monkeypatch.setattr(draft_deer, "SCORES_PER_CHUNK", frames_per_chunk * model.config.embedding_rows)
    generator = torch.Generator().manual_seed(0)
    hidden_states = torch.randn(3, 9, model.config.hidden_size, generator=generator, requires_grad=True)
    frame_lengths, targets = torch.tensor([9, 7, 5]), torch.tensor([[5, 6, 6, 7], [8, 8, 8, PAD], [9, 10, PAD, PAD]])
    target_lengths, fits, smoothing = torch.tensor([4, 3, 2]), torch.ones(3, dtype=torch.bool), 0.1

    full = model.draft_logits(hidden_states).float().log_softmax(-1)
    nll = F.ctc_loss(full.transpose(0, 1), targets, frame_lengths, target_lengths, blank=MASK, reduction="none")
    real = torch.arange(9) < frame_lengths[:, None]
    mean = (full.mean(-1) * real).sum(1) / frame_lengths
    expected = ((1 - smoothing) * nll / target_lengths - smoothing * mean).mean()
    (expected_gradient,) = torch.autograd.grad(expected, hidden_states)

    columns, column_targets = ctc_columns(targets, MASK)
    scores, mean_log_probs = ctc_frame_scores(model, hidden_states, columns)
    loss = _ctc_loss(scores, mean_log_probs, frame_lengths, column_targets, target_lengths, fits, smoothing)
    (gradient,) = torch.autograd.grad(loss, hidden_states)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(gradient, expected_gradient, atol=1e-6)
    with torch.no_grad():  # the glancing pass's choices: the same alignment from scores that are not normalised
        column_scores, best_rows, words, confidences = frame_choices(model, hidden_states, columns)
        assert torch.equal(best_rows, full.argmax(-1))
        assert torch.equal(words, frame_words(model, full.reshape(27, -1).clone()).view(3, 9))
        chosen = model.token_rows(words.flatten())  # each word's probability under its frame's full softmax
        expected_confidences = full.reshape(27, -1).softmax(-1).gather(1, chosen[:, None]).view(3, 9)
        assert torch.allclose(confidences, expected_confidences, atol=1e-6)
        alignment, path_score = ctc_best_alignment(column_scores, frame_lengths, column_targets, target_lengths, 0)
        expected_alignment, path_log_prob = ctc_best_alignment(
            scores, frame_lengths, column_targets, target_lengths, 0
        )
        assert torch.equal(alignment, expected_alignment)
        assert torch.isfinite(path_score).all() and (path_log_prob < 0).all()


def test_column_log_probs_backward_is_the_log_softmax_gradient():
    """The fused backward of the CTC scores (one tensor of the scores' size, not autograd's several) against
    numerical gradients, and its values against log_softmax, repeated columns included."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 11, generator=generator, dtype=torch.double, requires_grad=True)
    columns = torch.tensor([[0, 3, 3], [1, 2, 10], [0, 0, 0], [4, 5, 6], [10, 9, 3]])
    picked, mean = objective_deer.ColumnLogProbs.apply(scores, columns)
    log_probs = scores.log_softmax(-1)
    assert torch.allclose(picked, log_probs.gather(-1, columns)) and torch.allclose(mean, log_probs.mean(-1))
    assert torch.autograd.gradcheck(lambda s: objective_deer.ColumnLogProbs.apply(s, columns), (scores,))


def test_a_training_step_in_chunks_equals_the_step_at_once(monkeypatch):
    """The CTC and word losses with the LM head run a few positions at a time (recomputed in the backward pass): the
    same losses and gradients as scoring every position at once."""

    def step():
        model = tiny_model(seed=5, draft_edit_ratio=0.5).train()
        source_ids, source_mask = random_batch(4, 10, seed=7)
        labels, _ = random_batch(4, 8, seed=8, min_length=4)
        torch.manual_seed(9)
        output = model(
            input_ids=source_ids, attention_mask=source_mask, labels=labels.masked_fill(labels == PAD, -100)
        )
        output.loss.backward()
        return output, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    whole, whole_gradients = step()
    monkeypatch.setattr(draft_deer, "SCORES_PER_CHUNK", 3 * TINY_VOCAB)  # 3 positions a chunk
    chunked, chunked_gradients = step()
    for name in ("loss", "ctc_loss", "insertion_loss", "word_loss", "deletion_loss"):
        assert getattr(chunked, name).item() == pytest.approx(getattr(whole, name).item(), rel=1e-5), name
    assert chunked_gradients.keys() == whole_gradients.keys()
    for name, gradient in whole_gradients.items():
        assert torch.allclose(chunked_gradients[name], gradient, atol=1e-5), name


def test_calibrate_blank_starts_the_blank_level_with_the_best_word():
    model = tiny_model(seed=4)
    source_ids, source_mask = random_batch(6, 12, seed=9)
    bias = model.calibrate_blank(source_ids, source_mask)
    assert model.config.blank_calibrated and model.blank_head.bias.item() == pytest.approx(bias)
    with torch.no_grad():
        canvas = model.draft_canvas(source_ids, source_mask)
        frames = model.target_pass(canvas, model.encode(source_ids, source_mask))[:, 1:-1]
        frames = frames[inner_mask(canvas, PAD)[:, 1:-1]]
        logits = model.draft_logits(frames)
        blank = logits[:, MASK].clone()
        logits[:, [PAD, BOS, EOS, MASK]] = float("-inf")
    assert blank.mean().item() == pytest.approx(logits.max(-1).values.mean().item(), abs=1e-4)
    assert model.calibrate_blank(source_ids + 0, source_mask) == pytest.approx(bias)  # calibrated: left alone
    with pytest.raises(ValueError, match="separate_blank_head"):
        tiny_model(separate_blank_head=False).calibrate_blank(source_ids, source_mask)


def test_labels_are_checked():
    model = tiny_model()
    source_ids, _ = random_batch(2, 6)
    with pytest.raises(ValueError, match="bos"):
        model(input_ids=source_ids, labels=torch.tensor([[5, 6, EOS], [BOS, 6, EOS]]))
    with pytest.raises(ValueError, match="placeholder"):
        model(input_ids=source_ids, labels=torch.tensor([[BOS, MASK, EOS], [BOS, 6, EOS]]))
    good = torch.tensor([[BOS, 5, EOS], [BOS, 6, EOS]])
    with pytest.raises(TypeError, match="LongTensor"):
        model(input_ids=source_ids, labels=good.float())
    with pytest.raises(TypeError, match="LongTensor"):
        model(input_ids=source_ids, labels=good.tolist())
    with pytest.raises(ValueError, match="labels has 1 rows but input_ids has 2"):
        model(input_ids=source_ids, labels=good[:1])
    with pytest.raises(ValueError, match=r"row 1 holds 99999 at position 1, outside the vocabulary"):
        model(input_ids=source_ids, labels=torch.tensor([[BOS, 5, EOS], [BOS, 99999, EOS]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(input_ids=source_ids, labels=torch.tensor([[BOS, -5, EOS], [BOS, 6, EOS]]))
    assert torch.isfinite(model(input_ids=source_ids, labels=torch.tensor([[BOS, 5, EOS], [BOS, EOS, -100]])).loss)


def test_fine_tuning_on_eight_real_pairs_halves_the_loss_and_reproduces_one(tiny_bert_path):
    """The real tiny BERT, fine-tuned on 8 short real verse pairs, memorises them."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    source, labels = shortest_real_pairs(tokenizer, 8)
    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path, glancing_ratio=0.3).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(200):
        loss = model(input_ids=source.input_ids, attention_mask=source.attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 2, (first, last)
    model.eval()
    generated = model.generate(input_ids=source.input_ids, attention_mask=source.attention_mask, max_iterations=2)
    outputs = tokenizer.batch_decode(generated, skip_special_tokens=True)
    references = tokenizer.batch_decode(labels.masked_fill(labels == -100, 0), skip_special_tokens=True)
    assert sum(o == r for o, r in zip(outputs, references)) >= 1, list(zip(outputs, references))


def test_the_loss_in_evaluation_mode_is_repeatable_and_leaves_the_global_generator_alone():
    """eval(): the same batch gives the same loss every call, and computing it draws nothing from torch's global
    generator (an evaluation in the middle of training must not change the training's later random draws)."""
    model = tiny_model(draft_edit_ratio=0.5).eval()
    source_ids, source_mask = random_batch(3, 10, seed=8)
    labels, _ = random_batch(3, 7, seed=9, min_length=4)
    labels = labels.masked_fill(labels == PAD, -100)
    state = torch.random.get_rng_state()
    losses = [model(input_ids=source_ids, attention_mask=source_mask, labels=labels).loss.item() for _ in range(3)]
    assert losses[0] == losses[1] == losses[2]
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_bfloat16_training_step_and_bfloat16_generation_follow_float32():
    """Under bfloat16 autocast a training step gives a loss near float32's and finite gradients; the shipped model
    loaded in bfloat16 writes the tokens float32 writes, but for the few whose margin its 8-bit mantissa loses."""
    import os

    from transformers import AutoTokenizer

    model = tiny_model(sparsity_levels=[0.0, 0.5], full_every_step=True).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    source_ids, source_mask = random_batch(4, 10, seed=8)
    labels, _ = random_batch(4, 7, seed=9, min_length=4)
    labels = labels.masked_fill(labels == PAD, -100)
    torch.manual_seed(0)
    full = model(input_ids=source_ids, attention_mask=source_mask, labels=labels).loss
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(input_ids=source_ids, attention_mask=source_mask, labels=labels).loss
    half.backward()
    assert half.item() == pytest.approx(full.item(), rel=0.05)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())

    checkpoint = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints/bible-de-en/deer"
    )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    batch = tokenizer(
        ["Im Anfang war das Wort.", "Und Gott sprach: Es werde Licht."], return_tensors="pt", padding=True
    )
    texts = {}
    for dtype in (torch.float32, torch.bfloat16):
        deer = DeerForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype)
        texts[dtype] = tokenizer.batch_decode(deer.generate(**batch, max_iterations=0), skip_special_tokens=True)
    words = [(a.split(), b.split()) for a, b in zip(texts[torch.float32], texts[torch.bfloat16])]
    same = sum(x == y for a, b in words for x, y in zip(a, b))
    assert same >= 0.8 * sum(len(a) for a, _ in words), texts


def test_calibrate_blank_runs_the_lm_head_a_chunk_of_frames_at_a_time(monkeypatch):
    """Frames x vocabulary at once is gigabytes for XLM-R's 250k rows at batch 64: the calibration scores a chunk
    of frames at a time and sets the same bias."""
    source_ids, source_mask = random_batch(4, 12, seed=3)
    whole = tiny_model(seed=2, separate_blank_head=True).calibrate_blank(source_ids, source_mask)
    model = tiny_model(seed=2, separate_blank_head=True)
    monkeypatch.setattr(draft_deer, "SCORES_PER_CHUNK", 5 * model.config.embedding_rows)  # 5 frames a chunk
    calls = []
    decoder_forward = model.lm_head.decoder.forward
    monkeypatch.setattr(model.lm_head.decoder, "forward", lambda x: calls.append(len(x)) or decoder_forward(x))
    assert model.calibrate_blank(source_ids, source_mask) == pytest.approx(whole, rel=1e-5)
    assert len(calls) > 1 and max(calls) <= 5
