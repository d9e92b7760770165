import itertools

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_deer.edit_ops import (
    add_bos_eos,
    apply_deletions,
    choose_rows,
    compact,
    ctc_best_alignment,
    ctc_collapse,
    edit_oracle,
    fill_placeholders,
    glancing_mix,
    inner_mask,
    insert_placeholders,
    random_deletion,
    source_anchored_frames,
)


P, B, E, M = 0, 1, 2, 3  # pad, bos, eos, placeholder (= blank)


def rows(*lists, width=None):
    width = width or max(len(row) for row in lists)
    return torch.tensor([row + [P] * (width - len(row)) for row in lists])


# -- hand-built examples you can check by eye ------------------------------------------------------------------------


def test_compact():
    values = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    keep = torch.tensor([[True, False, True, False], [False, False, False, True]])
    assert compact(values, keep, 0).tolist() == [[5, 7], [12, 0]]


def test_inner_mask():
    tokens = rows([B, 5, 6, E], [B, E])
    assert inner_mask(tokens, P).tolist() == [[False, True, True, False], [False, False, False, False]]


def test_add_bos_eos():
    assert add_bos_eos(rows([5, 6], [7], []), B, E, P).tolist() == [[B, 5, 6, E], [B, 7, E, P], [B, E, P, P]]
    assert add_bos_eos(torch.zeros(2, 0, dtype=torch.long), B, E, P).tolist() == [[B, E], [B, E]]  # all empty


def test_choose_rows_pads_to_the_wider_and_trims():
    first, second = rows([B, 5, E]), rows([B, 6, 7, 8, E])
    both = torch.cat([first, first]), torch.cat([second, second])
    assert choose_rows(torch.tensor([True, False]), *both, P).tolist() == [[B, 5, E, P, P], [B, 6, 7, 8, E]]
    assert choose_rows(torch.tensor([True, True]), *both, P).tolist() == [[B, 5, E], [B, 5, E]]


def test_source_anchored_frames_spread_the_source_in_order():
    source = rows([B, 5, 6, 7, E], [B, 8, E], [B, E])
    frames = source_anchored_frames(source, source != P, torch.tensor([6, 4, 3]), M)
    assert frames.tolist() == [[5, 5, 6, 6, 7, 7], [8, 8, 8, 8, M, M], [M, M, M, M, M, M]]
    # Fewer frames than source tokens: every frame still reads in order, some tokens are skipped.
    assert source_anchored_frames(source[:1], source[:1] != P, torch.tensor([2]), M).tolist() == [[5, 6]]


def test_ctc_collapse_merges_repeats_then_drops_blanks():
    frames = torch.tensor([[5, 5, M, 5, 6, 6, M], [7, M, M, 7, 0, 0, 0]])
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    assert ctc_collapse(frames, mask, blank_id=M, pad_id=P).tolist() == [[5, 5, 6], [7, 7, P]]


def test_ctc_collapse_of_all_blanks_is_empty():
    frames = torch.tensor([[M, M]])
    assert ctc_collapse(frames, torch.ones(1, 2, dtype=torch.bool), M, P).shape == (1, 0)


def test_apply_deletions():
    tokens = rows([B, 5, 6, 7, E], [B, 8, E])
    delete = torch.tensor([[False, True, False, True, False], [False, False, False, False, False]])
    assert apply_deletions(tokens, delete, P).tolist() == [[B, 6, E], [B, 8, E]]


def test_insert_placeholders():
    tokens = rows([B, 5, 6, E], [B, E])
    counts = torch.tensor([[2, 0, 1], [1, 9, 9]])  # gaps past the second row's end are ignored
    assert insert_placeholders(tokens, counts, M, P).tolist() == [[B, M, M, 5, 6, M, E], [B, M, E, P, P, P, P]]


def test_insert_placeholders_respects_max_length_left_to_right():
    tokens = rows([B, 5, 6, E])
    counts = torch.tensor([[2, 3, 4]])
    assert insert_placeholders(tokens, counts, M, P, max_length=8).tolist() == [[B, M, M, 5, M, M, 6, E]]


def test_fill_placeholders_in_row_major_order():
    tokens = rows([B, M, 5, M, E], [B, M, E])
    filled = fill_placeholders(tokens, torch.tensor([7, 8, 9]), M)
    assert filled.tolist() == [[B, 7, 5, 8, E], [B, 9, E, P, P]]
    assert tokens[0, 1] == M  # the input is not modified


def test_edit_oracle_hand_example():
    tokens = rows([B, 5, 6, 7, E])
    target = rows([B, 7, 5, 5, E])
    oracle = edit_oracle(tokens, target, P)
    assert oracle.delete_mask.tolist() == [[False, False, True, True, False]]  # keep bos 5 eos
    assert oracle.insertion_counts.tolist() == [[1, 1]]  # bos _ 5 _ eos
    assert oracle.inserted_tokens.tolist() == [[7, 5]]


def test_glancing_reveals_a_share_of_mismatches_and_never_blank_frames():
    frames = torch.full((1, 6), M)
    aligned = torch.tensor([[5, M, 6, 7, M, 8]])
    predicted = torch.tensor([[5, 9, 9, 9, 9, 9]])  # 5 mismatches
    mask = torch.ones(1, 6, dtype=torch.bool)
    mixed, revealed = glancing_mix(frames, predicted, aligned, mask, 0.5, M, torch.Generator().manual_seed(0))
    assert revealed.item() <= 2  # floor(5 * 0.5) frames picked, blank-aligned ones keep the placeholder
    changed = mixed != M
    assert torch.equal(mixed[changed], aligned[changed]) and (aligned[changed] != M).all()
    none, revealed = glancing_mix(frames, predicted, aligned, mask, 0.0, M)
    assert torch.equal(none, frames) and revealed.item() == 0


def test_random_deletion_keeps_ends_and_order():
    tokens = rows(*[[B] + list(range(4, 4 + n)) + [E] for n in (0, 1, 5, 9)])
    for seed in range(20):
        deleted = random_deletion(tokens, P, torch.Generator().manual_seed(seed))
        for row, original in zip(deleted.tolist(), tokens.tolist()):
            row = [t for t in row if t != P]
            original = [t for t in original if t != P]
            assert row[0] == B and row[-1] == E
            iterator = iter(original)
            assert all(token in iterator for token in row)  # a subsequence


# -- CTC best alignment ----------------------------------------------------------------------------------------------


def brute_force_best_path(log_probs, target, blank):
    """Max over every frame labelling that collapses to the target."""
    frames, vocab = log_probs.shape
    best = float("-inf")
    for path in itertools.product(range(vocab), repeat=frames):
        collapsed = ctc_collapse(torch.tensor([path]), torch.ones(1, frames, dtype=torch.bool), blank, -1)[0]
        if collapsed.tolist() == target:
            best = max(best, log_probs[torch.arange(frames), torch.tensor(path)].sum().item())
    return best


def test_viterbi_equals_brute_force_on_tiny_cases():
    generator = torch.Generator().manual_seed(0)
    blank, vocab, frames = 0, 4, 5
    for trial in range(25):
        target_length = trial % 5
        target = torch.randint(1, vocab, (1, max(target_length, 1)), generator=generator)
        log_probs = torch.randn(1, frames, vocab, generator=generator).log_softmax(-1)
        alignment, score = ctc_best_alignment(
            log_probs, torch.tensor([frames]), target, torch.tensor([target_length]), blank
        )
        expected = brute_force_best_path(log_probs[0], target[0, :target_length].tolist(), blank)
        if expected == float("-inf"):
            assert score.item() == float("-inf")
            assert (alignment == blank).all()
            continue
        assert abs(score.item() - expected) < 1e-4
        # The returned path has that score and collapses to the target.
        path_score = log_probs[0, torch.arange(frames), alignment[0]].sum().item()
        assert abs(path_score - expected) < 1e-4
        collapsed = ctc_collapse(alignment, torch.ones(1, frames, dtype=torch.bool), blank, -1)
        assert collapsed[0].tolist() == target[0, :target_length].tolist()


def test_viterbi_never_exceeds_ctc_log_likelihood_and_handles_a_padded_batch():
    generator = torch.Generator().manual_seed(1)
    batch, frames, vocab, blank = 6, 12, 7, 0
    log_probs = torch.randn(batch, frames, vocab, generator=generator).log_softmax(-1)
    frame_lengths = torch.tensor([12, 10, 7, 5, 3, 0])
    targets = torch.randint(1, vocab, (batch, 4), generator=generator)
    target_lengths = torch.tensor([4, 3, 4, 2, 1, 0])
    alignment, score = ctc_best_alignment(log_probs, frame_lengths, targets, target_lengths, blank)
    log_likelihood = -F.ctc_loss(
        log_probs.transpose(0, 1), targets, frame_lengths, target_lengths, blank=blank, reduction="none"
    )
    assert torch.isfinite(score).all()
    assert (score <= log_likelihood + 1e-5).all()
    assert score[-1].item() == 0.0  # no frames, empty target: the empty path
    for b in range(batch):
        n = int(frame_lengths[b])
        assert (alignment[b, n:] == blank).all()
        collapsed = ctc_collapse(alignment[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool), blank, -1)
        assert collapsed[0].tolist() == targets[b, : target_lengths[b]].tolist()
        # Row by row equals the batch.
        alone, alone_score = ctc_best_alignment(
            log_probs[b : b + 1, :n], frame_lengths[b : b + 1], targets[b : b + 1], target_lengths[b : b + 1], blank
        )
        assert torch.equal(alone[0], alignment[b, :n]) and torch.allclose(alone_score, score[b : b + 1])


def test_viterbi_target_that_cannot_fit_gives_minus_infinity():
    log_probs = torch.randn(1, 3, 5).log_softmax(-1)
    targets = torch.tensor([[2, 2, 3]])  # needs 4 frames (a blank between the repeats)
    alignment, score = ctc_best_alignment(log_probs, torch.tensor([3]), targets, torch.tensor([3]), 0)
    assert score.item() == float("-inf") and (alignment == 0).all()


# -- the oracle, on generated sequences ------------------------------------------------------------------------------

inner_tokens = st.lists(st.integers(min_value=4, max_value=9), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(inner_tokens, inner_tokens), min_size=1, max_size=4))
def test_applying_the_oracle_gives_the_target_exactly(pairs):
    sources = rows(*[[B] + a + [E] for a, _ in pairs])
    targets = rows(*[[B] + b + [E] for _, b in pairs])
    oracle = edit_oracle(sources, targets, P)
    kept = apply_deletions(sources, oracle.delete_mask, P)
    with_placeholders = insert_placeholders(kept, oracle.insertion_counts, M, P)
    result = fill_placeholders(with_placeholders, oracle.inserted_tokens[oracle.inserted_tokens != P], M)
    assert result.tolist() == compact(targets, targets != P, P).tolist()
    # Insertions and deletions only: the edit count is the Indel distance, len(a) + len(b) - 2 * LCS.
    for b, (a, t) in enumerate(pairs):
        edits = int(oracle.delete_mask[b].sum() + oracle.insertion_counts[b].sum())
        assert edits <= len(a) + len(t)


@settings(max_examples=100, deadline=None)
@given(st.lists(inner_tokens, min_size=1, max_size=4), st.integers(0, 1000))
def test_oracle_from_a_random_deletion_only_inserts(targets, seed):
    gold = rows(*[[B] + t + [E] for t in targets])
    deleted = random_deletion(gold, P, torch.Generator().manual_seed(seed))
    oracle = edit_oracle(deleted, gold, P)
    assert not oracle.delete_mask.any()
    assert int(oracle.insertion_counts.sum()) == int((gold != P).sum() - (deleted != P).sum())
