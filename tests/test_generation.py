import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import BOS, EOS, MASK, PAD, random_batch, tiny_model

from modeling_deer.edit_ops import ctc_collapse, inner_mask, trim_padding


@pytest.fixture(scope="module")
def model():
    # max_insertions=3 keeps a random model's outputs short enough to stay inside the position table.
    return tiny_model(seed=3, max_insertions=3)


def assert_bos_eos_rows(sequences):
    for row in sequences.tolist():
        row = row[: len(row) - row[::-1].index(EOS)] if EOS in row else row
        assert row[0] == BOS and row[-1] == EOS
        assert BOS not in row[1:] and EOS not in row[:-1] and MASK not in row and PAD not in row


def test_deterministic_and_bos_eos(model):
    source_ids, source_mask = random_batch(5, 14, seed=1)
    first = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=3)
    second = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=3)
    assert torch.equal(first, second)
    assert_bos_eos_rows(first)
    assert first.dtype == torch.long


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_padded_batch_equals_each_row_alone(model, iterations):
    source_ids, source_mask = random_batch(6, 16, seed=2)
    batch = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=iterations)
    for b in range(6):
        n = int(source_mask[b].sum())
        alone = model.generate(input_ids=source_ids[b : b + 1, :n], max_iterations=iterations)[0]
        row = batch[b]
        assert torch.equal(row[: len(alone)], alone) and (row[len(alone) :] == PAD).all()


def test_zero_iterations_is_the_collapsed_draft(model):
    source_ids, source_mask = random_batch(3, 10, seed=4)
    with torch.no_grad():
        encoder_output = model.encode(source_ids, source_mask)
        canvas = model.draft_canvas(source_ids, source_mask)
        logits = model.draft_logits(model.target_pass(canvas, encoder_output))[:, 1:-1]
        logits[..., [BOS, EOS, PAD]] = float("-inf")
        frame_mask = inner_mask(canvas, PAD)[:, 1:-1]
        inner = ctc_collapse(logits.argmax(-1), frame_mask, MASK, PAD)
    generated = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=0)
    for b in range(3):
        tokens = inner[b][inner[b] != PAD].tolist()
        assert generated[b].tolist()[: len(tokens) + 2] == [BOS] + tokens + [EOS]


def sources_of_lengths(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """bos 10 11 12 ... eos rows of the given lengths, right-padded."""
    width = max(lengths)
    rows = [[BOS] + [10 + i % 30 for i in range(n - 2)] + [EOS] if n >= 2 else [BOS] for n in lengths]
    ids = torch.tensor([row + [PAD] * (width - len(row)) for row in rows])
    return ids, ids != PAD


def test_draft_canvas_shape():
    model = tiny_model(upsample_ratio=2.0, draft_input="placeholder")
    canvas = model.draft_canvas(*sources_of_lengths([3, 1, 40]))
    assert canvas[0].tolist()[:7] == [BOS, MASK, MASK, MASK, MASK, EOS, PAD]  # ceil(2 * 3) = 6 frames
    assert canvas[1].tolist()[:3] == [BOS, EOS, PAD]
    assert (canvas[2] != PAD).sum() == 64  # capped by the position table


def test_source_anchored_canvas():
    model = tiny_model(upsample_ratio=2.0, draft_input="source")
    ids, mask = sources_of_lengths([5, 2, 40])
    canvas = model.draft_canvas(ids, mask)
    # bos 10 11 12 eos: 10 frames of bos + 8 frames + eos, each inner token read by 8 / 3 frames in order.
    assert canvas[0].tolist()[:11] == [BOS, 10, 10, 10, 11, 11, 11, 12, 12, EOS, PAD]
    assert canvas[1].tolist()[:5] == [BOS, MASK, MASK, EOS, PAD]  # nothing to read: placeholders
    assert (canvas[2] != PAD).sum() == 64
    # Left padding reads the same tokens.
    left = torch.cat([torch.full((1, 3), PAD), ids[:1]], dim=1)
    assert torch.equal(model.draft_canvas(left, left != PAD)[0, :10], canvas[0, :10])


def test_blank_penalty_lengthens_the_draft(model):
    source_ids, source_mask = random_batch(4, 12, seed=6)
    lengths = [
        (
            model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=0, blank_penalty=penalty)
            != PAD
        )
        .sum()
        .item()
        for penalty in (-1e4, 0.0, 1e4)
    ]
    assert lengths[0] == 2 * 4  # the blank wins every frame: bos eos only
    assert lengths[0] <= lengths[1] <= lengths[2]
    with pytest.raises(ValueError, match="blank_penalty"):
        model.generate(input_ids=source_ids, attention_mask=source_mask, blank_penalty=float("nan"))


def test_deletion_penalty_deletes_less():
    model = tiny_model(seed=3, max_insertions=3)
    source_ids, source_mask = random_batch(6, 12, seed=8)
    with torch.no_grad():
        model.deletion_head.bias.copy_(torch.tensor([0.0, 3.0]))  # delete nearly everything
    lengths = [
        (
            model.generate(
                input_ids=source_ids,
                attention_mask=source_mask,
                max_iterations=1,
                deletion_penalty=penalty,
                eos_penalty=-1e4,
            )
            != PAD
        )
        .sum()
        .item()
        for penalty in (0.0, 1e4)
    ]
    draft = (model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=0) != PAD).sum()
    assert lengths[0] < lengths[1] == draft.item()  # with no insertions, a huge penalty leaves the draft as it is


def test_output_dict_history_and_iteration_counts(model):
    source_ids, source_mask = random_batch(4, 12, seed=5, min_length=3)  # every row with a word to translate
    output = model.generate(
        input_ids=source_ids,
        attention_mask=source_mask,
        max_iterations=4,
        return_dict_in_generate=True,
        output_history=True,
    )
    assert len(output.history) == 1 + int(output.num_iterations.max())
    assert torch.equal(output.history[-1], output.sequences)
    assert ((output.num_iterations >= 1) & (output.num_iterations <= 4)).all()
    exact = model.generate(
        input_ids=source_ids,
        attention_mask=source_mask,
        max_iterations=4,
        stop_when_unchanged=False,
        return_dict_in_generate=True,
    )
    assert (exact.num_iterations == 4).all()
    # A row stops only when a round changes nothing, so running on gives the same output.
    assert torch.equal(exact.sequences, output.sequences)


def test_generation_config_of_the_model_is_not_changed_by_a_call(model):
    before = model.generation_config.max_iterations
    model.generate(input_ids=random_batch(1, 5)[0], max_iterations=1)
    assert model.generation_config.max_iterations == before


def test_bad_input_gives_clear_errors(model):
    ids, mask = random_batch(2, 6)
    with pytest.raises(ValueError, match="empty"):
        model.generate(input_ids=torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="only padding"):
        model.generate(input_ids=torch.tensor([[BOS, 5, EOS], [PAD, PAD, PAD]]))
    with pytest.raises(ValueError, match="max_length=64"):
        model.generate(input_ids=torch.full((1, 65), 5))
    with pytest.raises(ValueError, match="max_iterations"):
        model.generate(input_ids=ids, max_iterations=-1)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(input_ids=ids, num_beams=4)
    with pytest.raises(TypeError, match="input_ids"):
        model.generate(input_ids=[[BOS, 5, EOS]])
    with pytest.raises(TypeError, match="input_ids"):
        model.generate(input_ids=ids.float())
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate(input_ids=torch.tensor([[BOS, 999, EOS]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate(input_ids=ids, attention_mask=mask[:, :3])
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        model.generate(input_ids=ids, attention_mask=mask.tolist())
    with pytest.raises(TypeError, match=r"unpack it: generate\(\*\*batch\)"):
        model.generate({"input_ids": ids, "attention_mask": mask})


def test_numbers_as_users_have_them(model):
    import numpy as np

    ids, mask = random_batch(2, 6)
    expected = model.generate(input_ids=ids, attention_mask=mask, max_iterations=2, eos_penalty=1.0)
    for iterations, penalty in ((np.int64(2), np.float32(1.0)), (torch.tensor(2), torch.tensor(1.0)), (2, 1)):
        assert torch.equal(
            model.generate(input_ids=ids, attention_mask=mask, max_iterations=iterations, eos_penalty=penalty),
            expected,
        )
    for bad in (float("nan"), float("inf"), np.float32("nan"), torch.tensor(float("-inf"))):
        with pytest.raises(ValueError, match="eos_penalty must be a finite number"):
            model.generate(input_ids=ids, eos_penalty=bad)
    with pytest.raises(ValueError, match="max_iterations must be an integer"):
        model.generate(input_ids=ids, max_iterations=2.5)


def test_longest_source_the_position_table_allows_still_generates(model):
    ids = torch.full((1, 64), 7)
    ids[0, 0], ids[0, -1] = BOS, EOS
    output = model.generate(input_ids=ids, max_iterations=2)
    assert output.shape[1] <= 64
    assert_bos_eos_rows(output)


def settling_model():
    """A random model nudged towards "insert nothing", so that rows settle after different numbers of rounds."""
    model = tiny_model(seed=3, max_insertions=3)
    with torch.no_grad():
        model.insertion_head.bias[0] += 0.6
    return model


def test_rows_stop_when_unchanged_and_the_shrinking_batch_matches_rows_alone():
    model = settling_model()
    source_ids, source_mask = random_batch(8, 14, seed=11)
    output = model.generate(
        input_ids=source_ids,
        attention_mask=source_mask,
        max_iterations=6,
        return_dict_in_generate=True,
        output_history=True,
    )
    counts = output.num_iterations
    assert counts.min() < counts.max() < 6  # rows finished at different rounds, all before the budget
    # The last round of every row changed nothing.
    for b in range(8):
        k = int(counts[b])
        before, after = output.history[k - 1][b], output.history[k][b]
        width = max(len(before), len(after))
        pad = lambda row: torch.nn.functional.pad(row, (0, width - len(row)), value=PAD)
        assert torch.equal(pad(before), pad(after))
        alone = model.generate(
            input_ids=source_ids[b : b + 1, : int(source_mask[b].sum())],
            max_iterations=6,
            return_dict_in_generate=True,
        )
        assert alone.num_iterations.item() == k
        assert torch.equal(output.sequences[b, : alone.sequences.shape[1]], alone.sequences[0])
    exact = model.generate(
        input_ids=source_ids,
        attention_mask=source_mask,
        max_iterations=6,
        stop_when_unchanged=False,
        return_dict_in_generate=True,
    )
    assert (exact.num_iterations == 6).all() and torch.equal(exact.sequences, output.sequences)


def test_half_precision_generates_and_trains():
    model = tiny_model(seed=3, max_insertions=3).to(torch.bfloat16)
    source_ids, source_mask = random_batch(3, 10, seed=1)
    assert_bos_eos_rows(model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2))
    labels, _ = random_batch(3, 6, seed=2)
    model.train()
    loss = model(input_ids=source_ids, attention_mask=source_mask, labels=labels.masked_fill(labels == PAD, -100)).loss
    assert torch.isfinite(loss)
    loss.backward()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")  # dynamo's own
def test_compiled_passes_generate_and_train_like_eager():
    # No dropout: compiled code draws its own random numbers. The rest of the objective's randomness is outside.
    settings = {"seed": 3, "max_insertions": 3, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    eager, compiled = tiny_model(**settings), tiny_model(**settings).compile_passes()
    source_ids, source_mask = random_batch(4, 12, seed=5)
    for iterations in (0, 2):
        expected = eager.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=iterations)
        got = compiled.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=iterations)
        assert torch.equal(expected, got)
    labels, _ = random_batch(4, 8, seed=6)
    torch.manual_seed(0)
    eager_loss = eager.train()(input_ids=source_ids, attention_mask=source_mask, labels=labels).loss
    torch.manual_seed(0)
    compiled_loss = compiled.train()(input_ids=source_ids, attention_mask=source_mask, labels=labels).loss
    compiled_loss.backward()
    assert torch.allclose(eager_loss, compiled_loss, atol=1e-4)
    assert compiled.model.layers[0].attention.query.weight.grad is not None


def test_transformers_generation_conventions():
    from transformers import GenerationConfig

    model = tiny_model(max_insertions=8)
    model.generation_config.deletion_penalty = 1e4  # rounds never delete, and insert a lot:
    with torch.no_grad():  # an untrained model that writes ever longer outputs
        model.insertion_head.bias[2:] = 5.0
    ids, mask = random_batch(3, 12, seed=5)
    free = model.generate(input_ids=ids, attention_mask=mask, max_iterations=2)
    assert free.shape[1] > 8  # without a cap the rows are long
    for iterations in (0, 1, 3):
        for kwargs, cap in (
            ({"max_new_tokens": 5}, 6),
            ({"max_length": 7}, 7),
            ({"generation_config": GenerationConfig(max_new_tokens=4)}, 5),
        ):
            out = model.generate(input_ids=ids, attention_mask=mask, max_iterations=iterations, **kwargs)
            lengths = (out != PAD).sum(1)
            assert (lengths <= cap).all() and (out[:, 0] == BOS).all() and ((out == EOS).sum(1) == 1).all()
            assert (out.gather(1, (lengths - 1)[:, None]) == EOS).all()
    # A plain GenerationConfig: its max_length applies when max_new_tokens is not set, as in transformers.
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=GenerationConfig(max_length=6))
    assert (out != PAD).sum(1).max() <= 6
    # What Seq2SeqTrainer and pipelines pass is accepted and changes nothing.
    same = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_iterations=2,
        synced_gpus=False,
        use_cache=True,
        num_beams=1,
        do_sample=False,
        num_return_sequences=1,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=BOS,
        labels=ids,
        decoder_input_ids=ids,
    )
    assert torch.equal(same, free)
    for bad in (
        {"num_beams": 4},
        {"do_sample": True},
        {"temperature": 0.7},
        {"streamer": object()},
        {"generation_config": GenerationConfig(num_beams=3)},
    ):
        with pytest.raises(ValueError, match="DEER cannot honour.*max_iterations"):
            model.generate(input_ids=ids, **bad)
    with pytest.raises(ValueError, match="max_new_tokens must be None or an integer >= 1"):
        model.generate(input_ids=ids, max_new_tokens=0)


def test_decoding_scores_a_chunk_of_positions_at_a_time_with_the_same_outputs(monkeypatch):
    """Memory bounded for any vocabulary: the LM head sees at most a chunk of draft frames, or of placeholders to
    fill, at once, and the draft and every round after it are what scoring them all at once gives."""
    import modeling_deer.draft_deer as draft_deer

    model = tiny_model(seed=4)
    source, mask = random_batch(8, 12, seed=5)
    whole = [
        model.generate(input_ids=source, attention_mask=mask, max_iterations=count, blank_penalty=1.0)
        for count in (0, 2)
    ]
    rows_scored = []
    hook = model.lm_head.dense.register_forward_hook(lambda module, args, output: rows_scored.append(len(args[0])))
    monkeypatch.setattr(draft_deer, "SCORES_PER_CHUNK", model.config.embedding_rows * 7)  # 7 positions a chunk
    try:
        chunked = [
            model.generate(input_ids=source, attention_mask=mask, max_iterations=count, blank_penalty=1.0)
            for count in (0, 2)
        ]
    finally:
        hook.remove()
    assert max(rows_scored) == 7 and len(rows_scored) > 3
    assert all(torch.equal(got, expected) for got, expected in zip(chunked, whole))


def test_the_lm_head_scores_a_few_positions_the_other_way_round_with_the_same_scores(monkeypatch):
    """Up to FEW_POSITIONS positions the LM head computes rows x features^T (faster on a CPU for a round's few
    placeholders): the same scores as the decoder's, up to float rounding, and the same outputs from generate."""
    import modeling_deer.modeling_deer as modeling

    model = tiny_model(seed=6)
    features = torch.randn(4, 5, model.config.hidden_size)
    for positions in (1, 4, modeling.FEW_POSITIONS, modeling.FEW_POSITIONS + 1):
        part = features.reshape(-1, features.shape[-1])[:positions]
        scores = model.lm_head.score(part)
        assert scores.shape == (positions, model.config.embedding_rows)
        torch.testing.assert_close(scores, model.lm_head.decoder(part), rtol=1e-5, atol=1e-5)
        assert torch.equal(scores.argmax(-1), model.lm_head.decoder(part).argmax(-1))
    assert model.lm_head.score(features).shape == (4, 5, model.config.embedding_rows)  # any leading shape
    source, mask = random_batch(2, 10, seed=7)
    fast = model.generate(input_ids=source, attention_mask=mask, max_iterations=2)
    monkeypatch.setattr(modeling, "FEW_POSITIONS", 0)  # never the other way round
    assert torch.equal(model.generate(input_ids=source, attention_mask=mask, max_iterations=2), fast)


# -- re-drafting rounds (refinement="redraft") ----------------------------------------------------------------------


def test_a_redraft_round_reveals_exactly_the_confident_words(model):
    """The second draft pass reads the canvas with the draft's words written in at the frames whose word is not the
    blank and has at least `reveal_threshold` probability; everything else as the first pass read it."""
    source_ids, source_mask = random_batch(4, 12, seed=15)
    with torch.no_grad():
        canvas = model.draft_canvas(source_ids, source_mask)
        logits = model.draft_logits(model.target_pass(canvas, model.encode(source_ids, source_mask)))[:, 1:-1]
        probabilities = logits.softmax(-1)
        logits[..., [BOS, EOS, PAD]] = float("-inf")
        words = logits.argmax(-1)
        confidences = probabilities.gather(-1, words[..., None]).squeeze(-1)
    frame_mask = inner_mask(canvas, PAD)[:, 1:-1]
    # About half the words revealed, the threshold halfway across the widest gap between two confidences in the
    # middle half: no word sits near it, so the last bits in which generate()'s own pass may differ (they do between
    # CPUs) cannot move a word across.
    values = confidences[frame_mask & (words != MASK)].sort().values
    quarter = len(values) // 4
    gap = int((values[quarter + 1 : 3 * quarter + 1] - values[quarter : 3 * quarter]).argmax()) + quarter
    threshold = float(values[gap] + values[gap + 1]) / 2
    reveal = frame_mask & (words != MASK) & (confidences >= threshold)
    assert reveal.any() and (~reveal & frame_mask).any()
    seen = []
    original = model.target_pass
    model.target_pass = lambda tokens, encoder_output: seen.append(tokens.clone()) or original(tokens, encoder_output)
    try:
        model.generate(
            input_ids=source_ids,
            attention_mask=source_mask,
            max_iterations=1,
            refinement="redraft",
            reveal_threshold=threshold,
            stop_when_unchanged=False,
        )
    finally:
        del model.target_pass
    assert len(seen) == 1  # one pass per round
    assert torch.equal(seen[0][:, 1:-1], torch.where(reveal, words, canvas[:, 1:-1]))
    assert torch.equal(seen[0][:, [0, -1]], canvas[:, [0, -1]])


def test_redraft_with_nothing_revealed_changes_nothing(model):
    """A threshold no frame reaches reveals nothing: the pass repeats the draft's, and the output is the draft."""
    source_ids, source_mask = random_batch(5, 14, seed=6)
    draft = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=0)
    output = model.generate(
        input_ids=source_ids,
        attention_mask=source_mask,
        max_iterations=2,
        refinement="redraft",
        reveal_threshold=1.0,
        return_dict_in_generate=True,
    )
    assert torch.equal(output.sequences, draft)
    assert output.num_iterations.tolist() == [1] * 5  # one round each, unchanged, so finished


@pytest.mark.parametrize("iterations", [1, 3])
def test_redraft_padded_batch_equals_each_row_alone(model, iterations):
    source_ids, source_mask = random_batch(6, 16, seed=7)
    options = {"max_iterations": iterations, "refinement": "redraft", "reveal_threshold": 0.03}
    batch = model.generate(input_ids=source_ids, attention_mask=source_mask, **options)
    draft = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=0)
    assert not torch.equal(batch[:, : draft.shape[1]], draft[:, : batch.shape[1]])  # the rounds change something
    assert_bos_eos_rows(batch)
    for b in range(6):
        n = int(source_mask[b].sum())
        alone = model.generate(input_ids=source_ids[b : b + 1, :n], **options)[0]
        assert torch.equal(batch[b][: len(alone)], alone) and (batch[b][len(alone) :] == PAD).all()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"refinement": "mask-predict"}, "refinement must be one of"),
        ({"reveal_threshold": 0.0}, "reveal_threshold must be a probability"),
        ({"reveal_threshold": 1.5}, "reveal_threshold must be a probability"),
        ({"reveal_threshold": True}, "reveal_threshold must be a probability"),
    ],
)
def test_bad_refinement_options_are_refused(model, options, message):
    source_ids, source_mask = random_batch(2, 8, seed=8)
    with pytest.raises(ValueError, match=message):
        model.generate(input_ids=source_ids, attention_mask=source_mask, **options)


def test_a_source_without_words_gives_an_empty_output(model):
    """An empty text tokenises to bos eos: its output is bos eos (an empty text), in a batch as alone."""
    source_ids = torch.tensor([[BOS, EOS, PAD, PAD], [BOS, 7, 8, EOS]])
    batch = model.generate(input_ids=source_ids, max_iterations=2)
    output = model.generate(input_ids=source_ids, max_iterations=2, return_dict_in_generate=True, output_history=True)
    assert output.num_iterations[0] == 0 and torch.equal(output.history[-1], output.sequences)
    assert batch[0].tolist()[:2] == [BOS, EOS] and (batch[0, 2:] == PAD).all()
    assert torch.equal(batch[1][batch[1] != PAD], model.generate(input_ids=source_ids[1:], max_iterations=2)[0])
    alone = model.generate(input_ids=source_ids[:1, :2], max_iterations=2, refinement="redraft")
    assert alone.tolist() == [[BOS, EOS]]


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_length_buckets_give_static_shapes_and_the_same_outputs():
    """compile_passes(buckets=...): every pass sees only bucket lengths (so that CUDA graphs are reused) and the
    outputs are those of the eager model, pads masked out. A recording backend lists the shapes it compiles."""
    torch._dynamo.reset()
    model = tiny_model()
    source_ids, source_mask = random_batch(3, 11, seed=4)
    expected = model.generate(source_ids, attention_mask=source_mask, max_iterations=2, stop_when_unchanged=False)
    lengths = []

    def recording_backend(graph, example_inputs):
        lengths.extend(x.shape[1] for x in example_inputs if isinstance(x, torch.Tensor) and x.dtype == torch.long)
        return graph.forward

    model.compile_passes(buckets=(8, 16, 32, 64), backend=recording_backend)
    for batch in (slice(0, 3), slice(1, 2)):
        bucketed = model.generate(
            source_ids[batch], attention_mask=source_mask[batch], max_iterations=2, stop_when_unchanged=False
        )
        assert torch.equal(bucketed, trim_padding(expected[batch], PAD))
    assert lengths and set(lengths) <= {8, 16, 32, 64}


@pytest.mark.parametrize("refinement", ["edits", "redraft"])
def test_synced_gpus_runs_the_same_passes_on_every_process(tmp_path, refinement):
    """Two processes (gloo) decode different rows: without synced_gpus the one whose rows are final after the draft
    runs fewer backbone passes (FSDP or ZeRO-3 would hang on the others' weight gathers); with it both run the same
    passes, and every output is what it was."""
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    launcher = os.path.join(os.path.dirname(sys.executable), "torchrun")
    script = os.path.join(repository, "tests", "synced_generate.py")
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=repository)
    result = subprocess.run(
        [launcher, "--nproc_per_node", "2", script, str(tmp_path), refinement],
        cwd=repository, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["False"]["passes"] == 1 < ranks[1]["False"]["passes"]  # the draft alone, against rounds
    assert ranks[0]["True"]["passes"] == ranks[1]["True"]["passes"] >= ranks[1]["False"]["passes"]
    for rank in ranks:
        assert rank["True"]["output"] == rank["False"]["output"]
