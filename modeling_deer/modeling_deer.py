"""DEER: one BERT-family masked LM that drafts a whole output in one pass (CTC), then edits it
(delete, insert placeholders, fill), attending to a source encoded once.

Reading order: `DeerEmbeddings`, `DeerAttention`, `DeerLayer`, `DeerModel.encode` / `DeerModel.target_pass` (how
the source K/V cache is made and used), then `DeerForConditionalGeneration`: the draft's canvas and scores, and
`forward`. The model class keeps to that; the rest is mixed in from one file per concern:

    objective_deer.py    the training objective (`forward` calls `deer_loss`)
    generation_deer.py   `generate` and the decoding loop
    pruning_deer.py      pruning levels: `set_sparsity`, `prune_to`, `sparsity_report`
    vocabulary_deer.py   `trim_vocabulary`
    hub_deer.py          `save_pretrained(..., tokenizer=)`, `push_to_hub`
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple, logging

from .configuration_deer import DeerConfig
from .convert_mlm import convert_mlm_to_deer
from .draft_deer import draft_canvas, draft_lengths
from .generation_deer import DeerGenerationConfig, DeerGenerationMixin
from .hub_deer import DeerHubMixin
from .objective_deer import DeerObjectiveMixin, FullSizeRecord
from .outputs_deer import DeerEncoderOutput, DeerSeq2SeqLMOutput
from .pruning_deer import OWN_LEVEL, DeerPruningMixin, linear, prune_linear
from .vocabulary_deer import DeerVocabularyMixin, vocabulary_maps


logger = logging.get_logger(__name__)

SOURCE_TOKEN_TYPE = 0
TARGET_TOKEN_TYPE = 1  # where the backbone has two token types; otherwise 0


# --------------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------------


class DeerEmbeddings(nn.Module):
    """Word + position + token type embeddings. Positions count the real tokens of each row from
    `config.position_offset`, so source and target each start at the first position and padding never shifts them.

    With a trimmed vocabulary (`trim_vocabulary`) the word embedding has one row per kept token: `token_rows` and
    `row_tokens` translate between the tokenizer's ids and those rows. Everything else in the model works in tokenizer
    ids."""

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

    def token_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids -> embedding rows (the same numbers unless the vocabulary is trimmed)."""
        return token_ids if self.token_to_row is None else self.token_to_row[token_ids]

    def row_tokens(self, rows: torch.Tensor) -> torch.Tensor:
        """Embedding rows (e.g. an argmax of the LM head) -> tokenizer ids."""
        return rows if self.row_to_token is None else self.row_to_token[rows]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type: int) -> torch.Tensor:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0) + self.position_offset
        token_type = min(token_type, self.token_type_embeddings.num_embeddings - 1)
        embeddings = (
            self.word_embeddings(self.token_rows(input_ids))
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings.weight[token_type]
        )
        return self.dropout(self.LayerNorm(embeddings))


def eager_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention written out (the "eager" implementation; the one that can return its weights). `attention_mask` is
    bool, True where a key may be attended. Returns the context (batch, length, heads, head_dim) and the weights
    (batch, heads, length, keys)."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling or query.shape[-1] ** -0.5)
    scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    context = torch.matmul(F.dropout(weights, p=dropout, training=module.training), value)
    return context.transpose(1, 2).contiguous(), weights


class DeerAttention(nn.Module):
    """Multi-head self-attention whose queries may also attend to cached keys/values of the source.

    `head_scores` rank the heads for pruning; a call's `head_gate` (None = every head on) multiplies each head's
    output by 0 or 1. A layer may have no head left: its attention then adds only the output bias. The attention
    function is transformers' of `config._attn_implementation`: "sdpa" (`scaled_dot_product_attention`, the default)
    or "eager" (`eager_attention_forward`, the softmax written out, which also computes the weights a call asks for).
    """

    def __init__(self, config: DeerConfig, num_heads: int):
        super().__init__()
        self.config = config
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
        self.head_scores = nn.Parameter(torch.zeros(num_heads, dtype=torch.float32))
        self.is_causal = False  # read by transformers' attention functions

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_mask: torch.Tensor,
        source_key: torch.Tensor | None = None,
        source_value: torch.Tensor | None = None,
        head_gate: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """
        Args:
            hidden_states: (batch, length, hidden).
            key_mask: bool, True where a key may be attended: (batch, keys) or (batch, length, keys), with
                keys = source_length + length when the source's keys are given, else length.
            source_key, source_value: the source's cached keys and values, each (batch, heads, source_length,
                head_dim), or None.
            head_gate: (heads,) 0 or 1 per head (this call's pruning level), or None.
            output_attentions: also return the attention weights (computed on the eager path).
        Returns:
            the new hidden states, this pass's own (key, value), and the weights (batch, heads, length, keys) or None.
        """
        query = self._split_heads(self.query(hidden_states))
        own_key_value = (self._split_heads(self.key(hidden_states)), self._split_heads(self.value(hidden_states)))
        key, value = own_key_value
        if source_key is not None:
            key = torch.cat([source_key, key], dim=2)
            value = torch.cat([source_value, value], dim=2)
        mask = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None]
        dropout = self.attention_dropout if self.training else 0.0
        if self.num_heads == 0:  # every head pruned: nothing to attend with (CUDA's kernels fail on zero heads)
            context = query.transpose(1, 2)
            weights = query.new_zeros(query.shape[0], 0, query.shape[2], key.shape[2]) if output_attentions else None
        else:
            # transformers' attention functions ("sdpa", "eager", or one registered with AttentionInterface), chosen by
            # the config at each call (`set_attn_implementation` changes it); the weights come from the eager one.
            attention = eager_attention_forward
            if not output_attentions and self.config._attn_implementation != "eager":
                if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # newer transformers; 5.0 indexes it
                    attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, attention)
                else:
                    attention = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
            context, weights = attention(self, query, key, value, mask, dropout=dropout, scaling=None)
        if head_gate is not None:
            context = context * head_gate.to(context.dtype)[None, None, :, None]
        context = context.reshape(hidden_states.shape[0], hidden_states.shape[1], -1)
        hidden_states = self.LayerNorm(hidden_states + self.dropout(self.output(context)))
        return hidden_states, own_key_value, weights

    def prune_heads(self, keep: torch.Tensor):
        """Remove the heads where `keep` is False from the weights, in place."""
        rows = (keep[:, None].expand(-1, self.head_dim)).flatten()
        self.query = prune_linear(self.query, rows, dim=0)
        self.key = prune_linear(self.key, rows, dim=0)
        self.value = prune_linear(self.value, rows, dim=0)
        self.output = prune_linear(self.output, rows, dim=1)
        self.head_scores = nn.Parameter(self.head_scores.detach()[keep], self.head_scores.requires_grad)
        self.num_heads = int(keep.sum())


class DeerFeedForward(nn.Module):
    """The FFN. `neuron_scores` rank its neurons for pruning; a call's `neuron_gate` (None = all on) switches them."""

    def __init__(self, config: DeerConfig, intermediate_size: int):
        super().__init__()
        self.up = linear(config.hidden_size, intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.down = linear(intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.neuron_scores = nn.Parameter(torch.zeros(intermediate_size, dtype=torch.float32))

    def forward(self, hidden_states: torch.Tensor, neuron_gate: torch.Tensor | None = None) -> torch.Tensor:
        activations = self.activation(self.up(hidden_states))
        if neuron_gate is not None:
            activations = activations * neuron_gate.to(activations.dtype)
        return self.LayerNorm(hidden_states + self.dropout(self.down(activations)))

    def prune_neurons(self, keep: torch.Tensor):
        """Remove the neurons where `keep` is False from the weights, in place."""
        self.up = prune_linear(self.up, keep, dim=0)
        self.down = prune_linear(self.down, keep, dim=1)
        self.neuron_scores = nn.Parameter(self.neuron_scores.detach()[keep], self.neuron_scores.requires_grad)


class DeerLayer(GradientCheckpointingLayer):
    """Attention and feed-forward. Under `activation_checkpointing_enable()` (gradient checkpointing) a training pass
    keeps only each layer's inputs and recomputes the layer in the backward pass (every tensor is passed positionally,
    as checkpointing needs)."""

    def __init__(self, config: DeerConfig, layer_index: int):
        super().__init__()
        self.attention = DeerAttention(config, config.layer_num_heads[layer_index])
        self.feed_forward = DeerFeedForward(config, config.layer_intermediate_sizes[layer_index])

    def forward(
        self,
        hidden_states,
        key_mask,
        source_key=None,
        source_value=None,
        head_gate=None,
        neuron_gate=None,
        output_attentions: bool = False,
    ):
        """`head_gate`, `neuron_gate`: this call's gates for the layer (its pruning level, `DeerPruningMixin
        .level_gates`), or None for every unit on. They travel with the call: no state is set on the modules.
        Returns the hidden states, the layer's own key and value and, if asked, its attention weights (a flat tuple:
        checkpointing with `use_reentrant=True` tracks gradients through tensors at the top level only)."""
        hidden_states, (key, value), weights = self.attention(
            hidden_states, key_mask, source_key, source_value, head_gate, output_attentions=output_attentions
        )
        return self.feed_forward(hidden_states, neuron_gate), key, value, weights


def requested_outputs(config: DeerConfig, output_hidden_states: bool | None, output_attentions: bool | None) -> dict:
    """The per-layer outputs a call asks for (None: the config's `output_hidden_states` / `output_attentions`)."""
    return {
        "output_hidden_states": config.output_hidden_states if output_hidden_states is None else output_hidden_states,
        "output_attentions": config.output_attentions if output_attentions is None else output_attentions,
    }


# Lengths that `compile_passes(buckets=LENGTH_BUCKETS)` pads every pass to: a few static shapes for every round.
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


# Up to this many positions, the LM head multiplies its rows by the features rather than the features by its rows
# (`DeerLMHead.score`).
FEW_POSITIONS = 16


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

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder's scores of `features` (..., hidden) -> (..., rows), as `decoder(features)`. For a few positions
        (an edit round's placeholders) the product is taken the other way round, rows x features^T, the same scores
        up to float rounding: a CPU matrix product repacks its second operand on every call, and for the LM head's
        tall matrix that copy costs more than the product itself (two placeholders against 30k rows: 3x faster)."""
        flat = features.reshape(-1, features.shape[-1])
        if len(flat) > FEW_POSITIONS:
            return self.decoder(features)
        scores = torch.addmm(self.decoder.bias[:, None], self.decoder.weight, flat.T).T
        return scores.reshape(*features.shape[:-1], scores.shape[-1])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.score(self.transform(hidden_states))


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class DeerPreTrainedModel(PreTrainedModel):
    config_class = DeerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["DeerLayer"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True
    # The pruning scores stay float32 when the model loads in bfloat16 / float16 (`dtype=`): levels rank thousands
    # of scores that differ in their last bits, and at 8 bits of mantissa many would tie and change what is kept.
    _keep_in_fp32_modules_strict = ["head_scores", "neuron_scores"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading re-creates every parameter trainable: the pruning scores go back to what the config says.
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_unused_scores()  # (output_loading_info=True)
        return loaded

    def scores_learned(self) -> bool:
        """Whether the pruning scores learn with the weights: only where pruning levels are trained
        (`config.sparsity_levels`) and ranked by learning (`config.level_ranking="learned"`)."""
        return bool(self.config.sparsity_levels) and self.config.level_ranking == "learned"

    def units_ranked_by_importance(self) -> bool:
        """Whether pruning levels are trained with their units ranked by measured importance
        (`config.level_ranking="importance"`, `DeerPruningMixin.rank_units`) instead of learned scores."""
        return bool(self.config.sparsity_levels) and self.config.level_ranking == "importance"

    def freeze_unused_scores(self):
        """The pruning scores train only where they learn (`scores_learned`): otherwise they are frozen, so that no
        trained parameter goes without a gradient (DDP without find_unused_parameters). Called at construction and
        after loading; call it again after changing the levels or the ranking."""
        learned = self.scores_learned()
        for module in self.modules():
            if isinstance(module, DeerAttention):
                module.head_scores.requires_grad_(learned)
            elif isinstance(module, DeerFeedForward):
                module.neuron_scores.requires_grad_(learned)

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
        self.freeze_unused_scores()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, embeddings):
        self.embeddings.word_embeddings = embeddings

    def run_layers(
        self,
        hidden_states: torch.Tensor,
        key_mask: torch.Tensor,
        source_key_values: tuple | None = None,
        gates: tuple | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple:
        """Every layer over `hidden_states`, attending to the source's cached `source_key_values` too where given,
        at the pruning `gates` (per layer, or None). Returns the last hidden states, each layer's own (key, value),
        and, if asked, the hidden states (the embeddings', then each layer's) and each layer's attention weights."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        key_values = []
        for index, layer in enumerate(self.layers):
            source_key, source_value = source_key_values[index] if source_key_values is not None else (None, None)
            head_gate, neuron_gate = gates[index] if gates is not None else (None, None)
            hidden_states, key, value, weights = layer(
                hidden_states,
                key_mask,
                source_key,
                source_value,
                head_gate,
                neuron_gate,
                output_attentions=output_attentions,
            )
            key_values.append((key, value))
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, key_values, all_hidden_states, all_attentions

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        gates: tuple | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> DeerEncoderOutput:
        """Source pass: the source attends to itself only. Keeps every layer's source keys/values, and the call's
        pruning `gates` (per layer, or None) for the target passes."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        attention_mask = attention_mask.bool()
        hidden_states = self.embeddings(input_ids, attention_mask, SOURCE_TOKEN_TYPE)
        hidden_states, key_values, all_hidden_states, all_attentions = self.run_layers(
            hidden_states, attention_mask, None, gates, output_hidden_states, output_attentions
        )
        return DeerEncoderOutput(
            last_hidden_state=hidden_states,
            key_values=tuple(key_values),
            attention_mask=attention_mask,
            gates=gates,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )

    def target_pass(self, target_ids: torch.Tensor, encoder_output: DeerEncoderOutput) -> torch.Tensor:
        """Target pass: target tokens attend to [cached source ; target]. Returns (batch, target_length, hidden)."""
        return self.target_pass_outputs(target_ids, encoder_output)[0]

    def target_pass_outputs(
        self,
        target_ids: torch.Tensor,
        encoder_output: DeerEncoderOutput,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple:
        """`target_pass`, and, if asked, its hidden states per layer and attention weights (over [source ; target]
        keys): (last hidden states, hidden states or None, attentions or None)."""
        target_mask = target_ids != self.config.pad_token_id
        key_mask = torch.cat([encoder_output.attention_mask, target_mask], dim=1)
        hidden_states = self.embeddings(target_ids, target_mask, TARGET_TOKEN_TYPE)
        hidden_states, _, all_hidden_states, all_attentions = self.run_layers(
            hidden_states,
            key_mask,
            encoder_output.key_values,
            encoder_output.gates,
            output_hidden_states,
            output_attentions,
        )
        return hidden_states, all_hidden_states, all_attentions

    def encode_and_target_pass(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        target_ids: torch.Tensor,
        gates: tuple | None = None,
    ) -> tuple[DeerEncoderOutput, torch.Tensor]:
        """`encode` and then `target_pass` in one pass over [source ; target], with the same results: source queries
        attend to source keys only, target queries to both. Fewer, larger matrix products than two passes (on a CPU
        at batch 1 the split costs a BERT-base draft ~15 %); decoding uses it for the draft, whose target is known
        before the source is encoded. Returns the encoder output (the source K/V cache) and the target's states."""
        attention_mask = attention_mask.bool()
        target_mask = target_ids != self.config.pad_token_id
        source_length = input_ids.shape[1]
        hidden_states = torch.cat(
            [
                self.embeddings(input_ids, attention_mask, SOURCE_TOKEN_TYPE),
                self.embeddings(target_ids, target_mask, TARGET_TOKEN_TYPE),
            ],
            dim=1,
        )
        is_target = torch.arange(hidden_states.shape[1], device=input_ids.device) >= source_length
        sees = is_target[:, None] | ~is_target[None, :]  # (queries, keys): a source query never sees the target
        key_mask = torch.cat([attention_mask, target_mask], dim=1)[:, None, :] & sees[None]
        hidden_states, key_values, _, _ = self.run_layers(hidden_states, key_mask, None, gates)
        encoder_output = DeerEncoderOutput(
            last_hidden_state=hidden_states[:, :source_length],
            # Copies, so that the target's keys and values are not kept alive by the cache.
            key_values=tuple(
                (key[:, :, :source_length].contiguous(), value[:, :, :source_length].contiguous())
                for key, value in key_values
            ),
            attention_mask=attention_mask,
            gates=gates,
        )
        return encoder_output, hidden_states[:, source_length:]

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> DeerEncoderOutput:
        """The source pass (`encode`), with the hidden states and attention weights per layer if asked (or if the
        config says so); `return_dict=False` gives a tuple."""
        return self.encode(
            input_ids, attention_mask, **requested_outputs(self.config, output_hidden_states, output_attentions)
        )


class DeerForConditionalGeneration(
    DeerObjectiveMixin, DeerGenerationMixin, DeerPruningMixin, DeerVocabularyMixin, DeerHubMixin, DeerPreTrainedModel
):
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
        # The pruning level every call computes at (see DeerPruningMixin); a pruned model starts at its own level.
        self.sparsity_level = config.pruned_sparsity
        # The backbone passes, torch.compile'd by compile_passes; None: the eager methods of self.model.
        self._compiled_passes: dict | None = None
        self._length_buckets: tuple[int, ...] | None = None  # compile_passes(buckets=...)
        self.post_init()

    @classmethod
    def from_mlm(cls, pretrained_model_name_or_path, **config_overrides) -> "DeerForConditionalGeneration":
        """Turn a BERT-, RoBERTa- or XLM-R-style masked LM (a local directory or a Hub id) into a DEER model.

        Every backbone weight and the MLM head are copied; `config_overrides` set DEER fields (e.g.
        `upsample_ratio=3`). A checkpoint without an MLM head (a plain encoder) loads with a warning: the head's
        transform starts fresh and its decoder is tied to the word embeddings.
        """
        return convert_mlm_to_deer(cls, pretrained_model_name_or_path, **config_overrides)

    def get_input_embeddings(self):
        return self.model.embeddings.word_embeddings

    def set_input_embeddings(self, embeddings):
        self.model.embeddings.word_embeddings = embeddings

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, embeddings):
        self.lm_head.decoder = embeddings

    def compile_passes(self, buckets: tuple[int, ...] | None = None, **compile_kwargs):
        """Compile the three backbone passes that every decoding round and training step runs (`encode`,
        `target_pass`, `encode_and_target_pass`) with `torch.compile`; `compile_kwargs` go to it (default
        `dynamic=True`: lengths change every round). The first calls at new shapes compile (tens of seconds on a
        CPU); the outputs equal the eager ones up to float rounding. Mostly worth it on a GPU, where it removes
        per-operation launch costs. Returns the model.

        `buckets` (lengths, e.g. `LENGTH_BUCKETS`): each pass's source and target are padded (with pad tokens,
        masked out) to the next bucket, so that a few static shapes serve every round: with
        `mode="reduce-overhead"` on CUDA, each shape's CUDA graph is captured once and replayed (`dynamic` then
        defaults to False). Lengths past the last bucket run unpadded."""
        compile_kwargs.setdefault("dynamic", buckets is None)
        self._length_buckets = tuple(sorted(buckets)) if buckets else None
        self._compiled_passes = {
            name: torch.compile(getattr(self.model, name), **compile_kwargs)
            for name in ("encode", "target_pass", "encode_and_target_pass")
        }
        return self

    def _backbone(self, name: str):
        """The backbone pass `name`: compiled after `compile_passes`, else `self.model`'s own method."""
        return self._compiled_passes[name] if self._compiled_passes else getattr(self.model, name)

    def _to_bucket(self, ids: torch.Tensor, mask: torch.Tensor | None = None):
        """`ids` (and its `mask`) right-padded to the next length bucket (`compile_passes(buckets=...)`), as is
        without buckets."""
        length = ids.shape[1]
        width = next((bucket for bucket in self._length_buckets or () if bucket >= length), length)
        if width == length:
            return ids, mask
        ids = F.pad(ids, (0, width - length), value=self.config.pad_token_id)
        return ids, (F.pad(mask, (0, width - length), value=False) if mask is not None else None)

    # -- the interface decoding (generation_deer.py) and the objective use ------------------------------------------
    # Three passes over the backbone, the draft's canvas, and one scoring method per head; ids in and out are the
    # tokenizer's, except that the LM head scores embedding rows (`token_rows` / `row_tokens` map between them).
    # These are the only entry points to the backbone's passes (`self.model`'s methods of the same names are their
    # eager bodies): the length buckets, `compile_passes` and the call's pruning gates apply wherever a pass runs.

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, gates=OWN_LEVEL, **outputs
    ) -> DeerEncoderOutput:
        """The source pass; its output caches every layer's source keys/values for the target passes, and the
        pruning `gates` they compute at (`level_gates`; default: the model's own level, `set_sparsity`).
        `output_hidden_states=True` / `output_attentions=True` add them to the output."""
        length = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        input_ids, attention_mask = self._to_bucket(input_ids, attention_mask)
        output = self._backbone("encode")(input_ids, attention_mask, self._call_gates(gates), **outputs)
        if input_ids.shape[1] != length:  # the padded keys stay cached (masked out); the states are the source's
            output.last_hidden_state = output.last_hidden_state[:, :length]
        return output

    def target_pass(self, target_ids: torch.Tensor, encoder_output: DeerEncoderOutput) -> torch.Tensor:
        """A target sequence against the cached source: (batch, target_length, hidden)."""
        length = target_ids.shape[1]
        return self._backbone("target_pass")(self._to_bucket(target_ids)[0], encoder_output)[:, :length]

    def target_pass_outputs(
        self,
        target_ids: torch.Tensor,
        encoder_output: DeerEncoderOutput,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple:
        """`target_pass` with its hidden states per layer and attention weights, if asked (`DeerModel.
        target_pass_outputs`): the eager pass, uncompiled and unpadded, since those outputs are per position."""
        return self.model.target_pass_outputs(target_ids, encoder_output, output_hidden_states, output_attentions)

    def encode_and_target_pass(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor, gates=OWN_LEVEL
    ) -> tuple[DeerEncoderOutput, torch.Tensor]:
        """`encode` then `target_pass`, in one pass (the draft, whose target is known before the source is encoded);
        `gates` as for `encode`."""
        source_length, target_length = input_ids.shape[1], target_ids.shape[1]
        input_ids, attention_mask = self._to_bucket(input_ids, attention_mask)
        encoder_output, hidden_states = self._backbone("encode_and_target_pass")(
            input_ids, attention_mask, self._to_bucket(target_ids)[0], self._call_gates(gates)
        )
        encoder_output.last_hidden_state = encoder_output.last_hidden_state[:, :source_length]
        return encoder_output, hidden_states[:, :target_length]

    def _call_gates(self, gates):
        return self.level_gates(self.sparsity_level) if gates is OWN_LEVEL else gates

    def word_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """LM-head scores (..., embedding rows) of the words that fill placeholders."""
        return self.lm_head(hidden_states)

    def insertion_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, length - 1, max_insertions): how many placeholders go between neighbours i and i + 1."""
        return self.insertion_head(torch.cat([hidden_states[:, :-1], hidden_states[:, 1:]], dim=-1))

    def deletion_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(..., 2): keep (0) or delete (1) each token."""
        return self.deletion_head(hidden_states)

    def token_rows(self, token_ids) -> torch.Tensor:
        """Tokenizer ids -> LM head rows (identity unless the vocabulary is trimmed)."""
        token_ids = torch.as_tensor(token_ids, device=self.lm_head.decoder.bias.device)
        return self.model.embeddings.token_rows(token_ids)

    def row_tokens(self, rows: torch.Tensor) -> torch.Tensor:
        """LM head rows (e.g. an argmax) -> tokenizer ids."""
        return self.model.embeddings.row_tokens(rows)

    # -- input checks ---------------------------------------------------------------------------------------------

    def check_source(self, input_ids, attention_mask) -> torch.Tensor:
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
            raise TypeError(
                f"attention_mask must be a torch.Tensor like input_ids, got {type(attention_mask).__name__}"
                "; tokenize with return_tensors='pt'."
            )
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

    # -- the draft -----------------------------------------------------------------------------------------------

    def draft_lengths(self, source_lengths: torch.Tensor) -> torch.Tensor:
        """Frames of each row's draft, bos and eos included (`draft_deer.draft_lengths`)."""
        return draft_lengths(self.config, source_lengths)

    def draft_canvas(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The draft pass's input for a source batch (`draft_deer.draft_canvas`): bos, frames, eos; padded."""
        return draft_canvas(self.config, input_ids, attention_mask)

    def draft_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """LM-head scores of draft frames (..., hidden) -> (..., embedding rows), the blank's from its own head when
        the model has one."""
        features = self.lm_head.transform(hidden_states)
        logits = self.lm_head.score(features)
        if self.blank_head is None:
            return logits
        blank_row = self.token_rows([self.config.placeholder_token_id])
        return logits.index_copy_(-1, blank_row, self.blank_head(features).to(logits.dtype))  # in place: no copy

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        glancing_ratio: float | None = None,
        ctc_only: bool = False,
        train_levels: bool = True,
        **kwargs,
    ) -> DeerSeq2SeqLMOutput:
        """
        Args:
            input_ids, attention_mask: the source, (batch, source_length).
            labels: the target `bos ... eos`, (batch, target_length), padded with -100 (or pad_token_id).
            token_type_ids: accepted and ignored (source tokens use type 0, target tokens type 1).
            output_hidden_states, output_attentions: the source pass's hidden states and attention weights per layer,
                and with `labels` the CTC draft pass's (default: the config's); `return_dict=False` gives a tuple.
            glancing_ratio, ctc_only, train_levels: a training schedule's settings for this step (the trainer
                passes them; the config is not changed): the glancing ratio (default: `config.glancing_ratio`),
                whether the step trains the draft alone (the edit passes skipped, whatever the edit losses' weights),
                and whether it trains the pruning levels (False: the full size alone).
        Returns:
            `DeerSeq2SeqLMOutput` with the loss and each of its components when `labels` are given.
        """
        record = requested_outputs(self.config, output_hidden_states, output_attentions)
        attention_mask = self.check_source(input_ids, attention_mask)
        input_ids = input_ids.long()  # int32 ids (some tokenizers' choice) work too
        targets = self.check_labels(labels, input_ids.shape[0]) if labels is not None else None
        # Training with sparsity levels: this step runs at the levels `training_levels` draws (with straight-through
        # gates); otherwise the model's own level.
        levels = self.training_levels() if train_levels else []
        training_gates = [self.level_gates(level, straight_through=True) for level in levels]
        # In-place distillation: the full size (first) records its inputs and outputs; the smaller levels learn them.
        distill = len(training_gates) > 1 and self.config.distillation_weight > 0
        full_size = FullSizeRecord() if distill else None
        outputs = []
        for gates in training_gates or [OWN_LEVEL]:
            encoder_output = self.encode(input_ids, attention_mask, gates, **(record if not outputs else {}))
            if targets is None:
                return DeerSeq2SeqLMOutput(
                    encoder_last_hidden_state=encoder_output.last_hidden_state,
                    hidden_states=encoder_output.hidden_states,
                    attentions=encoder_output.attentions,
                )
            # The regulariser: once per step (with the full size's, first), where the scores learn.
            sparsity_loss = (
                self.sparsity_regularizer() if training_gates and not outputs and self.scores_learned() else None
            )
            output = self.deer_loss(
                input_ids,
                attention_mask,
                encoder_output,
                targets,
                sparsity_loss,
                full_size=full_size,
                glancing_ratio=glancing_ratio,
                ctc_only=ctc_only,
                **(record if not outputs else {}),
            )
            output.hidden_states, output.attentions = encoder_output.hidden_states, encoder_output.attentions
            outputs.append(output)
        if len(outputs) > 1:  # the components logged are the full size's; the loss trains every level
            weight = self.config.level_loss_weight  # the smaller levels' against the full size's (first)
            outputs[0].loss = outputs[0].loss + weight * sum(output.loss for output in outputs[1:])
            if distill:
                outputs[0].distillation_loss = sum(output.distillation_loss for output in outputs[1:])
        return outputs[0]


__all__ = ["DeerForConditionalGeneration", "DeerModel", "DeerPreTrainedModel"]
