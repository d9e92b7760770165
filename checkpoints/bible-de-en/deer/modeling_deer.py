"""DEER: one BERT-family masked LM that drafts a whole output in one pass (CTC), then edits it
(delete, insert placeholders, fill), attending to a source encoded once.

Reading order: `DeerEmbeddings`, `DeerAttention`, `DeerLayer`, `DeerModel.encode` / `DeerModel.target_pass` (how
the source K/V cache is made and used), then `DeerForConditionalGeneration.forward` (the training objective). The
decoding loop is in generation_deer.py.
"""

import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput, logging

from .configuration_deer import DeerConfig
from .convert_mlm import convert_mlm_to_deer
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
    source_anchored_frames,
)
from .generation_deer import DeerGenerationConfig, collapse_frames, deer_generate, resolve_generation_config
from .pruning_deer import (
    SparsityReport,
    check_level,
    head_parameter_count,
    linear,
    neuron_parameter_count,
    prune_linear,
    select_units,
    unit_gates,
)


logger = logging.get_logger(__name__)

# A pruning level is set as gates on the layers, which every call shares: one level at a time. generate() and the
# level setters hold this lock, so that two threads decoding at two levels both get their own level's output.
_LEVEL_LOCK = threading.RLock()

SOURCE_TOKEN_TYPE = 0
TARGET_TOKEN_TYPE = 1  # where the backbone has two token types; otherwise 0


@dataclass
class DeerEncoderOutput(ModelOutput):
    """The source, encoded once.

    last_hidden_state: (batch, source_length, hidden) the backbone's final hidden states.
    key_values: per layer, the (key, value) of the source tokens, each (batch, heads, source_length, head_dim):
        every target pass attends to them instead of re-running the source.
    attention_mask: (batch, source_length) bool, True on real source tokens.
    """

    last_hidden_state: torch.Tensor | None = None
    key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
    attention_mask: torch.Tensor | None = None

    def select_rows(self, rows: torch.Tensor) -> "DeerEncoderOutput":
        """The same encoding for a subset of the batch (decoding drops finished rows)."""
        return DeerEncoderOutput(
            last_hidden_state=self.last_hidden_state[rows],
            key_values=tuple((key[rows], value[rows]) for key, value in self.key_values),
            attention_mask=self.attention_mask[rows],
        )


@dataclass
class DeerSeq2SeqLMOutput(ModelOutput):
    """Output of `DeerForConditionalGeneration.forward`.

    loss: weighted sum of the components below (when `labels` are given).
    ctc_loss, insertion_loss, word_loss, deletion_loss: DEER's four losses.
    sparsity_loss: the pruning regulariser (when training with sparsity levels).
    num_unfit_targets: rows whose target cannot fit the draft's frames; they are left out of the CTC loss.
    encoder_last_hidden_state: (batch, source_length, hidden).
    """

    loss: torch.Tensor | None = None
    ctc_loss: torch.Tensor | None = None
    insertion_loss: torch.Tensor | None = None
    word_loss: torch.Tensor | None = None
    deletion_loss: torch.Tensor | None = None
    sparsity_loss: torch.Tensor | None = None
    num_unfit_targets: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------------


def vocabulary_maps(config: DeerConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """For a trimmed vocabulary: token id -> embedding row (ids not kept read as unk), and row -> token id."""
    if config.vocabulary_ids is None:
        return None, None
    row_to_token = torch.tensor(config.vocabulary_ids, dtype=torch.long)
    token_to_row = torch.full((config.vocab_size,), config.vocabulary_ids.index(config.unk_token_id), dtype=torch.long)
    token_to_row[row_to_token] = torch.arange(len(row_to_token))
    return token_to_row, row_to_token


class DeerEmbeddings(nn.Module):
    """Word + position + token type embeddings. Positions count the real tokens of each row from
    `config.position_offset`, so source and target each start at the first position and padding never shifts them.

    With a trimmed vocabulary (`trim_vocabulary`) the word embedding has one row per kept token: `rows` and `tokens`
    translate between the tokenizer's ids and those rows. Everything else in the model works in tokenizer ids."""

    def __init__(self, config: DeerConfig):
        super().__init__()
        token_to_row, row_to_token = vocabulary_maps(config)
        kept = config.vocabulary_ids
        pad_row = config.pad_token_id if kept is None else kept.index(config.pad_token_id)
        self.word_embeddings = nn.Embedding(config.embedding_rows, config.hidden_size, padding_idx=pad_row)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_offset = config.position_offset
        self.register_buffer("token_to_row", token_to_row, persistent=False)
        self.register_buffer("row_to_token", row_to_token, persistent=False)

    def rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids -> embedding rows (the same numbers unless the vocabulary is trimmed)."""
        return token_ids if self.token_to_row is None else self.token_to_row[token_ids]

    def tokens(self, rows: torch.Tensor) -> torch.Tensor:
        """Embedding rows (e.g. an argmax of the LM head) -> tokenizer ids."""
        return rows if self.row_to_token is None else self.row_to_token[rows]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type: int) -> torch.Tensor:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0) + self.position_offset
        token_type = min(token_type, self.token_type_embeddings.num_embeddings - 1)
        embeddings = (
            self.word_embeddings(self.rows(input_ids))
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings.weight[token_type]
        )
        return self.dropout(self.LayerNorm(embeddings))


class DeerAttention(nn.Module):
    """Multi-head self-attention whose queries may also attend to cached keys/values of the source.

    `head_scores` rank the heads for pruning; `head_gate` (set by the model, None = every head on) multiplies each
    head's output by 0 or 1. A layer may have no head left: its attention then adds only the output bias.
    """

    def __init__(self, config: DeerConfig, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = config.head_dim
        inner_size = num_heads * self.head_dim
        self.query = linear(config.hidden_size, inner_size)
        self.key = linear(config.hidden_size, inner_size)
        self.value = linear(config.hidden_size, inner_size)
        self.output = linear(inner_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.head_scores = nn.Parameter(torch.zeros(num_heads))
        self.head_gate: torch.Tensor | None = None

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_mask: torch.Tensor,
        source_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            hidden_states: (batch, length, hidden).
            key_mask: bool, True where a key may be attended: (batch, keys) or (batch, length, keys), with
                keys = source_length + length when `source_key_value` is given, else length.
            source_key_value: cached (key, value) of the source, each (batch, heads, source_length, head_dim).
        Returns:
            the new hidden states and this pass's own (key, value).
        """
        query = self._split_heads(self.query(hidden_states))
        own_key_value = (self._split_heads(self.key(hidden_states)), self._split_heads(self.value(hidden_states)))
        key, value = own_key_value
        if source_key_value is not None:
            key = torch.cat([source_key_value[0], key], dim=2)
            value = torch.cat([source_key_value[1], value], dim=2)
        mask = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None]
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        if self.head_gate is not None:
            context = context * self.head_gate[None, :, None, None]
        context = context.transpose(1, 2).reshape(hidden_states.shape[0], hidden_states.shape[1], -1)
        hidden_states = self.LayerNorm(hidden_states + self.dropout(self.output(context)))
        return hidden_states, own_key_value

    def prune_heads(self, keep: torch.Tensor):
        """Remove the heads where `keep` is False from the weights, in place."""
        rows = (keep[:, None].expand(-1, self.head_dim)).flatten()
        self.query = prune_linear(self.query, rows, dim=0)
        self.key = prune_linear(self.key, rows, dim=0)
        self.value = prune_linear(self.value, rows, dim=0)
        self.output = prune_linear(self.output, rows, dim=1)
        self.head_scores = nn.Parameter(self.head_scores.detach()[keep])
        self.num_heads = int(keep.sum())


class DeerFeedForward(nn.Module):
    """The FFN. `neuron_scores` rank its neurons for pruning; `neuron_gate` (None = all on) switches them."""

    def __init__(self, config: DeerConfig, intermediate_size: int):
        super().__init__()
        self.up = linear(config.hidden_size, intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.down = linear(intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.neuron_scores = nn.Parameter(torch.zeros(intermediate_size))
        self.neuron_gate: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        activations = self.activation(self.up(hidden_states))
        if self.neuron_gate is not None:
            activations = activations * self.neuron_gate
        return self.LayerNorm(hidden_states + self.dropout(self.down(activations)))

    def prune_neurons(self, keep: torch.Tensor):
        """Remove the neurons where `keep` is False from the weights, in place."""
        self.up = prune_linear(self.up, keep, dim=0)
        self.down = prune_linear(self.down, keep, dim=1)
        self.neuron_scores = nn.Parameter(self.neuron_scores.detach()[keep])


class DeerLayer(nn.Module):
    def __init__(self, config: DeerConfig, layer_index: int):
        super().__init__()
        self.attention = DeerAttention(config, config.layer_num_heads[layer_index])
        self.feed_forward = DeerFeedForward(config, config.layer_intermediate_sizes[layer_index])

    def forward(self, hidden_states, key_mask, source_key_value=None):
        hidden_states, own_key_value = self.attention(hidden_states, key_mask, source_key_value)
        return self.feed_forward(hidden_states), own_key_value


class DeerLMHead(nn.Module):
    """BERT's MLM head: dense + activation + LayerNorm, then the decoder tied to the word embeddings."""

    def __init__(self, config: DeerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.embedding_rows)

    def transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The features the decoder (and the blank head) score."""
        return self.LayerNorm(self.activation(self.dense(hidden_states)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class DeerPreTrainedModel(PreTrainedModel):
    config_class = DeerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["DeerLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, DeerLMHead):
            init.zeros_(module.decoder.bias)
        elif isinstance(module, nn.Linear) and module is getattr(self, "blank_head", None):
            # No opinion until calibrate_blank sets the bias from real data.
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, DeerAttention):
            # Equal scores: until training separates them, ties are broken by position (earlier first).
            init.zeros_(module.head_scores)
        elif isinstance(module, DeerFeedForward):
            init.zeros_(module.neuron_scores)
        elif isinstance(module, DeerEmbeddings) and module.token_to_row is not None:
            token_to_row, row_to_token = vocabulary_maps(self.config)
            init.copy_(module.token_to_row, token_to_row)
            init.copy_(module.row_to_token, row_to_token)


class DeerModel(DeerPreTrainedModel):
    """The shared backbone: embeddings and layers. `encode` runs the source; `target_pass` runs any target sequence
    (placeholders, a draft, an edited sentence) against the source's cached keys/values."""

    def __init__(self, config: DeerConfig):
        super().__init__(config)
        self.embeddings = DeerEmbeddings(config)
        self.layers = nn.ModuleList(DeerLayer(config, i) for i in range(config.num_hidden_layers))
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, embeddings):
        self.embeddings.word_embeddings = embeddings

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> DeerEncoderOutput:
        """Source pass: the source attends to itself only. Keeps every layer's source keys/values."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        attention_mask = attention_mask.bool()
        hidden_states = self.embeddings(input_ids, attention_mask, SOURCE_TOKEN_TYPE)
        key_values = []
        for layer in self.layers:
            hidden_states, key_value = layer(hidden_states, attention_mask)
            key_values.append(key_value)
        return DeerEncoderOutput(
            last_hidden_state=hidden_states, key_values=tuple(key_values), attention_mask=attention_mask
        )

    def target_pass(self, target_ids: torch.Tensor, encoder_output: DeerEncoderOutput) -> torch.Tensor:
        """Target pass: target tokens attend to [cached source ; target]. Returns (batch, target_length, hidden)."""
        target_mask = target_ids != self.config.pad_token_id
        key_mask = torch.cat([encoder_output.attention_mask, target_mask], dim=1)
        hidden_states = self.embeddings(target_ids, target_mask, TARGET_TOKEN_TYPE)
        for layer, source_key_value in zip(self.layers, encoder_output.key_values):
            hidden_states, _ = layer(hidden_states, key_mask, source_key_value)
        return hidden_states

    def encode_and_target_pass(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                               target_ids: torch.Tensor) -> tuple[DeerEncoderOutput, torch.Tensor]:
        """`encode` and then `target_pass` in one pass over [source ; target], with the same results: source queries
        attend to source keys only, target queries to both. Fewer, larger matrix products than two passes (on a CPU
        at batch 1 the split costs a BERT-base draft ~15 %); decoding uses it for the draft, whose target is known
        before the source is encoded. Returns the encoder output (the source K/V cache) and the target's states."""
        attention_mask = attention_mask.bool()
        target_mask = target_ids != self.config.pad_token_id
        source_length = input_ids.shape[1]
        hidden_states = torch.cat([self.embeddings(input_ids, attention_mask, SOURCE_TOKEN_TYPE),
                                   self.embeddings(target_ids, target_mask, TARGET_TOKEN_TYPE)], dim=1)
        is_target = torch.arange(hidden_states.shape[1], device=input_ids.device) >= source_length
        sees = is_target[:, None] | ~is_target[None, :]  # (queries, keys): a source query never sees the target
        key_mask = torch.cat([attention_mask, target_mask], dim=1)[:, None, :] & sees[None]
        key_values = []
        for layer in self.layers:
            hidden_states, (key, value) = layer(hidden_states, key_mask)
            # Copies, so that the target's keys and values are not kept alive by the cache.
            key_values.append((key[:, :, :source_length].contiguous(), value[:, :, :source_length].contiguous()))
        encoder_output = DeerEncoderOutput(last_hidden_state=hidden_states[:, :source_length],
                                           key_values=tuple(key_values), attention_mask=attention_mask)
        return encoder_output, hidden_states[:, source_length:]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        return self.encode(input_ids, attention_mask)


class DeerForConditionalGeneration(DeerPreTrainedModel):
    """DEER: the backbone plus its LM head (tied to the word embeddings), a placeholder-insertion head and a deletion
    head. `forward(input_ids, attention_mask, labels)` computes the DEER objective; `generate` decodes."""

    _tied_weights_keys = {"lm_head.decoder.weight": "model.embeddings.word_embeddings.weight"}
    generation_config_class = DeerGenerationConfig
    # The loss is a mean over the batch: the Trainer must scale it under gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: DeerConfig):
        super().__init__(config)
        self.model = DeerModel(config)
        self.lm_head = DeerLMHead(config)
        # How many placeholders go between neighbours i and i+1, from concat(h_i, h_{i+1}).
        self.insertion_head = nn.Linear(2 * config.hidden_size, config.max_insertions)
        # Keep (0) or delete (1) each token.
        self.deletion_head = nn.Linear(config.hidden_size, 2)
        # The CTC blank's own score in the draft, from the LM head's features (see DeerConfig.separate_blank_head).
        self.blank_head = nn.Linear(config.hidden_size, 1) if config.separate_blank_head else None
        # The level `set_sparsity` masks to (evaluation); a physically pruned model starts at its own level.
        self.sparsity_level = config.pruned_sparsity
        self.post_init()

    @classmethod
    def can_generate(cls) -> bool:
        return True

    @classmethod
    def from_mlm(cls, pretrained_model_name_or_path, **config_overrides) -> "DeerForConditionalGeneration":
        """Turn a BERT-, RoBERTa- or XLM-R-style masked LM (a local directory or a Hub id) into a DEER model.

        Every backbone weight and the MLM head are copied; `config_overrides` set DEER fields (e.g.
        `upsample_ratio=3`). A checkpoint without an MLM head (a plain encoder) loads with a warning: the head's
        transform starts fresh and its decoder is tied to the word embeddings.
        """
        return convert_mlm_to_deer(cls, pretrained_model_name_or_path, **config_overrides)

    def save_pretrained(self, save_directory, *args, tokenizer=None, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus `tokenizer=`: save the tokenizer next to the model, so that the
        directory is all `AutoTokenizer` and `pipeline` need."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        tokenizer=None,
        model_card=None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ):
        """Upload everything a user needs in one commit: safetensors weights, `config.json` (with `auto_map`),
        `generation_config.json`, the modeling files for `trust_remote_code=True`, `tokenizer` (if given) and a
        model card (`model_card`, a `huggingface_hub.ModelCard`; default: `build_model_card` with no results).

        A pruned or vocabulary-trimmed model is pushed as it is and loads back with the same shapes. If the upload
        fails, an `OSError` says so; the model in memory is untouched. Returns the commit's `CommitInfo`.
        """
        from huggingface_hub import HfApi

        from .model_card_deer import build_model_card

        api = HfApi(token=token)
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        except Exception as error:
            raise OSError(f"push_to_hub: could not create or reach the repository {repo_id!r} at {api.endpoint}: "
                          f"{error}") from error
        card = model_card if model_card is not None else build_model_card(self, model_name=repo_id, tags=tags)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            card.save(os.path.join(folder, "README.md"))
            try:
                return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                         commit_message=commit_message or "Upload DEER model",
                                         commit_description=commit_description)
            except Exception as error:
                raise OSError(f"push_to_hub: uploading to {repo_id!r} failed, nothing was committed there; the "
                              f"model here is unchanged (save_pretrained it, then retry): {error}") from error

    def get_input_embeddings(self):
        return self.model.embeddings.word_embeddings

    def set_input_embeddings(self, embeddings):
        self.model.embeddings.word_embeddings = embeddings

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, embeddings):
        self.lm_head.decoder = embeddings

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> DeerEncoderOutput:
        return self.model.encode(input_ids, attention_mask)

    def token_rows(self, token_ids) -> torch.Tensor:
        """Tokenizer ids -> LM head rows (identity unless the vocabulary is trimmed)."""
        token_ids = torch.as_tensor(token_ids, device=self.lm_head.decoder.bias.device)
        return self.model.embeddings.rows(token_ids)

    def row_tokens(self, rows: torch.Tensor) -> torch.Tensor:
        """LM head rows (e.g. an argmax) -> tokenizer ids."""
        return self.model.embeddings.tokens(rows)

    def target_pass(self, target_ids: torch.Tensor, encoder_output: DeerEncoderOutput) -> torch.Tensor:
        return self.model.target_pass(target_ids, encoder_output)

    def compile_passes(self, **compile_kwargs) -> "DeerForConditionalGeneration":
        """Compile the backbone passes that every decoding round and training step runs (`encode`, `target_pass`
        and the draft's `encode_and_target_pass`) with `torch.compile`, in place; `compile_kwargs` go to it (default
        `dynamic=True`: lengths change every round). The first calls at new shapes compile (tens of seconds on a
        CPU); the outputs equal the eager ones up to float rounding. Mostly worth it on a GPU, where it removes
        per-operation launch costs. Returns the model."""
        compile_kwargs.setdefault("dynamic", True)
        # Instance attributes shadow the methods, so every caller (generate, forward) takes the compiled versions.
        for name in ("encode", "target_pass", "encode_and_target_pass"):
            setattr(self.model, name, torch.compile(getattr(DeerModel, name).__get__(self.model), **compile_kwargs))
        return self

    # -- input checks ---------------------------------------------------------------------------------------------

    def _check_source(self, input_ids, attention_mask) -> torch.Tensor:
        """Validate a source batch; returns its boolean attention mask."""
        if isinstance(input_ids, Mapping):  # a tokenizer's BatchEncoding passed as the first argument
            raise TypeError("input_ids got the whole tokenizer output (a mapping); unpack it: generate(**batch).")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"input_ids must be an integer torch.Tensor of shape (batch, length), got {type(input_ids).__name__}"
                + (f" of dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor) else "")
                + "; tokenize with return_tensors='pt'."
            )
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}.")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): give at least one non-empty row.")
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a torch.Tensor like input_ids, got {type(attention_mask).__name__}"
                            "; tokenize with return_tensors='pt'.")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}."
            )
        attention_mask = attention_mask.bool()
        lengths = attention_mask.sum(1)
        if (lengths == 0).any():
            rows = (lengths == 0).nonzero().flatten().tolist()
            raise ValueError(f"rows {rows} of input_ids are only padding: every row needs at least one token.")
        longest = int(lengths.max())
        if longest > self.config.max_sequence_length:
            raise ValueError(
                f"a source row has {longest} tokens but this model's position table holds "
                f"{self.config.max_sequence_length}; tokenize with truncation=True, "
                f"max_length={self.config.max_sequence_length}."
            )
        if int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(f"input_ids holds ids outside the vocabulary [0, {self.config.vocab_size}).")
        return attention_mask

    # -- training objective ---------------------------------------------------------------------------------------

    def draft_lengths(self, source_lengths: torch.Tensor) -> torch.Tensor:
        """Frames of each row's draft, bos and eos included: ceil(upsample_ratio * source_length), at least 2, at most
        the position table. (float64, like Python's floats, so the rounding is exact.)"""
        lengths = torch.ceil(source_lengths.double() * self.config.upsample_ratio).long()
        return lengths.clamp(min=2, max=self.config.max_sequence_length)

    def draft_canvas(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The draft input for a source batch: bos, draft_length - 2 frames, eos; padded. (batch, draft_length)
        The frames read the placeholder, or the source's tokens spread evenly over them (`config.draft_input`)."""
        config = self.config
        lengths = self.draft_lengths(attention_mask.sum(1))
        positions = torch.arange(int(lengths.max()), device=input_ids.device)
        if config.draft_input == "source":
            frames = source_anchored_frames(input_ids, attention_mask, lengths - 2, config.placeholder_token_id)
            canvas = torch.nn.functional.pad(frames, (1, len(positions) - 1 - frames.shape[1]),
                                             value=config.placeholder_token_id)
        else:
            canvas = torch.full((len(lengths), len(positions)), config.placeholder_token_id, device=input_ids.device)
        canvas[:, 0] = config.bos_token_id
        canvas = canvas.masked_fill(positions == (lengths[:, None] - 1), config.eos_token_id)
        return canvas.masked_fill(positions >= lengths[:, None], config.pad_token_id)

    def draft_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """LM-head scores of draft frames (..., hidden) -> (..., embedding rows), the blank's from its own head when
        the model has one."""
        features = self.lm_head.transform(hidden_states)
        logits = self.lm_head.decoder(features)
        if self.blank_head is None:
            return logits
        blank_row = self.token_rows([self.config.placeholder_token_id])
        return logits.index_copy(-1, blank_row, self.blank_head(features).to(logits.dtype))

    def draft_frame_log_probs(self, draft: torch.Tensor, encoder_output: DeerEncoderOutput) -> torch.Tensor:
        """Log-probabilities of the draft's frames (every position but bos and eos): (batch, frames - 2, vocab)."""
        hidden_states = self.target_pass(draft, encoder_output)[:, 1:-1]
        return self.draft_logits(hidden_states).float().log_softmax(-1)

    @torch.no_grad()
    def calibrate_blank(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        force: bool = False) -> float:
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
        attention_mask = self._check_source(input_ids, attention_mask)
        was_training = self.training
        self.eval()
        try:
            draft = self.draft_canvas(input_ids, attention_mask)
            encoder_output, hidden_states = self.model.encode_and_target_pass(input_ids, attention_mask, draft)
            frames = hidden_states[:, 1:-1][inner_mask(draft, config.pad_token_id)[:, 1:-1]]
            features = self.lm_head.transform(frames)
            words = self.lm_head.decoder(features)
            excluded = [config.placeholder_token_id, config.bos_token_id, config.eos_token_id, config.pad_token_id]
            words[:, self.token_rows(excluded)] = float("-inf")
            blank_without_bias = features @ self.blank_head.weight[0]
            bias = float((words.max(-1).values - blank_without_bias).mean())
        finally:
            self.train(was_training)
        self.blank_head.bias.fill_(bias)
        config.blank_calibrated = True
        return bias

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> DeerSeq2SeqLMOutput:
        """
        Args:
            input_ids, attention_mask: the source, (batch, source_length).
            labels: the target `bos ... eos`, (batch, target_length), padded with -100 (or pad_token_id).
            token_type_ids: accepted and ignored (source tokens use type 0, target tokens type 1).
        Returns:
            `DeerSeq2SeqLMOutput` with the loss and each of its components when `labels` are given.
        """
        attention_mask = self._check_source(input_ids, attention_mask)
        input_ids = input_ids.long()  # int32 ids (some tokenizers' choice) work too
        targets = self._check_labels(labels, input_ids.shape[0]) if labels is not None else None
        # Training with sparsity levels: this step runs at a sampled level, with straight-through gates.
        sample_level = self.training and bool(self.config.sparsity_levels)
        if sample_level:
            levels = self.config.sparsity_levels
            level = max(levels[int(torch.randint(len(levels), ()))], self.config.pruned_sparsity)
            self._apply_level(level, straight_through=True)
        try:
            encoder_output = self.encode(input_ids, attention_mask)
            if targets is None:
                return DeerSeq2SeqLMOutput(encoder_last_hidden_state=encoder_output.last_hidden_state)
            sparsity_loss = self.sparsity_regularizer() if sample_level else None
            return self._deer_loss(input_ids, attention_mask, encoder_output, targets, sparsity_loss)
        finally:
            if sample_level:
                self._apply_level(self.sparsity_level)

    def _check_labels(self, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
        config = self.config
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex() or (
                labels.dtype == torch.bool):
            kind = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise TypeError(f"labels must be a LongTensor of token ids (padding -100), got {kind}.")
        labels = labels.long()
        if labels.dim() != 2 or labels.shape[0] != 0 and labels.shape[1] < 2:
            raise ValueError(f"labels must have shape (batch, length >= 2) holding bos ... eos; got {tuple(labels.shape)}.")
        if labels.shape[0] != batch_size:
            raise ValueError(f"labels has {labels.shape[0]} rows but input_ids has {batch_size}: one target per source.")
        outside = (labels != -100) & ((labels < 0) | (labels >= config.vocab_size))
        if outside.any():
            row, column = (int(index) for index in outside.nonzero()[0])
            raise ValueError(f"labels row {row} holds {int(labels[row, column])} at position {column}, outside the "
                             f"vocabulary [0, {config.vocab_size}) (and not the padding -100).")
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

    def _deer_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, encoder_output: DeerEncoderOutput,
                   targets: torch.Tensor, sparsity_loss: torch.Tensor | None = None) -> DeerSeq2SeqLMOutput:
        config = self.config
        pad, placeholder = config.pad_token_id, config.placeholder_token_id

        # 1-3. Draft with glancing, then the CTC loss of the gold target's inner tokens over the draft frames.
        draft = self.draft_canvas(input_ids, attention_mask)
        frame_mask = inner_mask(draft, pad)[:, 1:-1]
        frame_lengths = frame_mask.sum(1)
        gold_inner = compact(targets, inner_mask(targets, pad), pad)
        inner_lengths = (targets != pad).sum(1) - 2
        # The LM head scores rows: the CTC targets and blank are mapped to rows, its choices back to tokens.
        gold_rows, blank_row = self.token_rows(gold_inner), int(self.token_rows(placeholder))
        with torch.no_grad():
            frame_log_probs = self.draft_frame_log_probs(draft, _detached(encoder_output))
            alignment, path_log_prob = ctc_best_alignment(
                frame_log_probs, frame_lengths, gold_rows, inner_lengths, blank_row
            )
            fits = torch.isfinite(path_log_prob)
            glanced_frames, _ = glancing_mix(
                draft[:, 1:-1], self.row_tokens(frame_log_probs.argmax(-1)), self.row_tokens(alignment),
                frame_mask & fits[:, None], config.glancing_ratio if self.training else 0.0, placeholder,
            )
        glanced = torch.cat([draft[:, :1], glanced_frames, draft[:, -1:]], dim=1)
        frame_log_probs_glanced = self.draft_frame_log_probs(glanced, encoder_output)
        ctc_loss = _ctc_loss(frame_log_probs_glanced, frame_lengths, gold_rows, inner_lengths, fits, blank_row,
                             config.ctc_label_smoothing)

        weights = (config.insertion_loss_weight, config.word_loss_weight, config.deletion_loss_weight)
        edit_losses = (None, None, None)
        if any(weights):  # a CTC-only phase of training skips the edit passes altogether
            own_draft = self._draft_from_log_probs(frame_log_probs, draft) if config.draft_edit_ratio > 0 else None
            edit_losses = self._edit_losses(encoder_output, targets, own_draft)
        loss = config.ctc_loss_weight * ctc_loss
        for weight, component in zip(weights, edit_losses):
            if component is not None:
                loss = loss + weight * component
        if sparsity_loss is not None:
            loss = loss + sparsity_loss
        insertion_loss, word_loss, deletion_loss = edit_losses
        return DeerSeq2SeqLMOutput(
            loss=loss,
            ctc_loss=ctc_loss.detach(),
            insertion_loss=insertion_loss.detach() if insertion_loss is not None else None,
            word_loss=word_loss.detach() if word_loss is not None else None,
            deletion_loss=deletion_loss.detach() if deletion_loss is not None else None,
            sparsity_loss=sparsity_loss.detach() if sparsity_loss is not None else None,
            num_unfit_targets=(~fits).sum(),
            encoder_last_hidden_state=encoder_output.last_hidden_state,
        )

    def _draft_from_log_probs(self, frame_log_probs: torch.Tensor, draft: torch.Tensor) -> torch.Tensor:
        """The collapsed draft `bos ... eos` that decoding would write from these frame scores."""
        frame_mask = inner_mask(draft, self.config.pad_token_id)[:, 1:-1]
        return collapse_frames(self, frame_log_probs.detach()[frame_mask], draft, frame_mask)

    def _edit_losses(self, encoder_output: DeerEncoderOutput, targets: torch.Tensor,
                     own_draft: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """4. The insertion, word and deletion losses, on the passes decoding makes: (insert placeholders) ->
        (fill) -> (delete) -> gold. Each row's inputs come from the gold target (the paper: y_del, a random
        subsequence of it; then y_pred, y_del completed by the model's own words) or, for a `draft_edit_ratio`
        share of the rows, from the model's own draft (deleting what the oracle deletes from it leaves a
        subsequence of the gold that the insertions complete)."""
        config = self.config
        pad, placeholder = config.pad_token_id, config.placeholder_token_id
        # Evaluation draws its random deletions from a fixed seed, so that the same data gives the same loss.
        generator = None if self.training else torch.Generator(targets.device).manual_seed(0)
        deleted = random_deletion(targets, pad, generator)
        use_draft = None
        if own_draft is not None:
            use_draft = torch.rand(targets.shape[0], device=targets.device, generator=generator) < config.draft_edit_ratio
            draft_kept = apply_deletions(own_draft, edit_oracle(own_draft, targets, pad).delete_mask, pad)
            deleted = choose_rows(use_draft, draft_kept, deleted, pad)

        insertions = edit_oracle(deleted, targets, pad)
        hidden_states = self.target_pass(deleted, encoder_output)
        insertion_logits = self.insertion_head(torch.cat([hidden_states[:, :-1], hidden_states[:, 1:]], dim=-1))
        gap_mask = deleted[:, 1:] != pad
        insertion_loss = _cross_entropy(
            insertion_logits[gap_mask], insertions.insertion_counts.clamp(max=config.max_insertions - 1)[gap_mask],
            config.insertion_label_smoothing,
        )

        with_placeholders = insert_placeholders(deleted, insertions.insertion_counts, placeholder, pad)
        placeholder_mask = with_placeholders == placeholder
        hidden_states = self.target_pass(with_placeholders, encoder_output)
        word_logits = self.lm_head(hidden_states[placeholder_mask])
        word_targets = insertions.inserted_tokens[insertions.inserted_tokens != pad]
        word_loss = _cross_entropy(word_logits, self.token_rows(word_targets), config.word_label_smoothing)

        predicted = fill_placeholders(with_placeholders, self.row_tokens(word_logits.detach().argmax(-1)),
                                      placeholder)
        if use_draft is not None:
            predicted = choose_rows(use_draft, own_draft, predicted, pad)
        deletion_targets = edit_oracle(predicted, targets, pad).delete_mask
        hidden_states = self.target_pass(predicted, encoder_output)
        inner = inner_mask(predicted, pad)
        deletion_loss = _cross_entropy(
            self.deletion_head(hidden_states[inner]), deletion_targets[inner].long(), config.deletion_label_smoothing
        )
        return insertion_loss, word_loss, deletion_loss

    # -- vocabulary trimming ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def trim_vocabulary(self, token_ids) -> "DeerForConditionalGeneration":
        """Keep only `token_ids` (plus the special tokens and unk) in the embeddings and the LM head, in place: the
        LM head, the largest matrix of a small model, shrinks to the tokens a task uses (DEER trims XLM-R's 250k
        vocabulary this way). The tokenizer is unchanged; `config.vocabulary_ids` maps rows to its ids and is saved
        with the model. Ids not kept read as unk on input and are never generated. `token_ids` may also be a boolean
        mask over the whole vocabulary (True = keep). Returns the model."""
        config = self.config
        if config.unk_token_id is None:
            raise ValueError("trim_vocabulary needs config.unk_token_id (the token that ids not kept read as); set it "
                             "from the tokenizer: model.config.unk_token_id = tokenizer.unk_token_id.")
        token_ids = _token_id_list(token_ids, config.vocab_size)
        special = {config.pad_token_id, config.bos_token_id, config.eos_token_id, config.placeholder_token_id,
                   config.unk_token_id}
        keep = set(token_ids.tolist()) | special
        if config.vocabulary_ids is not None:  # trimmed before: what is gone stays gone
            keep &= set(config.vocabulary_ids)
        keep = sorted(keep)
        rows = self.token_rows(keep)
        old_embeddings, old_decoder = self.get_input_embeddings(), self.lm_head.decoder
        device, dtype = old_embeddings.weight.device, old_embeddings.weight.dtype
        config.vocabulary_ids = keep
        embeddings = nn.Embedding(len(keep), config.hidden_size, padding_idx=keep.index(config.pad_token_id),
                                  device=device, dtype=dtype)
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
            raise ValueError("this model's vocabulary is trimmed (config.vocabulary_ids maps its rows to token ids): "
                             "resize_token_embeddings would break that map. Resize before trim_vocabulary, or reload "
                             "the untrimmed model.")
        return super().resize_token_embeddings(*args, **kwargs)

    # -- dynamic pruning (the pieces are in pruning_deer.py) ---------------------------------------------------------

    def _select_units(self, level: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Heads and neurons that `level` keeps, per layer, counted against the unpruned model."""
        config, layers = self.config, self.model.layers
        heads = select_units([layer.attention.head_scores for layer in layers],
                             config.num_attention_heads * config.num_hidden_layers, level)
        neurons = select_units([layer.feed_forward.neuron_scores for layer in layers],
                               config.intermediate_size * config.num_hidden_layers, level)
        return heads, neurons

    def _apply_level(self, level: float, straight_through: bool = False):
        """Set every layer's gates for `level`; none at all at the model's own (pruned) level."""
        layers = self.model.layers
        if level == self.config.pruned_sparsity and not straight_through:
            for layer in layers:
                layer.attention.head_gate = layer.feed_forward.neuron_gate = None
            return
        heads, neurons = self._select_units(level)
        for layer, keep_heads, keep_neurons in zip(layers, heads, neurons):
            layer.attention.head_gate = unit_gates(layer.attention.head_scores, keep_heads, straight_through)
            layer.feed_forward.neuron_gate = unit_gates(layer.feed_forward.neuron_scores, keep_neurons,
                                                        straight_through)

    def _check_reachable(self, level, action: str) -> float:
        level = check_level(level)
        if level < self.config.pruned_sparsity:
            raise ValueError(
                f"{action}({level:g}) after prune_to({self.config.pruned_sparsity:g}): a pruned model cannot grow "
                "back; reload the unpruned checkpoint."
            )
        if level > 0 and not self.config.sparsity_levels and level != self.config.pruned_sparsity:
            logger.warning(
                f"{action}({level:g}) on a model not trained with pruning levels (config.sparsity_levels is empty): "
                "its head and neuron scores were never learned, so whole layers may go and quality will collapse. "
                "Fine-tune with --sparsity_levels 0 0.25 0.5 0.75 first."
            )
        return level

    def set_sparsity(self, level: float) -> "DeerForConditionalGeneration":
        """Mask the model to sparsity `level` (0 = everything on) without touching the weights: evaluate every level
        from one loaded model. Returns the model."""
        with _LEVEL_LOCK:
            self.sparsity_level = self._check_reachable(level, "set_sparsity")
            self._apply_level(self.sparsity_level)
        return self

    @torch.no_grad()
    def prune_to(self, level: float) -> "DeerForConditionalGeneration":
        """Remove, in place, the heads and FFN neurons that `level` drops: the weight matrices shrink, so the model is
        really smaller and faster. The config records the new shapes (save/load keeps them); the surviving scores
        stay, so a later `prune_to` at a higher level works. Returns the model."""
        with _LEVEL_LOCK:
            level = self._check_reachable(level, "prune_to")
            heads, neurons = self._select_units(level)
            for layer, keep_heads, keep_neurons in zip(self.model.layers, heads, neurons):
                layer.attention.prune_heads(keep_heads)
                layer.feed_forward.prune_neurons(keep_neurons)
            self.config.layer_num_heads = [layer.attention.num_heads for layer in self.model.layers]
            self.config.layer_intermediate_sizes = [layer.feed_forward.up.out_features for layer in self.model.layers]
            self.config.pruned_sparsity = level
            self.sparsity_level = level
            self._apply_level(level)
        return self

    def sparsity_report(self) -> SparsityReport:
        """Heads and FFN neurons kept per layer at the current level (masks included), with parameter totals."""
        config = self.config
        heads, neurons = self._select_units(self.sparsity_level)
        heads_per_layer = [int(keep.sum()) for keep in heads]
        neurons_per_layer = [int(keep.sum()) for keep in neurons]
        per_head = head_parameter_count(config.hidden_size, config.head_dim)
        per_neuron = neuron_parameter_count(config.hidden_size)
        return SparsityReport(
            heads_per_layer=heads_per_layer,
            neurons_per_layer=neurons_per_layer,
            original_heads_per_layer=config.num_attention_heads,
            original_neurons_per_layer=config.intermediate_size,
            attention_parameters=per_head * sum(heads_per_layer),
            ffn_parameters=per_neuron * sum(neurons_per_layer),
            original_attention_parameters=per_head * config.num_attention_heads * config.num_hidden_layers,
            original_ffn_parameters=per_neuron * config.intermediate_size * config.num_hidden_layers,
            level=self.sparsity_level,
        )

    def pruning_scores(self) -> list[nn.Parameter]:
        return [score for layer in self.model.layers
                for score in (layer.attention.head_scores, layer.feed_forward.neuron_scores)]

    def sparsity_regularizer(self) -> torch.Tensor:
        """sparsity_weight * mean(sigmoid(score)) over every head and neuron score."""
        scores = torch.cat([score.flatten() for score in self.pruning_scores()])
        return self.config.sparsity_weight * torch.sigmoid(scores).mean()

    def optimizer_parameter_groups(self, weight_decay: float = 0.0, score_learning_rate: float | None = None):
        """Parameter groups for an optimizer: the pruning scores apart (no weight decay, their own learning rate
        when `score_learning_rate` is given), biases and LayerNorms without weight decay."""
        score_ids = {id(score) for score in self.pruning_scores()}
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if id(parameter) in score_ids or not parameter.requires_grad:
                continue
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
        score_group = {"params": self.pruning_scores(), "weight_decay": 0.0}
        if score_learning_rate is not None:
            score_group["lr"] = score_learning_rate
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0},
                score_group]

    # -- decoding -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: DeerGenerationConfig | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ):
        """Decode: a CTC draft, then up to `max_iterations` rounds of delete / insert placeholders / fill.

        Args:
            input_ids, attention_mask: the source, (batch, source_length).
            token_type_ids: accepted (a BERT tokenizer returns them) and ignored: DEER sets token types itself.
            sparsity (`float`, optional): decode this call at this pruning level (masks, as `set_sparsity`), the
                model's own level untouched; calls from several threads each get their own level.
            generation_config: defaults to `self.generation_config`; a plain transformers `GenerationConfig` works
                too (its `max_new_tokens` / `max_length` cap the outputs). Keyword arguments (`max_iterations=2`,
                `blank_penalty=2.0`, `deletion_penalty=2.0`, `eos_penalty=1.0`, `max_new_tokens=20`,
                `stop_when_unchanged=False`, `return_dict_in_generate=True`, `output_history=True`) override it for
                this call. What transformers' tools pass (`synced_gpus`, `use_cache`, the special token ids,
                `labels`, `num_beams=1`, `do_sample=False`, ...) is accepted; beams, sampling and streaming are
                refused with DEER's own choices.
        Returns:
            (batch, length) LongTensor of `bos ... eos` rows padded with pad_token_id, or a `DeerGenerateOutput`
            with `sequences`, per-row `num_iterations` and, if asked, `history`.
        """
        sparsity = kwargs.pop("sparsity", None)
        generation_config = resolve_generation_config(self.generation_config, generation_config, kwargs)
        attention_mask = self._check_source(input_ids, attention_mask)
        with _LEVEL_LOCK:
            if sparsity is None:
                return deer_generate(self, input_ids.long(), attention_mask, generation_config)
            level = self._check_reachable(sparsity, "generate(sparsity=...)")
            self._apply_level(level)  # for this call only
            try:
                return deer_generate(self, input_ids.long(), attention_mask, generation_config)
            finally:
                self._apply_level(self.sparsity_level)

    def adjust_generation_fn(self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path,
                             **kwargs):
        """Called by `from_pretrained`: load generation_config.json as a `DeerGenerationConfig`."""
        if generation_config is not None:
            self.generation_config = DeerGenerationConfig(**generation_config.to_dict())
            return
        loading_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        try:
            self.generation_config = DeerGenerationConfig.from_pretrained(pretrained_model_name_or_path,
                                                                          **loading_kwargs)
        except OSError as error:
            local = os.path.join(str(pretrained_model_name_or_path), loading_kwargs.get("subfolder") or "",
                                 "generation_config.json")
            if os.path.isfile(local) or "not a valid JSON" in str(error):
                # A file that is there but unreadable would silently lose the tuned decoding knobs.
                raise ValueError(f"the model's generation_config.json cannot be read ({error}); fix or delete it "
                                 "(without it DEER decodes with the default knobs).") from error
            logger.info("No generation_config.json found: using the default DeerGenerationConfig.")


def _token_id_list(token_ids, vocab_size: int) -> torch.Tensor:
    """`trim_vocabulary`'s argument as a flat LongTensor of ids: ids (a tensor, or any iterable of integers) or a
    boolean mask of `vocab_size` entries. Anything else is a TypeError/ValueError that says what was given."""
    try:
        values = token_ids if isinstance(token_ids, torch.Tensor) else torch.as_tensor(
            [int(i) if not isinstance(i, (bool, float, str)) else i for i in token_ids])
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"trim_vocabulary: token_ids must be integer ids or a boolean mask ({error}).") from None
    if values.dtype == torch.bool:
        if values.dim() != 1 or len(values) != vocab_size:
            raise ValueError(f"trim_vocabulary: a boolean mask needs one entry per token ({vocab_size}), got shape "
                             f"{tuple(values.shape)}.")
        return values.nonzero().flatten()
    if values.is_floating_point() or values.is_complex():
        raise TypeError(f"trim_vocabulary: token_ids must be integers, got {values.dtype}.")
    values = values.flatten().long()
    if values.numel() and (values.min() < 0 or values.max() >= vocab_size):
        raise ValueError(f"trim_vocabulary: token ids must be in [0, {vocab_size}).")
    return values


def _detached(encoder_output: DeerEncoderOutput) -> DeerEncoderOutput:
    return DeerEncoderOutput(
        last_hidden_state=encoder_output.last_hidden_state.detach(),
        key_values=tuple((key.detach(), value.detach()) for key, value in encoder_output.key_values),
        attention_mask=encoder_output.attention_mask,
    )


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy; zero (with a graph) when there is nothing to predict."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def _ctc_loss(log_probs, frame_lengths, targets, target_lengths, fits, blank_id, label_smoothing) -> torch.Tensor:
    """CTC loss per target token, mixed with the mean log-probability over the vocabulary (label smoothing), over
    the rows whose target fits the frames. log_probs: (batch, frames, vocab)."""
    if not fits.any() or log_probs.shape[1] == 0:  # no frames at all: only empty targets fit, at probability 1
        return log_probs.sum() * 0.0
    negative_log_likelihood = F.ctc_loss(
        log_probs.transpose(0, 1), targets, frame_lengths, target_lengths, blank=blank_id, reduction="none",
        zero_infinity=True,
    )
    negative_log_likelihood = negative_log_likelihood / target_lengths.clamp(min=1)
    frame_mask = torch.arange(log_probs.shape[1], device=log_probs.device) < frame_lengths[:, None]
    mean_log_prob = (log_probs.mean(-1) * frame_mask).sum(1) / frame_lengths.clamp(min=1)
    per_row = (1 - label_smoothing) * negative_log_likelihood - label_smoothing * mean_log_prob
    return per_row[fits].mean()


__all__ = ["DeerForConditionalGeneration", "DeerModel", "DeerPreTrainedModel"]
