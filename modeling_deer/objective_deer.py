"""DEER's training objective, for `DeerForConditionalGeneration.forward`: a glanced CTC draft loss, then the
insertion, word and deletion losses on the passes decoding makes; plus the label checks and the blank's calibration
before training.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .draft_deer import chunk_positions, collapse_frames, frame_words, frame_words_and_confidences
from .edit_ops import (
    apply_deletions,
    choose_rows,
    compact,
    ctc_best_alignment,
    edit_oracle,
    fill_placeholders,
    glancing_mix,
    inner_mask,
    insert_placeholders,
    random_deletion,
    trim_padding,
    uniform,
)
from .outputs_deer import DeerEncoderOutput, DeerSeq2SeqLMOutput


# A training step scores every draft frame and every placeholder against every LM-head row: above `SCORES_PER_CHUNK`
# scores (draft_deer.py), the LM head runs a chunk of positions at a time, keeps only what the losses read (CTC: the
# blank's and the targets' columns; the word loss: the loss and each argmax) and recomputes each chunk's scores in the
# backward pass.
# The confidence thresholds a re-drafting row of a training batch draws from (uniformly): its frames above the
# threshold are revealed. Decoding's `reveal_threshold` is chosen in this range.
REDRAFT_THRESHOLDS = (0.5, 1.0)


@dataclass
class FullSizeRecord:
    """In-place distillation (`DeerConfig.distillation_weight`): what the full size saw and said in one training
    step, filled by its pass of the objective; the smaller levels of the same step read the same inputs and learn
    these detached distributions (log-probabilities) besides the gold targets. Edit fields stay None in a CTC-only
    phase."""

    glanced: torch.Tensor | None = None  # the CTC pass's input (batch, canvas)
    fits: torch.Tensor | None = None  # (batch,) rows whose target fits the frames
    frame_log_probs: torch.Tensor | None = None  # (real frames, rows) the draft frames' distributions
    edit_rows: torch.Tensor | None = None  # the rows the edit passes ran on (None: all)
    kept: torch.Tensor | None = None  # the insertion pass's input: the target after random deletions
    insertion_counts: torch.Tensor | None = None
    inserted_tokens: torch.Tensor | None = None
    predicted: torch.Tensor | None = None  # the deletion pass's input
    deletion_targets: torch.Tensor | None = None
    insertion_log_probs: torch.Tensor | None = None  # (gaps, max_insertions)
    word_log_probs: torch.Tensor | None = None  # (placeholders, rows)
    deletion_log_probs: torch.Tensor | None = None  # (inner tokens, 2)

    @property
    def filled(self) -> bool:
        return self.glanced is not None


class DeerObjectiveMixin:
    """The loss of `DeerForConditionalGeneration`: `check_labels` -> `deer_loss` (draft, CTC) -> `_edit_losses`."""

    @torch.no_grad()
    def calibrate_blank(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, force: bool = False
    ) -> float:
        """Start the CTC blank level with the best word: set the blank's bias so that, over the draft frames of
        these (real, training) sources, its mean score equals the mean of each frame's best word score. A converted
        MLM has no score for "nothing here"; a blank far behind every word is learned too slowly (Adam moves a bias
        by about the learning rate per step), and drafts then merge neighbouring words. Run once, on a few dozen
        training sources, before training (`training.train` does); a calibrated model (`config.blank_calibrated`)
        is left alone unless `force`. Returns the bias set (or the current one)."""
        config = self.config
        if self.blank_head is None:
            raise ValueError("calibrate_blank needs a model with separate_blank_head=True.")
        if config.blank_calibrated and not force:
            return float(self.blank_head.bias)
        attention_mask = self.check_source(input_ids, attention_mask)
        was_training = self.training
        self.eval()
        try:
            canvas = self.draft_canvas(input_ids, attention_mask)
            encoder_output, hidden_states = self.encode_and_target_pass(input_ids, attention_mask, canvas)
            frames = hidden_states[:, 1:-1][inner_mask(canvas, config.pad_token_id)[:, 1:-1]]
            excluded = self.token_rows(
                [config.placeholder_token_id, config.bos_token_id, config.eos_token_id, config.pad_token_id]
            )
            gaps = []  # the LM head a chunk of frames at a time: frames x vocabulary at once can be gigabytes
            for part in frames.split(chunk_positions(self)):
                features = self.lm_head.transform(part)
                words = self.lm_head.decoder(features).float()
                words[:, excluded] = float("-inf")
                gaps.append(words.max(-1).values - (features @ self.blank_head.weight[0]).float())
            bias = float(torch.cat(gaps).mean())
        finally:
            self.train(was_training)
        self.blank_head.bias.fill_(bias)
        config.blank_calibrated = True
        return bias

    def check_labels(self, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Validate a target batch (`bos ... eos` rows, -100 or pad after them); returns it padded with pad."""
        config = self.config
        if (
            not isinstance(labels, torch.Tensor)
            or labels.is_floating_point()
            or labels.is_complex()
            or (labels.dtype == torch.bool)
        ):
            kind = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise TypeError(f"labels must be a LongTensor of token ids (padding -100), got {kind}.")
        labels = labels.long()
        if labels.dim() != 2 or labels.shape[0] != 0 and labels.shape[1] < 2:
            raise ValueError(
                f"labels must have shape (batch, length >= 2) holding bos ... eos; got {tuple(labels.shape)}."
            )
        if labels.shape[0] != batch_size:
            raise ValueError(
                f"labels has {labels.shape[0]} rows but input_ids has {batch_size}: one target per source."
            )
        outside = (labels != -100) & ((labels < 0) | (labels >= config.vocab_size))
        if outside.any():
            row, column = (int(index) for index in outside.nonzero()[0])
            raise ValueError(
                f"labels row {row} holds {int(labels[row, column])} at position {column}, outside the "
                f"vocabulary [0, {config.vocab_size}) (and not the padding -100)."
            )
        targets = labels.masked_fill(labels == -100, config.pad_token_id)
        targets = compact(targets, targets != config.pad_token_id, config.pad_token_id)
        lengths = (targets != config.pad_token_id).sum(1)
        last = targets.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        if (lengths < 2).any() or (targets[:, 0] != config.bos_token_id).any() or (last != config.eos_token_id).any():
            raise ValueError(
                f"every labels row must be bos ({config.bos_token_id}) ... eos ({config.eos_token_id}), padded with "
                "-100: tokenize the targets with the special tokens added."
            )
        if (targets == config.placeholder_token_id).any():
            raise ValueError(
                f"labels contain the placeholder/mask token ({config.placeholder_token_id}), which DEER reserves."
            )
        if targets.shape[1] > config.max_sequence_length:
            raise ValueError(
                f"a labels row has {targets.shape[1]} tokens but the position table holds "
                f"{config.max_sequence_length}; truncate the targets."
            )
        return targets

    def deer_loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_output: DeerEncoderOutput,
        targets: torch.Tensor,
        sparsity_loss: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        full_size: FullSizeRecord | None = None,
        glancing_ratio: float | None = None,
        ctc_only: bool = False,
    ) -> DeerSeq2SeqLMOutput:
        """The objective at one pruning level. With in-place distillation, `full_size` is empty on the full size's
        pass (which fills it) and filled on the smaller levels' (which read its inputs and learn its outputs).
        `glancing_ratio` and `ctc_only`: this step's schedule (`forward`)."""
        config = self.config
        pad, placeholder = config.pad_token_id, config.placeholder_token_id
        teacher = full_size if full_size is not None and full_size.filled else None
        weights = (config.insertion_loss_weight, config.word_loss_weight, config.deletion_loss_weight)
        weights = (0.0, 0.0, 0.0) if ctc_only else weights
        glancing_ratio = config.glancing_ratio if glancing_ratio is None else glancing_ratio

        # 1-3. Draft with glancing, then the CTC loss of the gold target's inner tokens over the draft frames.
        canvas = self.draft_canvas(input_ids, attention_mask)
        frame_mask = inner_mask(canvas, pad)[:, 1:-1]
        frame_lengths = frame_mask.sum(1)
        gold_inner = compact(targets, inner_mask(targets, pad), pad)
        inner_lengths = (targets != pad).sum(1) - 2
        # The LM head scores rows: the CTC targets and blank are mapped to rows, its choices back to tokens. CTC
        # reads each row's columns (the blank, then its target rows) and its targets as indices into them.
        gold_rows, blank_row = self.token_rows(gold_inner), int(self.token_rows(placeholder))
        columns, column_targets = ctc_columns(gold_rows, blank_row)
        own_draft = None
        if teacher is not None:  # a smaller level: the full size's input
            glanced, fits = teacher.glanced, teacher.fits
        else:
            with torch.no_grad():
                hidden_states = self.target_pass(canvas, _detached(encoder_output))[:, 1:-1]
                redraft = self.training and config.redraft_ratio > 0  # only re-drafting rows read the confidences
                frame_scores, best_rows, frame_tokens, confidences = frame_choices(
                    self, hidden_states, columns, redraft
                )
                alignment, path_score = ctc_best_alignment(
                    frame_scores, frame_lengths, column_targets, inner_lengths, 0
                )
                fits = torch.isfinite(path_score)
                glanced_frames, _ = glancing_mix(
                    canvas[:, 1:-1],
                    self.row_tokens(best_rows),
                    self.row_tokens(columns.gather(1, alignment)),
                    frame_mask & fits[:, None],
                    glancing_ratio if self.training else 0.0,
                    placeholder,
                    # (evaluation reveals nothing, and leaves torch's global generator where it was)
                    None if self.training else torch.Generator(canvas.device).manual_seed(0),
                )
                if redraft:
                    glanced_frames = self._redraft_input(
                        canvas[:, 1:-1], glanced_frames, frame_tokens, confidences, frame_mask
                    )
            glanced = torch.cat([canvas[:, :1], glanced_frames, canvas[:, -1:]], dim=1)
            if any(weights) and config.draft_edit_ratio > 0:  # the draft decoding would write from these frames
                own_draft = collapse_frames(self, frame_tokens[frame_mask], canvas, frame_mask)
        decoder_hidden_states = decoder_attentions = None
        if output_hidden_states or output_attentions:  # the CTC pass, with what it was asked to return
            hidden_states, decoder_hidden_states, decoder_attentions = self.target_pass_outputs(
                glanced, encoder_output, output_hidden_states, output_attentions
            )
        else:
            hidden_states = self.target_pass(glanced, encoder_output)
        hidden_states = hidden_states[:, 1:-1]
        glanced_scores, mean_log_probs = ctc_frame_scores(self, hidden_states, columns)
        ctc_loss = _ctc_loss(
            glanced_scores,
            mean_log_probs,
            frame_lengths,
            column_targets,
            inner_lengths,
            fits,
            config.ctc_label_smoothing,
        )
        distillation_loss = None
        if teacher is not None:
            distillation_loss = config.ctc_loss_weight * _head_distillation(
                self, self.draft_logits, hidden_states[frame_mask], teacher.frame_log_probs
            )
        elif full_size is not None:
            full_size.glanced, full_size.fits = glanced, fits
            full_size.frame_log_probs = _head_log_probs(self, self.draft_logits, hidden_states[frame_mask].detach())

        edit_losses = (None, None, None)
        loss = config.ctc_loss_weight * ctc_loss
        if any(weights):  # a CTC-only phase of training skips the edit passes altogether
            edit_losses, edit_distillation = self._edit_losses(
                encoder_output, targets, own_draft, weights, teacher, full_size if teacher is None else None
            )
            if edit_distillation is not None:
                distillation_loss = distillation_loss + edit_distillation
        elif self.training:  # every trained parameter still gets a gradient, 0: DDP may expect one from each
            unused = (*self.insertion_head.parameters(), *self.deletion_head.parameters())
            loss = loss + 0.0 * sum(parameter.sum() for parameter in unused)
        for weight, component in zip(weights, edit_losses):
            if component is not None:
                loss = loss + weight * component
        if sparsity_loss is not None:
            loss = loss + sparsity_loss
        if distillation_loss is not None:
            loss = loss + config.distillation_weight * distillation_loss
        insertion_loss, word_loss, deletion_loss = edit_losses
        return DeerSeq2SeqLMOutput(
            loss=loss,
            ctc_loss=ctc_loss.detach(),
            insertion_loss=insertion_loss.detach() if insertion_loss is not None else None,
            word_loss=word_loss.detach() if word_loss is not None else None,
            deletion_loss=deletion_loss.detach() if deletion_loss is not None else None,
            sparsity_loss=sparsity_loss.detach() if sparsity_loss is not None else None,
            distillation_loss=distillation_loss.detach() if distillation_loss is not None else None,
            num_unfit_targets=(~fits).sum(),
            encoder_last_hidden_state=encoder_output.last_hidden_state,
            decoder_hidden_states=decoder_hidden_states,
            decoder_attentions=decoder_attentions,
        )

    def _redraft_input(
        self,
        canvas_frames: torch.Tensor,
        glanced_frames: torch.Tensor,
        frame_tokens: torch.Tensor,
        confidences: torch.Tensor,
        frame_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The CTC pass's input for a `redraft_ratio` share of the rows, drawn afresh every step: instead of the gold
        tokens glancing reveals, the canvas with the model's own draft words written into the frames it is surer of
        than a threshold drawn per row, uniform in [`REDRAFT_THRESHOLDS`]; the CTC loss then teaches the pass to
        redraft around them, as a re-drafting round (`refinement="redraft"`) asks of it. All frames (batch, frames)."""
        batch = canvas_frames.shape[0]
        rows = torch.rand(batch, device=canvas_frames.device) < self.config.redraft_ratio
        low, high = REDRAFT_THRESHOLDS
        thresholds = low + (high - low) * torch.rand(batch, device=canvas_frames.device)
        reveal = frame_mask & (frame_tokens != self.config.placeholder_token_id) & (confidences >= thresholds[:, None])
        own = torch.where(reveal, frame_tokens, canvas_frames)
        return torch.where(rows[:, None], own, glanced_frames)

    def _edit_losses(
        self,
        encoder_output: DeerEncoderOutput,
        targets: torch.Tensor,
        own_draft: torch.Tensor | None,
        weights: tuple[float, float, float],
        teacher: FullSizeRecord | None = None,
        record: FullSizeRecord | None = None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """4. The insertion, word and deletion losses, on the passes decoding makes: (insert placeholders) ->
        (fill) -> (delete) -> gold. Each row's inputs come from the gold target (the paper: y_del, a random
        subsequence of it; then y_pred, y_del completed by the model's own words) or, for a `draft_edit_ratio`
        share of the rows, from the model's own draft (deleting what the oracle deletes from it leaves a
        subsequence of the gold that the insertions complete). In training with `edit_rows_ratio` < 1, only that
        share of the rows, drawn at random, takes part.

        In-place distillation: the full size's pass fills `record` with its inputs and output distributions; a
        smaller level's reads them from `teacher` instead of drawing its own, and also returns its weighted KL
        terms from them (else None), each weighted as its loss is (`weights`: this step's insertion, word and
        deletion weights)."""
        config = self.config
        insertion_weight, word_weight, deletion_weight = weights
        pad, placeholder = config.pad_token_id, config.placeholder_token_id
        if teacher is not None:  # a smaller level: the full size's rows and inputs
            rows = teacher.edit_rows
            if rows is not None:
                encoder_output, targets = encoder_output.select_rows(rows), trim_padding(targets[rows], pad)
            kept, insertion_counts, inserted_tokens = (
                teacher.kept,
                teacher.insertion_counts,
                teacher.inserted_tokens,
            )
        else:
            rows = None
            if self.training and config.edit_rows_ratio < 1:  # the edit passes on a random share of the rows
                rows = torch.randperm(len(targets), device=targets.device)
                rows = rows[: max(1, round(config.edit_rows_ratio * len(targets)))].sort().values
                encoder_output, targets = encoder_output.select_rows(rows), trim_padding(targets[rows], pad)
                own_draft = trim_padding(own_draft[rows], pad) if own_draft is not None else None
            # Evaluation draws its random deletions from a fixed seed, so that the same data gives the same loss.
            generator = None if self.training else torch.Generator(targets.device).manual_seed(0)
            kept = random_deletion(targets, pad, generator)
            use_draft = None
            if own_draft is not None:
                use_draft = uniform(targets.shape[:1], targets.device, generator) < config.draft_edit_ratio
                draft_kept = apply_deletions(own_draft, edit_oracle(own_draft, targets, pad).delete_mask, pad)
                kept = choose_rows(use_draft, draft_kept, kept, pad)
            insertions = edit_oracle(kept, targets, pad)
            insertion_counts, inserted_tokens = insertions.insertion_counts, insertions.inserted_tokens

        hidden_states = self.target_pass(kept, encoder_output)
        gap_mask = kept[:, 1:] != pad
        insertion_logits = self.insertion_logits(hidden_states)[gap_mask]
        insertion_loss = _cross_entropy(
            insertion_logits,
            insertion_counts.clamp(max=config.max_insertions - 1)[gap_mask],
            config.insertion_label_smoothing,
        )

        with_placeholders = insert_placeholders(kept, insertion_counts, placeholder, pad)
        placeholder_mask = with_placeholders == placeholder
        placeholder_states = self.target_pass(with_placeholders, encoder_output)[placeholder_mask]
        word_targets = inserted_tokens[inserted_tokens != pad]
        word_loss, word_rows = _word_loss(
            self, placeholder_states, self.token_rows(word_targets), config.word_label_smoothing
        )
        if teacher is not None:
            predicted, deletion_targets = teacher.predicted, teacher.deletion_targets
        else:
            predicted = fill_placeholders(with_placeholders, self.row_tokens(word_rows), placeholder)
            if use_draft is not None:
                predicted = choose_rows(use_draft, own_draft, predicted, pad)
            deletion_targets = edit_oracle(predicted, targets, pad).delete_mask
        hidden_states = self.target_pass(predicted, encoder_output)
        inner = inner_mask(predicted, pad)
        deletion_logits = self.deletion_logits(hidden_states[inner])
        deletion_loss = _cross_entropy(
            deletion_logits, deletion_targets[inner].long(), config.deletion_label_smoothing
        )

        distillation = None
        if teacher is not None:
            distillation = (
                insertion_weight * _distillation(insertion_logits, teacher.insertion_log_probs)
                + word_weight * _head_distillation(self, self.word_logits, placeholder_states, teacher.word_log_probs)
                + deletion_weight * _distillation(deletion_logits, teacher.deletion_log_probs)
            )
        elif record is not None:
            record.edit_rows, record.kept, record.predicted = rows, kept, predicted
            record.insertion_counts, record.inserted_tokens = insertion_counts, inserted_tokens
            record.deletion_targets = deletion_targets
            record.insertion_log_probs = insertion_logits.detach().float().log_softmax(-1)
            record.word_log_probs = _head_log_probs(self, self.word_logits, placeholder_states.detach())
            record.deletion_log_probs = deletion_logits.detach().float().log_softmax(-1)
        return (insertion_loss, word_loss, deletion_loss), distillation


def _detached(encoder_output: DeerEncoderOutput) -> DeerEncoderOutput:
    return DeerEncoderOutput(
        last_hidden_state=encoder_output.last_hidden_state.detach(),
        key_values=tuple((key.detach(), value.detach()) for key, value in encoder_output.key_values),
        attention_mask=encoder_output.attention_mask,
        gates=encoder_output.gates,
    )


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy; zero (with a graph) when there is nothing to predict."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def _distillation(logits: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || softmax(logits)): logits (n, classes), the teacher's detached
    log-probabilities (n, classes); zero (with a graph) when there is nothing to learn."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    return _kl_sum(logits, teacher_log_probs) / len(logits)


def _kl_sum(logits: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    return F.kl_div(logits.float().log_softmax(-1), teacher_log_probs, reduction="sum", log_target=True)


def _head_distillation(model, score, hidden_states: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """`_distillation` of an LM-head-sized `score` (a method: hidden states (n, hidden) -> (n, rows)), run on
    `chunk_positions` positions at a time, each chunk recomputed in the backward pass when there are several."""
    if len(hidden_states) == 0:
        return hidden_states.sum() * 0.0
    size = chunk_positions(model)
    chunks = list(zip(hidden_states.split(size), teacher_log_probs.split(size)))
    recompute = torch.is_grad_enabled() and len(chunks) > 1
    total = 0.0
    for part, part_teacher in chunks:
        if recompute:
            total = total + checkpoint(_head_kl_chunk, score, part, part_teacher, use_reentrant=False)
        else:
            total = total + _head_kl_chunk(score, part, part_teacher)
    return total / len(hidden_states)


def _head_kl_chunk(score, hidden_states: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    return _kl_sum(score(hidden_states), teacher_log_probs)


@torch.no_grad()
def _head_log_probs(model, score, hidden_states: torch.Tensor) -> torch.Tensor:
    """The log-probabilities (n, rows) an LM-head-sized `score` gives hidden states (n, hidden), by chunks."""
    size = chunk_positions(model)
    parts = [score(part).float().log_softmax(-1) for part in hidden_states.split(size)]
    return torch.cat(parts) if parts else hidden_states.new_zeros(0, model.config.embedding_rows)


def ctc_columns(gold_rows: torch.Tensor, blank_row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM-head rows CTC reads for each row of targets (batch, S): (batch, 1 + S) columns, the blank then the
    row's target rows; and the targets as indices into those columns, a repeated row pointing at its first column
    (so that CTC still needs a blank between two equal neighbours)."""
    columns = torch.cat([gold_rows.new_full((gold_rows.shape[0], 1), blank_row), gold_rows], dim=1)
    if gold_rows.shape[1] == 0:  # every target empty: nothing to point at
        return columns, gold_rows.clone()
    first_equal = (gold_rows[:, :, None] == gold_rows[:, None, :]).int().argmax(-1)
    return columns, 1 + first_equal


def _frame_chunks(
    model, hidden_states: torch.Tensor, columns: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Draft frames (batch, frames, hidden) and each frame's row `columns` (batch, K), flattened to positions and
    split into chunks of `chunk_positions` positions (always at least one chunk, empty if there are
    no frames)."""
    size = chunk_positions(model)
    frames, hidden_size = hidden_states.shape[1:]
    return list(
        zip(hidden_states.reshape(-1, hidden_size).split(size), columns.repeat_interleave(frames, dim=0).split(size))
    )


def ctc_frame_scores(model, hidden_states: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From draft frames' hidden states (batch, frames, hidden): each frame's log-probabilities of its row's `columns`
    (batch, frames, K) and its mean log-probability over all LM-head rows (batch, frames), the LM head run on
    `SCORES_PER_CHUNK // rows` frames at a time. With more than one chunk and gradients on, each chunk's scores
    are recomputed in the backward pass instead of kept."""
    batch, frames = hidden_states.shape[:2]
    chunks = _frame_chunks(model, hidden_states, columns)
    recompute = torch.is_grad_enabled() and len(chunks) > 1
    picked, means = [], []
    for part, part_columns in chunks:
        if recompute:
            part_picked, part_mean = checkpoint(_chunk_log_probs, model, part, part_columns, use_reentrant=False)
        else:
            part_picked, part_mean = _chunk_log_probs(model, part, part_columns)
        picked.append(part_picked)
        means.append(part_mean)
    return torch.cat(picked).view(batch, frames, columns.shape[1]), torch.cat(means).view(batch, frames)


@torch.no_grad()
def frame_choices(model, hidden_states: torch.Tensor, columns: torch.Tensor, with_confidences: bool = True) -> tuple:
    """What the glancing pass needs from draft frames' hidden states (batch, frames, hidden): each frame's scores of
    its row's `columns` (batch, frames, K), not normalised (every CTC path takes one score from each frame, so the
    normaliser shifts all paths alike and the best alignment is the same), its argmax row, its `frame_words` token
    (what decoding would write there) and, `with_confidences`, that token's probability (else None), all three
    (batch, frames). The LM head runs on
    `SCORES_PER_CHUNK // rows` frames at a time."""
    batch, frames = hidden_states.shape[:2]
    picked, best_rows, words, confidences = [], [], [], []
    for part, part_columns in _frame_chunks(model, hidden_states, columns):
        logits = model.draft_logits(part)
        picked.append(logits.gather(-1, part_columns).float())
        best_rows.append(logits.argmax(-1))
        if with_confidences:  # changes logits: last
            part_words, part_confidences = frame_words_and_confidences(model, logits)
            confidences.append(part_confidences)
        else:
            part_words = frame_words(model, logits)
        words.append(part_words)
    return (
        torch.cat(picked).view(batch, frames, columns.shape[1]),
        torch.cat(best_rows).view(batch, frames),
        torch.cat(words).view(batch, frames),
        torch.cat(confidences).view(batch, frames) if with_confidences else None,
    )


def _word_loss(model, hidden_states: torch.Tensor, target_rows: torch.Tensor, label_smoothing: float) -> tuple:
    """The mean cross-entropy of the words that fill placeholders (hidden states (n, hidden), target rows (n,)) and
    each placeholder's argmax row, the LM head run on `SCORES_PER_CHUNK // rows` placeholders at a time (each
    chunk recomputed in the backward pass)."""
    size = chunk_positions(model)
    if len(target_rows) <= size:  # one chunk
        logits = model.word_logits(hidden_states)
        return _cross_entropy(logits, target_rows, label_smoothing), logits.detach().argmax(-1)
    total, rows = 0.0, []
    for part, part_targets in zip(hidden_states.split(size), target_rows.split(size)):
        part_loss, part_rows = checkpoint(_word_chunk, model, part, part_targets, label_smoothing, use_reentrant=False)
        total, rows = total + part_loss, rows + [part_rows]
    return total / len(target_rows), torch.cat(rows)


def _word_chunk(model, hidden_states: torch.Tensor, target_rows: torch.Tensor, label_smoothing: float) -> tuple:
    logits = model.word_logits(hidden_states).float()
    loss = F.cross_entropy(logits, target_rows, label_smoothing=label_smoothing, reduction="sum")
    return loss, logits.detach().argmax(-1)


class ColumnLogProbs(torch.autograd.Function):
    """From scores (n, rows) and `columns` (n, K): the log-probabilities of each position's columns (n, K) and its
    mean log-probability over all rows (n,), as `log_softmax(scores)` would give them. Its backward pass makes one
    (n, rows) tensor where autograd's, through gather, logsumexp and mean, makes several: with a small model the
    element-wise work on the scores cost more than the LM head's matrix products."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, columns: torch.Tensor):
        normaliser = scores.logsumexp(-1, keepdim=True)
        ctx.save_for_backward(scores, normaliser, columns)
        return scores.gather(-1, columns) - normaliser, scores.mean(-1) - normaliser.squeeze(-1)

    @staticmethod
    def backward(ctx, picked_gradient: torch.Tensor, mean_gradient: torch.Tensor):
        # d picked_k / d scores_j = [j == columns_k] - softmax_j;  d mean / d scores_j = 1 / rows - softmax_j
        scores, normaliser, columns = ctx.saved_tensors
        total = picked_gradient.sum(-1, keepdim=True) + mean_gradient[:, None]
        gradient = (scores - normaliser).exp_().mul_(-total).add_(mean_gradient[:, None] / scores.shape[-1])
        return gradient.scatter_add_(-1, columns, picked_gradient), None


def _chunk_log_probs(model, hidden_states: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ColumnLogProbs.apply(model.draft_logits(hidden_states).float(), columns)


def _ctc_loss(
    log_probs, mean_log_probs, frame_lengths, targets, target_lengths, fits, label_smoothing
) -> torch.Tensor:
    """CTC loss per target token, mixed with the mean log-probability over the vocabulary (label smoothing), over
    the rows whose target fits the frames. log_probs: (batch, frames, K) of `ctc_columns` (the blank is column 0),
    mean_log_probs: (batch, frames)."""
    if not fits.any() or log_probs.shape[1] == 0:  # no frames at all: only empty targets fit, at probability 1
        return log_probs.sum() * 0.0
    negative_log_likelihood = F.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        frame_lengths,
        target_lengths,
        blank=0,
        reduction="none",
        zero_infinity=True,
    )
    # F.ctc_loss's gradient is exp(log_probs) - posterior, right only for log-probabilities over every class (a
    # log_softmax's backward cancels the first term). These are a few columns of the vocabulary, so take that term
    # back out: a term of value zero whose gradient is -exp(log_probs) on the real frames.
    frame_mask = torch.arange(log_probs.shape[1], device=log_probs.device) < frame_lengths[:, None]
    exp_sum = (log_probs.exp() * frame_mask[..., None]).sum((1, 2))
    negative_log_likelihood = negative_log_likelihood - (exp_sum - exp_sum.detach())
    negative_log_likelihood = negative_log_likelihood / target_lengths.clamp(min=1)
    mean_log_prob = (mean_log_probs * frame_mask).sum(1) / frame_lengths.clamp(min=1)
    per_row = (1 - label_smoothing) * negative_log_likelihood - label_smoothing * mean_log_prob
    return per_row[fits].mean()
