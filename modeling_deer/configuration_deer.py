"""DeerConfig: the backbone's architecture, DEER's special tokens and its training-objective knobs.

Decoding knobs (how many iterations, the eos penalty, ...) are not here: they live in
`DeerGenerationConfig` (generation_deer.py), saved as generation_config.json.
"""

import math

from transformers import PreTrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)
# This file runs as the installed package, or as a saved model's remote code (trust_remote_code=True).
IS_PACKAGE = __name__.startswith("modeling_deer.")
# DEER's pipeline (pipeline_deer.py, which the saved model files carry), as a saved config.json lists it under
# `custom_pipelines`, so that `pipeline(model=path, trust_remote_code=True)` finds it among the model's own files.
PIPELINE_TASK = "deer-text2text"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {"impl": "pipeline_deer.DeerText2TextPipeline", "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}
}


class DeerConfig(PreTrainedConfig):
    r"""
    Configuration of a [`DeerForConditionalGeneration`]: a BERT-family encoder whose every layer is shared by a
    source pass and target passes, with an LM head (tied to the word embeddings), a placeholder-insertion head and
    a deletion head.

    Architecture (copied from the backbone by `DeerForConditionalGeneration.from_mlm`):
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
        hidden_dropout_prob, attention_probs_dropout_prob, max_position_embeddings, type_vocab_size,
        initializer_range, layer_norm_eps: as in `BertConfig`.
        position_offset (`int`, defaults to 0): the first position id. BERT counts from 0; RoBERTa and XLM-R from
            `pad_token_id + 1` (= 2), which `from_mlm` sets. Source and target each use positions
            `position_offset ... max_position_embeddings - 1`.

    Special tokens:
        bos_token_id, eos_token_id, pad_token_id: [CLS]/<s>, [SEP]/</s>, [PAD]/<pad>.
        placeholder_token_id: [MASK]/<mask>. It is both the placeholder that the insertion step writes and the CTC
            blank class of the draft: the token the MLM was pretrained to fill.

    DEER objective:
        upsample_ratio (`float`, defaults to 2.0): the draft has ceil(upsample_ratio * source_length) frames.
        max_insertions (`int`, defaults to 256): classes of the insertion head (0 .. max_insertions - 1 per gap).
        ctc_loss_weight (`float`, defaults to 1.0); insertion_loss_weight, word_loss_weight, deletion_loss_weight
            (`float`, default 0.5; the paper: 1.0): at equal weights the three edit losses drown the draft's in a
            small shared network, and validation BLEU favoured halving them (with `training.train`'s CTC-only
            first third).
        ctc_label_smoothing (0.1), insertion_label_smoothing (0.01), word_label_smoothing (0.1),
        deletion_label_smoothing (0.0): label smoothing of each loss, in [0, 1).
        glancing_ratio (`float`, defaults to 0.5): share of the draft's mismatches revealed to the model during
            training. A training callback anneals it (DEER: 0.5 -> 0.2).
        draft_input (`str`, defaults to "source"): what the draft's frames read. "source": frame j of F reads the
            embedding of inner source token floor(j * n / F) (plus its own position), so the frames cover the
            output evenly; "placeholder": every frame reads the placeholder (the paper's canvas), which on real text
            makes the model write token i at frame ~i and leaves most frames unused.
        separate_blank_head (`bool`, defaults to True): the CTC blank's score comes from its own output row (a
            `blank_head` on the LM head's features) instead of the placeholder's row, which is tied to the
            placeholder's input embedding and starts far behind every word. `calibrate_blank` starts it level
            with the best word on real data.
        blank_calibrated (`bool`, defaults to False): set by `calibrate_blank`.
        draft_edit_ratio (`float`, defaults to 0.5): share of each batch's rows whose edit losses are computed on the
            model's own draft (deletions: draft -> gold's common subsequence, then the insertions and words that
            complete it), as decoding meets them; the other rows use the paper's inputs made from the gold target
            (random deletion). 0 = the paper.
        edit_rows_ratio (`float`, defaults to 1.0): share of each training batch's rows, drawn afresh every step,
            that the edit losses (their three passes) are computed on; the draft's CTC loss always uses every row.
            Below 1 the edit passes cost that much less (their losses are means, so the same in expectation, from
            fewer rows). Evaluation always uses every row.
        redraft_ratio (`float`, defaults to 0.0): share of each training batch's rows, drawn afresh every step, whose
            CTC pass reads the model's own draft words at the frames it is surest of (above a confidence threshold
            drawn per row, uniform in [0.5, 1]) instead of the gold words glancing reveals: what a re-drafting round
            (`generate(refinement="redraft")`) feeds the draft pass. 0 = glancing on every row (the paper).

    Vocabulary trimming (`DeerForConditionalGeneration.trim_vocabulary`):
        vocabulary_ids (`list[int]`, optional): the token ids the embeddings and LM head keep, in row order. The
            tokenizer is unchanged: ids outside the list read as `unk_token_id` and are never generated. `None`: the
            whole vocabulary.
        unk_token_id (`int`, optional): [UNK]/<unk>.

    Pruning (used by pruning_deer.py):
        sparsity_levels (`list[float]`, defaults to []): levels sampled during training, each in [0, 1). Without
            them a model's pruning scores are frozen (`requires_grad` False; set it to train them later).
        sparsity_weight (`float`, defaults to 10.0): weight of the mean(sigmoid(score)) regulariser.
        full_every_step (`bool`, defaults to False): each training step runs the full size and then one level drawn
            from the smaller `sparsity_levels` (two passes of the objective per step, their losses summed), instead
            of one level drawn from all of them: the full size then trains on every step, as without levels.
        sandwich_rule (`bool`, defaults to False): each training step runs the full size, the smallest level and one
            level drawn from those between (three passes of the objective per step, their losses summed): the
            sandwich rule of slimmable networks, which bounds every level by the two it trains on every step.
        distillation_weight (`float`, defaults to 0.0): in-place distillation, with `full_every_step` or
            `sandwich_rule`: each smaller level of a step reads the full size's inputs (its glanced canvas, its
            edit inputs) and learns, besides the gold targets, the full size's detached output distributions on
            them: KL(full || level) of the CTC frames' distributions and of the insertion, word and deletion heads',
            each weighted as its loss and then by this weight. 0 = off.
        level_loss_weight (`float`, defaults to 1.0): with `full_every_step` or `sandwich_rule`, the weight of each
            smaller level's loss (distillation included) against the full size's 1: below 1 the full size's gradient
            dominates the shared weights.
        level_ranking (`str`, defaults to "learned"): how the units are ranked for the levels. "learned": the scores
            train with the weights (straight-through gradients and the regulariser). "importance": `rank_units` sets
            each score once, before training, to the unit's importance on training pairs (the loss's first-order
            change when it is switched off) and the scores stay fixed, so every level is one sub-network from the
            first step to the last. Learned scores move at about Adam's step whatever their gradient's size, so units
            the model needs alike end in near-ties that a seed breaks: on a 2-layer model the quarter size could keep
            only the second layer's attention, and collapse.
        units_ranked (`bool`, defaults to False): set by `rank_units`.
        layer_num_heads, layer_intermediate_sizes (`list[int]`, optional): per-layer sizes of a physically pruned
            model; `None` means every layer has `num_attention_heads` heads and `intermediate_size` neurons.
        pruned_sparsity (`float`, defaults to 0.0): the level a pruned model was cut to.
    """

    model_type = "deer"
    # Evaluation without generation: the loss components and the encoder states are not "predictions" for a
    # Trainer's compute_metrics (it then gets none, and the loss is still reported).
    keys_to_ignore_at_inference = [
        "ctc_loss",
        "insertion_loss",
        "word_loss",
        "deletion_loss",
        "sparsity_loss",
        "num_unfit_targets",
        "encoder_last_hidden_state",
    ]

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    position_offset: int = 0

    pad_token_id: int | None = 0
    bos_token_id: int | None = 101
    eos_token_id: int | None = 102
    placeholder_token_id: int | None = 103
    unk_token_id: int | None = None
    vocabulary_ids: list[int] | None = None

    upsample_ratio: float = 2.0
    max_insertions: int = 256
    ctc_loss_weight: float = 1.0
    insertion_loss_weight: float = 0.5
    word_loss_weight: float = 0.5
    deletion_loss_weight: float = 0.5
    ctc_label_smoothing: float = 0.1
    insertion_label_smoothing: float = 0.01
    word_label_smoothing: float = 0.1
    deletion_label_smoothing: float = 0.0
    glancing_ratio: float = 0.5
    draft_input: str = "source"
    separate_blank_head: bool = True
    blank_calibrated: bool = False
    draft_edit_ratio: float = 0.5
    edit_rows_ratio: float = 1.0
    redraft_ratio: float = 0.0

    sparsity_levels: list[float] | None = None
    sparsity_weight: float = 10.0
    full_every_step: bool = False
    sandwich_rule: bool = False
    distillation_weight: float = 0.0
    level_loss_weight: float = 1.0
    level_ranking: str = "learned"
    units_ranked: bool = False
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    pruned_sparsity: float = 0.0

    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        # The pipeline this model's saved files carry (pipeline_deer.py, saved with hub_deer.py), for
        # `pipeline(..., trust_remote_code=True)` without the package. With the package imported its pipeline is
        # registered, and a config that listed it would make transformers demand trust_remote_code all the same:
        # the package's config keeps it only in what it saves (`to_dict`).
        if IS_PACKAGE:
            kwargs.pop("custom_pipelines", None)
        else:
            kwargs.setdefault("custom_pipelines", CUSTOM_PIPELINES)
        if self.sparsity_levels is None:
            self.sparsity_levels = []
        if self.layer_num_heads is None:
            self.layer_num_heads = [self.num_attention_heads] * self.num_hidden_layers
        if self.layer_intermediate_sizes is None:
            self.layer_intermediate_sizes = [self.intermediate_size] * self.num_hidden_layers
        super().__post_init__(**kwargs)
        self.validate()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "DeerConfig":
        """As `PreTrainedConfig.from_pretrained`, but another model's checkpoint (a plain BERT, say) is refused with
        the way to convert it, instead of failing later on a field DEER needs."""
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **dict(kwargs))
        model_type = config_dict.get("model_type")
        if model_type not in (None, cls.model_type):
            raise ValueError(
                f"{pretrained_model_name_or_path} is a {model_type!r} checkpoint, not a DEER one: convert a masked LM "
                "with DeerForConditionalGeneration.from_mlm(path) (then fine-tune it)."
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "custom_pipelines": CUSTOM_PIPELINES}

    # -- derived sizes -------------------------------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embedding_rows(self) -> int:
        """Rows of the embedding matrix and outputs of the LM head: the kept vocabulary."""
        return len(self.vocabulary_ids) if self.vocabulary_ids is not None else self.vocab_size

    @property
    def max_sequence_length(self) -> int:
        """Longest source, and longest target, the position table allows."""
        return self.max_position_embeddings - self.position_offset

    # -- validation ----------------------------------------------------------------------------------------------

    def validate(self):
        """Refuse, in one line, a field outside what DEER accepts. Runs when the config is made, and again before
        `save_pretrained` writes it (transformers calls `validate`), so a bad value assigned later is caught too."""
        parent = getattr(super(), "validate", None)
        if parent is not None:  # (a transformers release whose base config validates too)
            parent()
        self.validate_deer_values()

    def validate_deer_values(self):
        def require(ok, field, allowed):
            if not ok:
                raise ValueError(f"DeerConfig.{field} = {getattr(self, field)!r} is invalid: it must be {allowed}.")

        def is_number(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, field)
            require(isinstance(value, int) and value >= 1, field, "an integer >= 1")
        require(
            self.hidden_size % self.num_attention_heads == 0,
            "hidden_size",
            f"a multiple of num_attention_heads ({self.num_attention_heads})",
        )
        require(
            isinstance(self.position_offset, int) and 0 <= self.position_offset < self.max_position_embeddings - 1,
            "position_offset",
            f"an integer in [0, max_position_embeddings - 1) = [0, {self.max_position_embeddings - 1})",
        )
        for field in ("pad_token_id", "bos_token_id", "eos_token_id", "placeholder_token_id"):
            value = getattr(self, field)
            require(
                isinstance(value, int) and 0 <= value < self.vocab_size,
                field,
                f"a token id in [0, vocab_size) = [0, {self.vocab_size})",
            )
        require(
            self.unk_token_id is None
            or isinstance(self.unk_token_id, int)
            and 0 <= self.unk_token_id < self.vocab_size,
            "unk_token_id",
            f"None or a token id in [0, vocab_size) = [0, {self.vocab_size})",
        )
        if self.vocabulary_ids is not None:
            kept = self.vocabulary_ids
            require(
                isinstance(kept, (list, tuple))
                and all(isinstance(t, int) for t in kept)
                and list(kept) == sorted(set(kept))
                and kept
                and 0 <= kept[0]
                and kept[-1] < self.vocab_size
                and {
                    self.pad_token_id,
                    self.bos_token_id,
                    self.eos_token_id,
                    self.placeholder_token_id,
                    self.unk_token_id,
                }
                <= set(kept),
                "vocabulary_ids",
                "None or sorted distinct token ids in [0, vocab_size) that include the "
                "special tokens and unk_token_id",
            )
        special = [self.pad_token_id, self.bos_token_id, self.eos_token_id, self.placeholder_token_id]
        require(
            len(set(special)) == 4,
            "placeholder_token_id",
            f"distinct from pad, bos and eos (got pad, bos, eos, placeholder = {special})",
        )
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, field)
            require(is_number(value) and 0 <= value < 1, field, "a number in [0, 1)")
        require(is_number(self.upsample_ratio) and self.upsample_ratio >= 1, "upsample_ratio", "a number >= 1")
        require(isinstance(self.max_insertions, int) and self.max_insertions >= 2, "max_insertions", "an integer >= 2")
        for field in (
            "ctc_loss_weight",
            "insertion_loss_weight",
            "word_loss_weight",
            "deletion_loss_weight",
            "sparsity_weight",
            "distillation_weight",
            "level_loss_weight",
        ):
            value = getattr(self, field)
            require(is_number(value) and value >= 0, field, "a number >= 0")
        for field in (
            "ctc_label_smoothing",
            "insertion_label_smoothing",
            "word_label_smoothing",
            "deletion_label_smoothing",
        ):
            value = getattr(self, field)
            require(is_number(value) and 0 <= value < 1, field, "a number in [0, 1)")
        require(
            is_number(self.glancing_ratio) and 0 <= self.glancing_ratio <= 1, "glancing_ratio", "a number in [0, 1]"
        )
        require(self.draft_input in ("source", "placeholder"), "draft_input", "'source' or 'placeholder'")
        for field in ("separate_blank_head", "blank_calibrated", "full_every_step", "sandwich_rule", "units_ranked"):
            require(isinstance(getattr(self, field), bool), field, "True or False")
        require(
            is_number(self.draft_edit_ratio) and 0 <= self.draft_edit_ratio <= 1,
            "draft_edit_ratio",
            "a number in [0, 1]",
        )
        require(is_number(self.redraft_ratio) and 0 <= self.redraft_ratio <= 1, "redraft_ratio", "a number in [0, 1]")
        require(
            is_number(self.edit_rows_ratio) and 0 < self.edit_rows_ratio <= 1, "edit_rows_ratio", "a number in (0, 1]"
        )
        require(
            isinstance(self.sparsity_levels, (list, tuple))
            and all(is_number(level) and 0 <= level < 1 for level in self.sparsity_levels),
            "sparsity_levels",
            "a list of numbers in [0, 1)",
        )
        require(
            self.distillation_weight == 0 or self.full_every_step or self.sandwich_rule,
            "distillation_weight",
            "0 unless full_every_step or sandwich_rule is set (in-place distillation needs the full size on every "
            "step to learn from)",
        )
        require(
            self.level_loss_weight == 1 or self.full_every_step or self.sandwich_rule,
            "level_loss_weight",
            "1 unless full_every_step or sandwich_rule is set (it weighs the smaller levels against the full size of "
            "the same step)",
        )
        require(self.level_ranking in ("learned", "importance"), "level_ranking", "'learned' or 'importance'")
        require(
            is_number(self.pruned_sparsity) and 0 <= self.pruned_sparsity < 1, "pruned_sparsity", "a number in [0, 1)"
        )
        require(
            len(self.layer_num_heads) == self.num_hidden_layers
            and all(isinstance(n, int) and 0 <= n <= self.num_attention_heads for n in self.layer_num_heads),
            "layer_num_heads",
            f"{self.num_hidden_layers} integers in [0, {self.num_attention_heads}]",
        )
        require(
            len(self.layer_intermediate_sizes) == self.num_hidden_layers
            and all(isinstance(n, int) and 0 <= n <= self.intermediate_size for n in self.layer_intermediate_sizes),
            "layer_intermediate_sizes",
            f"{self.num_hidden_layers} integers in [0, {self.intermediate_size}]",
        )


__all__ = ["DeerConfig"]
