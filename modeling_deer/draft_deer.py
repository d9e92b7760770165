"""The draft: one non-autoregressive pass over bos + frames + eos, each frame's best word, CTC-collapsed into a
sentence. Decoding (generation_deer.py: the first guess, and the "redraft" rounds) and training (objective_deer.py:
the glancing pass, the edit losses on the model's own draft) both take it from here.

    draft_canvas     the pass's input: bos, ceil(upsample_ratio x source length) - 2 frames, eos
    frame_pass       each real frame's word (and, if asked, its probability) from the pass's hidden states
    draft / redraft  decoding's first pass (with the source's encoding) and a re-drafting round
    collapse_frames  frame words -> `bos ... eos` rows (merge repeats, drop blanks)

The LM head scores at most `SCORES_PER_CHUNK` (position, vocabulary row) pairs at a time (`chunk_positions`).
"""

from dataclasses import dataclass

import torch

from .edit_ops import add_bos_eos, ctc_collapse, inner_mask, source_anchored_frames
from .pruning_deer import OWN_LEVEL


# Decoding and training score this many (position, vocabulary row) pairs at a time at most, so that memory does not
# grow with vocabulary x positions: a batch of 64 long sources has ~16,000 frames, and over XLM-R's 250k rows their
# float32 scores alone would take 16 GB. Decoding keeps only each position's best token; training keeps what its
# losses read and recomputes each chunk's scores in the backward pass.
SCORES_PER_CHUNK = 2**24


def chunk_positions(model) -> int:
    """How many positions the LM head scores at once: `SCORES_PER_CHUNK` // its rows, at least one."""
    return max(1, SCORES_PER_CHUNK // model.config.embedding_rows)


def draft_lengths(config, source_lengths: torch.Tensor) -> torch.Tensor:
    """Frames of each row's draft, bos and eos included: ceil(upsample_ratio * source_length), at least 2, at most the
    position table. (float64, like Python's floats, so the rounding is exact.)"""
    lengths = torch.ceil(source_lengths.double() * config.upsample_ratio).long()
    return lengths.clamp(min=2, max=config.max_sequence_length)


def draft_canvas(config, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The draft input for a source batch: bos, draft_length - 2 frames, eos; padded. (batch, draft_length)
    The frames read the placeholder, or the source's tokens spread evenly over them (`config.draft_input`)."""
    lengths = draft_lengths(config, attention_mask.sum(1))
    positions = torch.arange(int(lengths.max()), device=input_ids.device)
    if config.draft_input == "source":
        frames = source_anchored_frames(input_ids, attention_mask, lengths - 2, config.placeholder_token_id)
        canvas = torch.nn.functional.pad(
            frames, (1, len(positions) - 1 - frames.shape[1]), value=config.placeholder_token_id
        )
    else:
        canvas = torch.full((len(lengths), len(positions)), config.placeholder_token_id, device=input_ids.device)
    canvas[:, 0] = config.bos_token_id
    canvas = canvas.masked_fill(positions == (lengths[:, None] - 1), config.eos_token_id)
    return canvas.masked_fill(positions >= lengths[:, None], config.pad_token_id)


@dataclass
class DraftFrames:
    """A draft before its CTC collapse: the pass's input `canvas` (batch, draft length: bos, frames, eos, padding),
    which of its frames are real (`frame_mask`, (batch, frames)), and each frame's token and that token's
    probability (`words`, `confidences`, (batch, frames); padding frames hold the canvas and 0; `confidences` is None
    where no re-drafting round needs them)."""

    canvas: torch.Tensor
    frame_mask: torch.Tensor
    words: torch.Tensor
    confidences: torch.Tensor

    def select_rows(self, rows: torch.Tensor) -> "DraftFrames":
        return DraftFrames(self.canvas[rows], self.frame_mask[rows], self.words[rows], self.confidences[rows])

    def update_rows(self, rows: torch.Tensor, new: "DraftFrames") -> "DraftFrames":
        return DraftFrames(
            self.canvas,
            self.frame_mask,
            self.words.index_copy(0, rows, new.words),
            self.confidences.index_copy(0, rows, new.confidences),
        )

    def collapse(self, model, cap: int | None = None) -> torch.Tensor:
        """The `bos ... eos` rows these frames spell (`collapse_frames`), each cut to at most `cap` tokens (its
        first words, then eos)."""
        config = model.config
        sequences = collapse_frames(model, self.words[self.frame_mask], self.canvas, self.frame_mask)
        if cap is not None and sequences.shape[1] > cap:
            too_long = (sequences != config.pad_token_id).sum(1) > cap
            sequences = sequences[:, :cap].clone()
            sequences[too_long, cap - 1] = config.eos_token_id
        return sequences


def frame_pass(
    model,
    canvas: torch.Tensor,
    frame_mask: torch.Tensor,
    hidden_states: torch.Tensor,
    blank_penalty: float,
    with_confidences: bool = True,
) -> DraftFrames:
    """Each real frame's token (`frame_words`) and, `with_confidences`, its probability
    (`frame_words_and_confidences`, one more pass over the scores) from a draft pass's hidden states (batch, draft
    length, hidden), a chunk of frames at a time."""
    frames = hidden_states[:, 1:-1][frame_mask]  # only real frames go through the LM head
    if with_confidences:
        chosen = [
            frame_words_and_confidences(model, model.draft_logits(part), blank_penalty)
            for part in frames.split(chunk_positions(model))
        ]
    else:
        chosen = [
            (frame_words(model, model.draft_logits(part), blank_penalty), None)
            for part in frames.split(chunk_positions(model))
        ]
    words = canvas[:, 1:-1].masked_scatter(frame_mask, torch.cat([part[0] for part in chosen]))
    confidences = None
    if with_confidences:
        confidences = torch.zeros(frame_mask.shape, device=canvas.device).masked_scatter(
            frame_mask, torch.cat([part[1] for part in chosen])
        )
    return DraftFrames(canvas, frame_mask, words, confidences)


def draft(
    model,
    input_ids,
    attention_mask,
    blank_penalty: float,
    cap: int | None = None,
    gates=OWN_LEVEL,
    with_confidences: bool = False,
):
    """Encode the source and run bos + frames + eos in the same pass, choose each frame's token (`frame_words`) and
    collapse them. Returns the source's encoder output (its K/V cache, for the rounds), the draft (each row cut to
    at most `cap` tokens) and its `DraftFrames` (for re-drafting rounds, which need `with_confidences`)."""
    canvas = model.draft_canvas(input_ids, attention_mask)
    frame_mask = inner_mask(canvas, model.config.pad_token_id)[:, 1:-1]
    encoder_output, hidden_states = model.encode_and_target_pass(input_ids, attention_mask, canvas, gates)
    frames = frame_pass(model, canvas, frame_mask, hidden_states, blank_penalty, with_confidences)
    return encoder_output, frames.collapse(model, cap), frames


def redraft(model, frames: DraftFrames, encoder_output, reveal_threshold: float, blank_penalty: float) -> DraftFrames:
    """One re-drafting round: the draft pass again, on the canvas with the words of the frames whose confidence is
    at least `reveal_threshold` written in (the blank is never revealed), every frame chosen afresh. The model
    learns to use them from training rows that read its own confident words (`DeerConfig.redraft_ratio`). One pass
    per round."""
    reveal = (
        frames.frame_mask
        & (frames.words != model.config.placeholder_token_id)
        & (frames.confidences >= reveal_threshold)
    )
    canvas = frames.canvas.clone()
    canvas[:, 1:-1] = torch.where(reveal, frames.words, frames.canvas[:, 1:-1])
    hidden_states = model.target_pass(canvas, encoder_output)
    return frame_pass(model, frames.canvas, frames.frame_mask, hidden_states, blank_penalty)


def best_tokens(model, scores: torch.Tensor, never: list[int]) -> torch.Tensor:
    """Each row's best token id from LM-head scores (n, embedding rows), the ids in `never` excluded: the argmax,
    mapped from rows back to tokenizer ids. Changes `scores` in place."""
    scores[:, model.token_rows(never)] = float("-inf")
    return model.row_tokens(scores.argmax(-1))


def frame_words(model, frame_scores: torch.Tensor, blank_penalty: float = 0.0) -> torch.Tensor:
    """Each draft frame's token from its scores (frames, rows): the argmax, the blank's score lowered by
    `blank_penalty`; the blank (placeholder) is a legal frame output, bos, eos and pad are not. Changes
    `frame_scores` in place."""
    config = model.config
    frame_scores[:, model.token_rows(config.placeholder_token_id)] -= blank_penalty
    return best_tokens(model, frame_scores, [config.bos_token_id, config.eos_token_id, config.pad_token_id])


def frame_words_and_confidences(
    model, frame_scores: torch.Tensor, blank_penalty: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`frame_words`, and each chosen token's probability under the frame's softmax (the blank's score lowered by
    `blank_penalty`): how sure the draft is of it. Re-drafting rounds reveal the frames above a threshold. Changes
    `frame_scores` in place."""
    config = model.config
    frame_scores[:, model.token_rows(config.placeholder_token_id)] -= blank_penalty
    log_normaliser = frame_scores.float().logsumexp(-1)  # before best_tokens rules the specials out
    words = best_tokens(model, frame_scores, [config.bos_token_id, config.eos_token_id, config.pad_token_id])
    chosen = frame_scores.gather(-1, model.token_rows(words)[:, None]).squeeze(-1).float()
    return words, (chosen - log_normaliser).exp()


def collapse_frames(model, words: torch.Tensor, canvas: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """The draft `bos ... eos` from the tokens of its real frames (`frame_words`, in row-major order), CTC-collapsed.
    Decoding and the edit losses on the model's own draft (training) both take it from here."""
    config = model.config
    frame_tokens = canvas[:, 1:-1].masked_scatter(frame_mask, words)
    inner = ctc_collapse(frame_tokens, frame_mask, config.placeholder_token_id, config.pad_token_id)
    return add_bos_eos(inner, config.bos_token_id, config.eos_token_id, config.pad_token_id)
