"""Trimming the vocabulary: the embeddings and the LM head keep only the rows of the tokens a task uses, and
`config.vocabulary_ids` maps rows back to the tokenizer's ids (`DeerEmbeddings.token_rows` / `.row_tokens` use the
maps).
"""

import torch
from torch import nn

from .configuration_deer import DeerConfig


def vocabulary_maps(config: DeerConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """For a trimmed vocabulary: token id -> embedding row (ids not kept read as unk), and row -> token id."""
    if config.vocabulary_ids is None:
        return None, None
    row_to_token = torch.tensor(config.vocabulary_ids, dtype=torch.long)
    token_to_row = torch.full((config.vocab_size,), config.vocabulary_ids.index(config.unk_token_id), dtype=torch.long)
    token_to_row[row_to_token] = torch.arange(len(row_to_token))
    return token_to_row, row_to_token


def _token_id_list(token_ids, vocab_size: int) -> torch.Tensor:
    """`trim_vocabulary`'s argument as a flat LongTensor of ids: ids (a tensor, or any iterable of integers) or a
    boolean mask of `vocab_size` entries. Anything else is a TypeError/ValueError that says what was given."""
    try:
        values = (
            token_ids
            if isinstance(token_ids, torch.Tensor)
            else torch.as_tensor([int(i) if not isinstance(i, (bool, float, str)) else i for i in token_ids])
        )
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"trim_vocabulary: token_ids must be integer ids or a boolean mask ({error}).") from None
    if values.dtype == torch.bool:
        if values.dim() != 1 or len(values) != vocab_size:
            raise ValueError(
                f"trim_vocabulary: a boolean mask needs one entry per token ({vocab_size}), got shape "
                f"{tuple(values.shape)}."
            )
        return values.nonzero().flatten()
    if values.is_floating_point() or values.is_complex():
        raise TypeError(f"trim_vocabulary: token_ids must be integers, got {values.dtype}.")
    values = values.flatten().long()
    if values.numel() and (values.min() < 0 or values.max() >= vocab_size):
        raise ValueError(f"trim_vocabulary: token ids must be in [0, {vocab_size}).")
    return values


class DeerVocabularyMixin:
    """`trim_vocabulary` for `DeerForConditionalGeneration`, and the guard that keeps `resize_token_embeddings` from
    breaking a trimmed model's map."""

    @torch.no_grad()
    def trim_vocabulary(self, token_ids):
        """Keep only `token_ids` (plus the special tokens and unk) in the embeddings and the LM head, in place: the
        LM head, the largest matrix of a small model, shrinks to the tokens a task uses (DEER trims XLM-R's 250k
        vocabulary this way). The tokenizer is unchanged; `config.vocabulary_ids` maps rows to its ids and is saved
        with the model. Ids not kept read as unk on input and are never generated. `token_ids` may also be a boolean
        mask over the whole vocabulary (True = keep). Returns the model."""
        config = self.config
        if config.unk_token_id is None:
            raise ValueError(
                "trim_vocabulary needs config.unk_token_id (the token that ids not kept read as); set it "
                "from the tokenizer: model.config.unk_token_id = tokenizer.unk_token_id."
            )
        token_ids = _token_id_list(token_ids, config.vocab_size)
        special = {
            config.pad_token_id,
            config.bos_token_id,
            config.eos_token_id,
            config.placeholder_token_id,
            config.unk_token_id,
        }
        keep = set(token_ids.tolist()) | special
        if config.vocabulary_ids is not None:  # trimmed before: what is gone stays gone
            keep &= set(config.vocabulary_ids)
        keep = sorted(keep)
        rows = self.token_rows(keep)
        old_embeddings, old_decoder = self.get_input_embeddings(), self.lm_head.decoder
        device, dtype = old_embeddings.weight.device, old_embeddings.weight.dtype
        config.vocabulary_ids = keep
        embeddings = nn.Embedding(
            len(keep), config.hidden_size, padding_idx=keep.index(config.pad_token_id), device=device, dtype=dtype
        )
        embeddings.weight.copy_(old_embeddings.weight[rows])
        decoder = nn.Linear(config.hidden_size, len(keep), device=device, dtype=dtype)
        decoder.weight.copy_(old_decoder.weight[rows])
        decoder.bias.copy_(old_decoder.bias[rows])
        self.set_input_embeddings(embeddings)
        self.lm_head.decoder = decoder
        token_to_row, row_to_token = vocabulary_maps(config)
        self.model.embeddings.token_to_row = token_to_row.to(device)
        self.model.embeddings.row_to_token = row_to_token.to(device)
        if config.tie_word_embeddings:
            self.tie_weights()
        return self

    def resize_token_embeddings(self, *args, **kwargs):
        if self.config.vocabulary_ids is not None:
            raise ValueError(
                "this model's vocabulary is trimmed (config.vocabulary_ids maps its rows to token ids): "
                "resize_token_embeddings would break that map. Resize before trim_vocabulary, or reload "
                "the untrimmed model."
            )
        return super().resize_token_embeddings(*args, **kwargs)
