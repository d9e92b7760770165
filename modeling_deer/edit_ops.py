"""The edit operations of DEER as small pure tensor functions: no model inside, inputs never modified.

Conventions: a batch of token sequences is a LongTensor (batch, length), each row left-aligned and padded on the
right with `pad_id`. Every function returns new tensors, with columns that are padding in every row trimmed.

    inner_mask              every token but bos and eos
    add_bos_eos             wrap each row's tokens in bos ... eos
    choose_rows             per row, one of two batches
    source_anchored_frames  the draft's input frames: the source's tokens spread evenly over the frames
    ctc_collapse            draft frames -> tokens (merge repeats, drop blanks)
    ctc_best_alignment      Viterbi: the most likely CTC path of a target through the draft frames
    glancing_mix            reveal some aligned gold tokens in the draft input (training)
    random_deletion         y -> y_del, a random subsequence keeping the first and last token (training)
    edit_oracle             insertion/deletion-only edits (LCS) that turn one sequence into another
    apply_deletions         drop marked tokens
    insert_placeholders     insert k placeholders into each gap between neighbours
    fill_placeholders       write tokens into the placeholders
"""

from dataclasses import dataclass

import torch


def uniform(shape, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws uniform in [0, 1): from `generator`, or from torch's global one when it is None (then without the
    keyword, the form that `torch.compile` traces with symbolic shapes)."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=device)


def compact(values: torch.Tensor, keep: torch.Tensor, pad_value) -> torch.Tensor:
    """Move the kept entries of each row to its front, in order, and pad the rest.

    Args:
        values: (batch, length) any dtype.
        keep: (batch, length) bool.
        pad_value: fill for the freed positions.
    Returns:
        (batch, max kept per row) tensor of `values`' dtype.
    """
    batch, _ = values.shape
    width = int(keep.sum(1).max()) if batch else 0
    # Kept entries go to their rank among the kept ones; the others to a spare column that is cut off.
    column = torch.where(keep, keep.long().cumsum(1) - 1, torch.full_like(values, width, dtype=torch.long))
    out = values.new_full((batch, width + 1), pad_value)
    out.scatter_(1, column, values)
    return out[:, :width]


def inner_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(batch, length) bool: True on every real token but each row's first and last (its bos and eos)."""
    lengths = (tokens != pad_id).sum(1)
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    return (positions > 0) & (positions < lengths[:, None] - 1)


def add_bos_eos(inner: torch.Tensor, bos_id: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """(batch, length) left-aligned tokens -> (batch, length + 2) rows `bos tokens eos`, padded with `pad_id`."""
    lengths = (inner != pad_id).sum(1)
    column = inner.new_empty((inner.shape[0], 1))  # (not inner[:, :1]: a batch of empty rows has no column)
    tokens = torch.cat([column.fill_(bos_id), inner, column.clone().fill_(pad_id)], dim=1)
    return tokens.scatter(1, (lengths + 1)[:, None], eos_id)


def choose_rows(use_first: torch.Tensor, first: torch.Tensor, second: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Row b of `first` where `use_first[b]`, else row b of `second`; both (batch, *) padded with `pad_id`. Returns
    (batch, width) with the columns that are padding in every row trimmed."""
    width = max(first.shape[1], second.shape[1])
    first = torch.nn.functional.pad(first, (0, width - first.shape[1]), value=pad_id)
    second = torch.nn.functional.pad(second, (0, width - second.shape[1]), value=pad_id)
    return trim_padding(torch.where(use_first[:, None], first, second), pad_id)


def trim_padding(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the columns that are padding in every row (of right-padded rows)."""
    width = int((tokens != pad_id).sum(1).max()) if tokens.shape[0] else 0
    return tokens[:, :width]


def source_anchored_frames(
    source_ids: torch.Tensor, source_mask: torch.Tensor, num_frames: torch.Tensor, fallback_id: int
) -> torch.Tensor:
    """The draft's input when it reads the source: frame j of F reads inner source token floor(j * n / F) of the
    n between the source's first and last token (its bos and eos), so the frames cover the source evenly and in
    order (as in CTC decoders that read the upsampled source). Rows with no inner source token read `fallback_id`.

    Args:
        source_ids: (batch, source_length), real tokens where `source_mask` is True (either side may be padded).
        num_frames: (batch,) frames per row, F.
    Returns:
        (batch, max F) frame tokens; frames past a row's F hold `fallback_id`.

    Example: inner source `a b c` over 6 frames reads `a a b b c c`; over 2 frames `a b`.
    """
    real = compact(source_ids, source_mask.bool(), fallback_id)  # left-aligned real tokens
    num_inner = (source_mask.sum(1) - 2).clamp(min=0)
    frames = torch.arange(int(num_frames.max()) if len(num_frames) else 0, device=source_ids.device)
    index = 1 + frames[None, :] * num_inner[:, None] // num_frames.clamp(min=1)[:, None]
    index = index.clamp(max=max(real.shape[1] - 1, 0))
    tokens = real.gather(1, index) if real.shape[1] else torch.full_like(index, fallback_id)
    usable = (num_inner[:, None] > 0) & (frames[None, :] < num_frames[:, None])
    return torch.where(usable, tokens, torch.full_like(tokens, fallback_id))


def ctc_collapse(frame_tokens: torch.Tensor, frame_mask: torch.Tensor, blank_id: int, pad_id: int) -> torch.Tensor:
    """CTC's many-to-one map: merge runs of the same token, then drop blanks.

    Args:
        frame_tokens: (batch, frames) token chosen at each frame.
        frame_mask: (batch, frames) bool, True on real frames (left-aligned).
    Returns:
        (batch, length) collapsed tokens, padded with `pad_id`.

    Example: frames `a a _ a b b _` (with `_` the blank) collapse to `a a b`.
    """
    previous = torch.cat([torch.full_like(frame_tokens[:, :1], -1), frame_tokens[:, :-1]], dim=1)
    keep = frame_mask & (frame_tokens != blank_id) & (frame_tokens != previous)
    return compact(frame_tokens, keep, pad_id)


def ctc_best_alignment(
    log_probs: torch.Tensor,
    frame_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The single most likely CTC path of each target through its frames (Viterbi), vectorised over the batch.

    The dynamic program runs over the 2*S+1 extended states (blank, y1, blank, y2, ..., yS, blank), one step per
    frame, on CPU or GPU.

    Args:
        log_probs: (batch, frames, vocab) log-probabilities of each frame.
        frame_lengths: (batch,) real frames per row.
        targets: (batch, S) target tokens (any padding beyond `target_lengths`).
        target_lengths: (batch,) target tokens per row.
    Returns:
        alignment: (batch, frames) the token each frame emits on the best path (`blank_id` for blank frames and for
            frames past the row's length). Collapsing it with `ctc_collapse` gives the target back.
        path_log_prob: (batch,) the log-probability of that path; `-inf` where the target cannot fit the frames
            (then the alignment is all blank).
    """
    batch, num_frames, _ = log_probs.shape
    num_states = 2 * targets.shape[1] + 1
    device = log_probs.device
    state_index = torch.arange(num_states, device=device)
    label_positions = torch.arange(targets.shape[1], device=device)
    real_labels = torch.where(label_positions < target_lengths[:, None], targets, torch.full_like(targets, blank_id))
    extended = torch.full((batch, num_states), blank_id, dtype=torch.long, device=device)
    extended[:, 1::2] = real_labels
    valid_state = state_index < (2 * target_lengths[:, None] + 1)
    # A label state may be entered from two states back unless that state holds the same label.
    can_skip = torch.zeros(batch, num_states, dtype=torch.bool, device=device)
    can_skip[:, 2:] = (extended[:, 2:] != blank_id) & (extended[:, 2:] != extended[:, :-2])

    emissions = log_probs.float().gather(2, extended[:, None, :].expand(batch, num_frames, num_states))
    neg_inf = torch.tensor(float("-inf"), device=device)
    # Before the first frame we stand in state 0 with no emission yet: frame 0 then reaches state 0 by a stay and
    # state 1 by a step, exactly CTC's two allowed starts; a row with no frames keeps this and ends in state 0.
    alpha = torch.full((batch, num_states), float("-inf"), device=device)
    alpha[:, 0] = 0.0
    backpointers = torch.zeros(batch, num_frames, num_states, dtype=torch.long, device=device)
    for t in range(num_frames):
        stay = alpha
        step = torch.cat([neg_inf.expand(batch, 1), alpha[:, :-1]], dim=1)
        skip = torch.cat([neg_inf.expand(batch, 2), alpha[:, :-2]], dim=1)[:, :num_states]
        skip = torch.where(can_skip, skip, neg_inf)
        best, move = torch.stack([stay, step, skip], dim=-1).max(dim=-1)
        new_alpha = torch.where(valid_state, best + emissions[:, t], neg_inf)
        active = (t < frame_lengths)[:, None]
        alpha = torch.where(active, new_alpha, alpha)
        backpointers[:, t] = torch.where(active, move, torch.zeros_like(move))

    last_blank = 2 * target_lengths
    end_blank = alpha.gather(1, last_blank[:, None]).squeeze(1)
    end_label = alpha.gather(1, (last_blank - 1).clamp(min=0)[:, None]).squeeze(1)
    end_label = torch.where(target_lengths > 0, end_label, neg_inf)
    path_log_prob = torch.maximum(end_blank, end_label)
    state = torch.where(end_label > end_blank, last_blank - 1, last_blank)

    states = torch.zeros(batch, num_frames, dtype=torch.long, device=device)
    for t in range(num_frames - 1, -1, -1):
        states[:, t] = state
        state = (state - backpointers[:, t].gather(1, state[:, None]).squeeze(1)).clamp(min=0)
    alignment = extended.gather(1, states)
    frame_is_real = torch.arange(num_frames, device=device) < frame_lengths[:, None]
    usable = frame_is_real & torch.isfinite(path_log_prob)[:, None]
    alignment = torch.where(usable, alignment, torch.full_like(alignment, blank_id))
    return alignment, path_log_prob


def glancing_mix(
    frame_tokens: torch.Tensor,
    predicted: torch.Tensor,
    aligned: torch.Tensor,
    frame_mask: torch.Tensor,
    ratio: float,
    blank_id: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Glancing: reveal some gold tokens in the draft input, more where the draft is worse.

    In each row, count the frames whose prediction differs from the aligned gold token, then pick
    `floor(mismatches * ratio)` of the row's frames at random and write their aligned token into the input. Frames
    aligned to the blank keep their input token (the placeholder).

    Args:
        frame_tokens: (batch, frames) the draft input at the frames (placeholders).
        predicted: (batch, frames) argmax of the draft pass.
        aligned: (batch, frames) gold token per frame from `ctc_best_alignment`.
        frame_mask: (batch, frames) bool, frames that may be counted and revealed.
        ratio: in [0, 1].
    Returns:
        the new frame tokens (batch, frames) and the number of frames revealed per row (batch,).
    """
    mismatches = ((predicted != aligned) & frame_mask).sum(1)
    num_reveal = (mismatches.float() * ratio).floor().long()
    scores = uniform(frame_tokens.shape, frame_tokens.device, generator)
    scores = scores.masked_fill(~frame_mask, -1.0)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
    reveal = (rank < num_reveal[:, None]) & frame_mask & (aligned != blank_id)
    return torch.where(reveal, aligned, frame_tokens), reveal.sum(1)


def random_deletion(tokens: torch.Tensor, pad_id: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Delete a uniformly random number of each row's inner tokens (never the first or last token).

    Args:
        tokens: (batch, length) rows `bos ... eos` padded with `pad_id`.
    Returns:
        (batch, length') the rows with k inner tokens removed, k uniform in {0, ..., number of inner tokens}.
    """
    inner = inner_mask(tokens, pad_id)
    num_inner = inner.sum(1)
    num_delete = (uniform(num_inner.shape, tokens.device, generator) * (num_inner + 1)).floor()
    num_delete = torch.minimum(num_delete.long(), num_inner)
    scores = uniform(tokens.shape, tokens.device, generator).masked_fill(~inner, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    delete = inner & (rank < num_delete[:, None])
    return compact(tokens, (tokens != pad_id) & ~delete, pad_id)


@dataclass
class EditOracle:
    """Edits that turn `tokens` into `targets` with deletions and insertions only.

    delete_mask: (batch, length) bool over `tokens`.
    insertion_counts: (batch, length' - 1) tokens to insert in each gap of the rows left after the deletions.
    inserted_tokens: (batch, k) the tokens to write into those placeholders, in order, padded with pad_id.
    """

    delete_mask: torch.Tensor
    insertion_counts: torch.Tensor
    inserted_tokens: torch.Tensor


def edit_oracle(tokens: torch.Tensor, targets: torch.Tensor, pad_id: int) -> EditOracle:
    """The insertion/deletion-only edits (a longest common subsequence alignment) from `tokens` to `targets`.

    Applying them gives `targets` exactly:
    `fill_placeholders(insert_placeholders(apply_deletions(tokens, delete_mask), insertion_counts), inserted)`.
    Insertions must fall between two kept tokens: the rows of both tensors start with the same token and end with
    the same token, which occur nowhere else (bos ... eos), as DEER's sequences do.

    Uses rapidfuzz's compiled `Indel.editops`, one call per row. (Training only: the import sits in a try block, so
    transformers does not demand rapidfuzz to load a pushed model's code for inference.)
    """
    try:
        from rapidfuzz.distance import Indel
    except ImportError as error:
        raise ImportError("DEER's training objective needs rapidfuzz: pip install rapidfuzz") from error

    batch = tokens.shape[0]
    token_rows = [row[row != pad_id].tolist() for row in tokens.cpu()]
    target_rows = [row[row != pad_id].tolist() for row in targets.cpu()]
    delete_mask = torch.zeros(tokens.shape, dtype=torch.bool)
    kept_lengths = []
    counts_per_row, inserted_per_row = [], []
    for b, (source, target) in enumerate(zip(token_rows, target_rows)):
        operations = Indel.editops(source, target)
        deleted = {op.src_pos for op in operations if op.tag == "delete"}
        delete_mask[b, sorted(deleted)] = True
        kept_before = [0]  # kept_before[p]: kept tokens among source[:p]
        for p in range(len(source)):
            kept_before.append(kept_before[-1] + (p not in deleted))
        kept_lengths.append(kept_before[-1])
        counts = [0] * max(kept_before[-1] - 1, 0)
        inserted = []
        for op in operations:
            if op.tag != "insert":
                continue
            gap = kept_before[op.src_pos] - 1
            if not 0 <= gap < len(counts):
                raise ValueError(
                    f"edit_oracle: row {b} needs an insertion before its first or after its last token; rows must "
                    "start and end with the same special tokens (bos ... eos)."
                )
            counts[gap] += 1
            inserted.append(target[op.dest_pos])
        counts_per_row.append(counts)
        inserted_per_row.append(inserted)

    num_gaps = max(max(kept_lengths, default=0) - 1, 0)
    insertion_counts = torch.zeros(batch, num_gaps, dtype=torch.long)
    num_inserted = max((len(row) for row in inserted_per_row), default=0)
    inserted_tokens = torch.full((batch, num_inserted), pad_id, dtype=torch.long)
    for b in range(batch):
        insertion_counts[b, : len(counts_per_row[b])] = torch.tensor(counts_per_row[b], dtype=torch.long)
        inserted_tokens[b, : len(inserted_per_row[b])] = torch.tensor(inserted_per_row[b], dtype=torch.long)
    device = tokens.device
    return EditOracle(delete_mask.to(device), insertion_counts.to(device), inserted_tokens.to(device))


def apply_deletions(tokens: torch.Tensor, delete_mask: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Remove the tokens marked in `delete_mask` (batch, length); returns (batch, length')."""
    return compact(tokens, (tokens != pad_id) & ~delete_mask, pad_id)


def insert_placeholders(
    tokens: torch.Tensor,
    insertion_counts: torch.Tensor,
    placeholder_id: int,
    pad_id: int,
    max_length: int | None = None,
) -> torch.Tensor:
    """Insert `insertion_counts[b, i]` placeholders between tokens i and i+1 of row b.

    Args:
        tokens: (batch, length).
        insertion_counts: (batch, length - 1) non-negative; counts for gaps past a row's end are ignored.
        max_length: if given, each row keeps at most this many tokens: gaps are served left to right until the
            budget is spent.
    Returns:
        (batch, length') rows with the placeholders in place, padded with `pad_id`.

    Example: `a b c` with counts `[2, 0]` gives `a _ _ b c`.
    """
    batch, length = tokens.shape
    lengths = (tokens != pad_id).sum(1)
    gap_is_real = torch.arange(length - 1, device=tokens.device) < (lengths[:, None] - 1)
    counts = torch.where(gap_is_real, insertion_counts.clamp(min=0), torch.zeros_like(insertion_counts))
    if max_length is not None:
        budget = (max_length - lengths).clamp(min=0)
        spent_before = counts.cumsum(1) - counts
        counts = torch.minimum(counts, (budget[:, None] - spent_before).clamp(min=0))
    shift = torch.cat([torch.zeros_like(counts[:, :1]), counts.cumsum(1)], dim=1) if length else counts
    new_lengths = lengths + counts.sum(1)
    width = int(new_lengths.max()) if batch else 0
    new_position = torch.arange(length, device=tokens.device) + shift
    new_position = torch.where(tokens != pad_id, new_position, torch.full_like(new_position, width))
    out = tokens.new_full((batch, width + 1), placeholder_id)
    out.scatter_(1, new_position, tokens)
    out = out[:, :width]
    beyond = torch.arange(width, device=tokens.device) >= new_lengths[:, None]
    return out.masked_fill(beyond, pad_id)


def fill_placeholders(tokens: torch.Tensor, fill_values: torch.Tensor, placeholder_id: int) -> torch.Tensor:
    """Write `fill_values` (one per placeholder, in row-major order) into the placeholders of `tokens`."""
    return tokens.masked_scatter(tokens == placeholder_id, fill_values.to(tokens.dtype))
