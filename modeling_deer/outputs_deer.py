"""What DEER's passes return: the source encoded once (`DeerEncoderOutput`) and `forward`'s losses
(`DeerSeq2SeqLMOutput`)."""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class DeerEncoderOutput(ModelOutput):
    """The source, encoded once.

    last_hidden_state: (batch, source_length, hidden) the backbone's final hidden states.
    key_values: per layer, the (key, value) of the source tokens, each (batch, heads, source_length, head_dim):
        every target pass attends to them instead of re-running the source.
    attention_mask: (batch, source_length) bool, True on real source tokens.
    gates: the pruning level this call computes at, per layer (head gate, neuron gate), or None for every unit on:
        it travels with the encoding, so that every target pass of the call uses the level its source pass used.
    hidden_states: with `output_hidden_states`, the embeddings' output and each layer's, (batch, source_length,
        hidden) each.
    attentions: with `output_attentions`, each layer's attention weights, (batch, heads, source_length,
        source_length).
    """

    last_hidden_state: torch.Tensor | None = None
    key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
    attention_mask: torch.Tensor | None = None
    gates: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None

    def select_rows(self, rows: torch.Tensor) -> "DeerEncoderOutput":
        """The same encoding for a subset of the batch (decoding drops finished rows)."""
        return DeerEncoderOutput(
            last_hidden_state=self.last_hidden_state[rows],
            key_values=tuple((key[rows], value[rows]) for key, value in self.key_values),
            attention_mask=self.attention_mask[rows],
            gates=self.gates,
        )


@dataclass
class DeerSeq2SeqLMOutput(ModelOutput):
    """Output of `DeerForConditionalGeneration.forward`.

    loss: weighted sum of the components below (when `labels` are given).
    ctc_loss, insertion_loss, word_loss, deletion_loss: DEER's four losses.
    sparsity_loss: the pruning regulariser (when training with sparsity levels).
    distillation_loss: with in-place distillation (`DeerConfig.distillation_weight`), the smaller levels' KL terms
        from the full size, summed over the levels of the step, each level's weighted as in its loss.
    num_unfit_targets: rows whose target cannot fit the draft's frames; they are left out of the CTC loss.
    encoder_last_hidden_state: (batch, source_length, hidden).
    hidden_states, attentions: with `output_hidden_states` / `output_attentions`, the source pass's, per layer (as
        `DeerEncoderOutput`'s).
    decoder_hidden_states, decoder_attentions: with them and `labels`, the draft pass that the CTC loss reads (the
        canvas with glanced gold tokens, attending to [source ; canvas]): the embeddings' output and each layer's,
        (batch, canvas_length, hidden), and each layer's weights, (batch, heads, canvas_length, source_length +
        canvas_length).
    """

    loss: torch.Tensor | None = None
    ctc_loss: torch.Tensor | None = None
    insertion_loss: torch.Tensor | None = None
    word_loss: torch.Tensor | None = None
    deletion_loss: torch.Tensor | None = None
    sparsity_loss: torch.Tensor | None = None
    distillation_loss: torch.Tensor | None = None
    num_unfit_targets: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_attentions: tuple[torch.Tensor, ...] | None = None
