"""DEER decoding: a one-pass CTC draft, then rounds: delete / insert placeholders / fill ("edits"), or the draft pass
again with its confident words revealed ("redraft").

The loop reaches the network only through the model's decoding interface (see `DeerForConditionalGeneration`):
`draft_canvas`, `encode_and_target_pass`, `draft_logits`, `target_pass`, `deletion_logits`, `insertion_logits`,
`word_logits`, and `token_rows` / `row_tokens` between tokenizer ids and the LM head's rows.

Follow one row: `draft` (draft_deer.py) encodes the source and, in the same pass, runs bos + frames + eos (the
source's keys and values are kept, with the call's pruning gates), then collapses the LM head's argmax (CTC); each
round runs over the rows that are still changing, against those cached source keys/values: `edit_round` two or three
target passes, `redraft` (draft_deer.py) one.
"""

import copy
import functools
import math
import numbers
import os
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.utils import ModelOutput, logging

from .draft_deer import best_tokens, chunk_positions, draft, redraft
from .edit_ops import apply_deletions, fill_placeholders, inner_mask, insert_placeholders, trim_padding
from .pruning_deer import OWN_LEVEL


logger = logging.get_logger(__name__)

# What transformers' own tools (Seq2SeqTrainer, pipelines) pass to generate() and DEER has no use for.
PASSED_BY_TOOLS = (
    "use_cache",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "labels",
    "decoder_input_ids",
    "decoder_attention_mask",
)
# Autoregressive settings that DEER honours only at their neutral value.
NEUTRAL = {"num_beams": 1, "do_sample": False, "num_return_sequences": 1}


class DeerGenerationConfig(GenerationConfig):
    """Decoding knobs of DEER, saved as generation_config.json: the one definition of them (`REFINEMENTS`, `KNOBS`,
    `OPTIONS`), which `generate`, the pipeline and the commands (training/cli.py reads `REFINEMENTS` from this
    file's source, so that `--help` needs no torch) take theirs from.

    Args:
        max_iterations (`int`, defaults to 4): rounds after the draft; 0 returns the collapsed CTC draft.
        refinement (`str`, defaults to "edits"): what a round does. "edits": DEER's delete / insert placeholders /
            fill (two or three passes). "redraft": the draft pass again, with the words of the frames the last
            pass was surest of written into its input (one pass; a model trained with `redraft_ratio` > 0).
        reveal_threshold (`float`, defaults to 0.9): with "redraft", the frames whose word has at least this
            probability are revealed to the next pass.
        eos_penalty (`float`, defaults to 0.0): subtracted from the insertion head's "insert nothing" score; larger
            values give longer outputs.
        blank_penalty (`float`, defaults to 0.0): subtracted from the CTC blank's score at every draft frame; larger
            values give longer drafts (the draft's length control, as `eos_penalty` is the edit rounds'). Choose
            both on validation data (`training.evaluate --select`).
        deletion_penalty (`float`, defaults to 0.0): subtracted from the deletion head's "delete" score in every edit
            round: larger values delete less (a deletion head that removes right words makes rounds cost quality).
        max_new_tokens (`int`, optional): every output row holds at most this many tokens after bos (eos included),
            as in transformers; the cap holds for the draft and for every round's insertions.
        max_length (`int`, optional): every output row holds at most this many tokens, bos and eos included. With
            neither, the position table is the only cap.
        stop_when_unchanged (`bool`, defaults to True): a row whose output did not change in a round is finished.
            False runs exactly `max_iterations` rounds on every row (for timings independent of the weights).
        return_dict_in_generate (`bool`, defaults to False): return a `DeerGenerateOutput` instead of the ids.
        output_history (`bool`, defaults to False): with `return_dict_in_generate`, keep the sequences after the
            draft and after every round.
        bos_token_id, eos_token_id, pad_token_id, placeholder_token_id: copied from the model config.
    """

    # What a round after the draft does (`refinement`), and the knobs that shape each kind, in the order
    # `training.evaluate --select` tunes them (the draft's `blank_penalty` first: both kinds start from the draft).
    REFINEMENTS = {
        "edits": ("blank_penalty", "deletion_penalty", "eos_penalty"),
        "redraft": ("blank_penalty", "reveal_threshold"),
    }
    KNOBS = tuple(dict.fromkeys(knob for knobs in REFINEMENTS.values() for knob in knobs))
    # Everything generate() takes as a decoding option (besides `sparsity`, which is the call's pruning level).
    OPTIONS = (
        "max_iterations",
        "refinement",
        *KNOBS,
        "max_new_tokens",
        "max_length",
        "stop_when_unchanged",
        "return_dict_in_generate",
        "output_history",
    )

    # DEER's own fields and their defaults; the length caps, return_dict_in_generate and the token ids are
    # GenerationConfig's own fields, with DEER's meaning (above).
    DEFAULTS = {
        "max_iterations": 4,
        "refinement": "edits",
        "reveal_threshold": 0.9,
        "eos_penalty": 0.0,
        "blank_penalty": 0.0,
        "deletion_penalty": 0.0,
        "stop_when_unchanged": True,
        "output_history": False,
        "placeholder_token_id": None,
    }
    SHARED = (
        "max_new_tokens",
        "max_length",
        "return_dict_in_generate",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    )

    def __init__(self, **kwargs):
        # A full GenerationConfig (every attribute transformers' tools read is there, the autoregressive ones at their
        # unset value), with DEER's fields set first: GenerationConfig.__init__ ends by calling `validate`.
        for name, default in self.DEFAULTS.items():
            setattr(self, name, plain_number(kwargs.pop(name, default)))
        shared = {name: plain_number(kwargs.pop(name, None)) for name in self.SHARED}
        if shared["return_dict_in_generate"] is None:
            shared["return_dict_in_generate"] = False
        metadata = {"_from_model_config": kwargs.pop("_from_model_config", False)}
        metadata["transformers_version"] = kwargs.pop("transformers_version", None)
        kwargs.pop("_commit_hash", None)
        # GenerationConfig's own fields at their unset value (as `to_dict()` writes them) round-trip; set ones DEER
        # has no use for (beams, sampling, ...) are refused.
        stock = stock_generation_settings()
        kwargs = {key: value for key, value in kwargs.items() if key not in stock or stock[key] != value}
        if kwargs:
            raise ValueError(f"DeerGenerationConfig got unknown options {sorted(kwargs)}; DEER's are {self.OPTIONS}.")
        super().__init__(**shared, **metadata)

    def validate(self, strict=False, **kwargs):
        if (
            isinstance(self.max_iterations, bool)
            or not isinstance(self.max_iterations, int)
            or self.max_iterations < 0
        ):
            raise ValueError(f"max_iterations must be an integer >= 0 (0 = draft only), got {self.max_iterations!r}.")
        if self.refinement not in self.REFINEMENTS:
            raise ValueError(f"refinement must be one of {tuple(self.REFINEMENTS)}, got {self.refinement!r}.")
        threshold = self.reveal_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"reveal_threshold must be a probability in (0, 1], got {threshold!r}.")
        for name in (knob for knob in self.KNOBS if knob.endswith("_penalty")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        for name, least in (("max_new_tokens", 1), ("max_length", 2)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"{name} must be None or an integer >= {least}, got {value!r}.")
        for name in ("stop_when_unchanged", "return_dict_in_generate", "output_history"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")

    @classmethod
    def from_model_config(cls, model_config) -> "DeerGenerationConfig":
        return cls(
            bos_token_id=model_config.bos_token_id,
            eos_token_id=model_config.eos_token_id,
            pad_token_id=model_config.pad_token_id,
            placeholder_token_id=model_config.placeholder_token_id,
        )

    def output_length_cap(self, position_table: int) -> int:
        """The most tokens an output row may hold (bos and eos included)."""
        caps = [position_table]
        if self.max_length is not None:
            caps.append(self.max_length)
        if self.max_new_tokens is not None:
            caps.append(self.max_new_tokens + 1)
        return max(min(caps), 2)

    def updated(self, **overrides) -> "DeerGenerationConfig":
        """A copy with `overrides` applied and validated (the model's own config is never changed)."""
        unknown = sorted(key for key in overrides if key not in self.OPTIONS)
        if unknown:
            raise ValueError(f"generate() got unknown options {unknown}; DEER's are {self.OPTIONS}.")
        config = copy.deepcopy(self)
        for key, value in overrides.items():
            setattr(config, key, plain_number(value))
        config.validate()
        return config


def plain_number(value):
    """numpy scalars and one-element torch tensors as Python ints and floats, as users have them
    (`np.int64(2)`, `torch.tensor(2)`, `np.float32(1.0)`); anything else unchanged, for `validate` to judge."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


@dataclass
class DeerGenerateOutput(ModelOutput):
    """sequences: (batch, length) `bos ... eos` rows padded with pad_token_id.
    num_iterations: (batch,) edit rounds run on each row (the last one may have changed nothing).
    history: with `output_history`, the sequences after the draft and after each round."""

    sequences: torch.Tensor | None = None
    num_iterations: torch.Tensor | None = None
    history: list[torch.Tensor] | None = None


def resolve_generation_config(default: DeerGenerationConfig, generation_config, kwargs: dict) -> DeerGenerationConfig:
    """The configuration one generate() call decodes with: `generation_config` (a `DeerGenerationConfig`, or a plain
    transformers `GenerationConfig`, whose DEER options and length caps are read over the model's own) updated with
    `kwargs`. The arguments transformers' tools pass are accepted and ignored; what DEER cannot honour is refused."""
    kwargs = {key: value for key, value in kwargs.items() if key not in PASSED_BY_TOOLS}
    if generation_config is None or isinstance(generation_config, DeerGenerationConfig):
        base = generation_config or default
    elif isinstance(generation_config, GenerationConfig):
        base = default
        given = {
            name: getattr(generation_config, name)
            for name in (*DeerGenerationConfig.OPTIONS, *NEUTRAL)
            if getattr(generation_config, name, None) is not None and name != "max_length"
        }
        if getattr(generation_config, "max_new_tokens", None) is None:  # transformers: max_length applies then
            given["max_length"] = generation_config.max_length
        kwargs = {**given, **kwargs}
    else:
        raise TypeError(f"generation_config must be a GenerationConfig, got {type(generation_config).__name__}.")
    for name, neutral in NEUTRAL.items():
        if name in kwargs and kwargs.pop(name) != neutral:
            raise _cannot_honour(name)
    unknown = sorted(key for key in kwargs if key not in DeerGenerationConfig.OPTIONS)
    if unknown:
        raise _cannot_honour(unknown[0], unknown)
    return base.updated(**kwargs)


def _cannot_honour(name: str, names: list[str] | None = None) -> ValueError:
    return ValueError(
        f"generate() got {names or name!r}, which DEER cannot honour: it writes every token at once (a CTC draft, "
        "then edit rounds), with no beams, sampling or streaming. Its own choices are max_iterations (rounds after "
        "the draft), refinement and reveal_threshold (what a round does), sparsity (set_sparsity / prune_to), "
        "eos_penalty, blank_penalty, deletion_penalty (length), "
        "max_new_tokens / max_length (caps), return_dict_in_generate and output_history."
    )


def any_process(flag, synced: bool) -> bool:
    """`flag` (a bool or a one-element tensor) on this process, or, with `synced`, on any process of the default
    group: the decision every process then takes together."""
    flag = bool(flag)
    if not synced:
        return flag
    shared = torch.tensor([int(flag)], device=collective_device())
    torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
    return bool(shared.item())


def sharded_by_fsdp(module) -> bool:
    """Whether FSDP (fully_shard, or the older FullyShardedDataParallel wrapper) manages `module`."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return isinstance(module, (FSDPModule, FullyShardedDataParallel)) or getattr(
        module, "_is_fsdp_managed_module", False
    )


def collective_device() -> torch.device:
    """The device a collective of the default group takes its tensors on (NCCL's: this process's GPU)."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def deer_generate(
    model, input_ids, attention_mask, generation_config: DeerGenerationConfig, gates=OWN_LEVEL, synced=False
):
    """The decoding loop; `gates`: the call's pruning level (`level_gates`), carried by its encoder output into
    every pass. `synced` (several processes, each with its own rows, whose weights are sharded by FSDP or ZeRO-3):
    every process runs the same passes: a pass that any process needs runs on all (on rows whose result it leaves
    unchanged), and a process whose rows are all finished runs its rounds on its first row and discards them."""
    config = model.config
    pad = config.pad_token_id
    cap = generation_config.output_length_cap(config.max_sequence_length)
    blank_penalty = generation_config.blank_penalty
    redrafting = generation_config.refinement == "redraft" and generation_config.max_iterations > 0
    encoder_output, sequences, frames = draft(
        model, input_ids, attention_mask, blank_penalty, cap, gates, with_confidences=redrafting
    )
    batch = sequences.shape[0]
    # A source with no words (an empty text tokenises to bos eos) has nothing to say: its output is empty too.
    specials = torch.tensor(
        [config.bos_token_id, config.eos_token_id, pad, config.placeholder_token_id], device=input_ids.device
    )
    wordless = ~(attention_mask & ~torch.isin(input_ids, specials)).any(1)
    if wordless.any():
        empty = torch.full_like(sequences[:1], pad)
        empty[0, :2] = torch.tensor([config.bos_token_id, config.eos_token_id])
        sequences = trim_padding(torch.where(wordless[:, None], empty, sequences), pad)
    num_iterations = torch.zeros(batch, dtype=torch.long, device=sequences.device)
    history = [sequences] if generation_config.output_history else None

    active = torch.arange(batch, device=sequences.device)[~wordless]  # rows still being refined
    for _ in range(generation_config.max_iterations):
        if not any_process(len(active) > 0, synced):
            break
        if len(active) == 0:  # synced, and rows of other processes still change: run the round, keep nothing
            idle = torch.zeros(1, dtype=torch.long, device=sequences.device)
            if generation_config.refinement == "redraft":
                redraft(model, frames.select_rows(idle), encoder_output.select_rows(idle), 1.0, blank_penalty)
            else:
                edit_round(
                    model, trim_padding(sequences[idle], pad), encoder_output.select_rows(idle), 0.0, 0.0, cap, synced
                )
            continue
        if generation_config.refinement == "redraft":
            redrafted = redraft(
                model,
                frames.select_rows(active),
                encoder_output.select_rows(active),
                generation_config.reveal_threshold,
                blank_penalty,
            )
            frames = frames.update_rows(active, redrafted)
            edited = redrafted.collapse(model, cap)
        else:
            current = trim_padding(sequences[active], pad)
            edited = edit_round(
                model,
                current,
                encoder_output.select_rows(active),
                generation_config.eos_penalty,
                generation_config.deletion_penalty,
                cap,
                synced,
            )
        width = max(sequences.shape[1], edited.shape[1])
        sequences = _pad_to(sequences, width, pad)
        edited = _pad_to(edited, width, pad)
        changed = (edited != sequences[active]).any(1)
        sequences = sequences.index_copy(0, active, edited)
        num_iterations[active] += 1
        if generation_config.stop_when_unchanged:
            active = active[changed]
        if history is not None:
            history.append(trim_padding(sequences, pad))

    sequences = trim_padding(sequences, pad)
    if generation_config.return_dict_in_generate:
        return DeerGenerateOutput(sequences=sequences, num_iterations=num_iterations, history=history)
    return sequences


def edit_round(
    model,
    tokens: torch.Tensor,
    encoder_output,
    eos_penalty: float,
    deletion_penalty: float = 0.0,
    cap: int | None = None,
    synced: bool = False,
) -> torch.Tensor:
    """One edit round on (batch, length) `bos ... eos` rows: delete, insert placeholders (rows grow to at most
    `cap` tokens, by default the position table), fill. `synced`: a pass that any process needs runs here too."""
    config = model.config
    pad, placeholder = config.pad_token_id, config.placeholder_token_id

    # a. Delete: never bos or eos; rows of two tokens have nothing to delete.
    hidden_states = model.target_pass(tokens, encoder_output)
    deletion_logits = model.deletion_logits(hidden_states)
    delete = inner_mask(tokens, pad) & (deletion_logits[..., 1] - deletion_penalty > deletion_logits[..., 0])
    if any_process(delete.any(), synced):  # otherwise the sequences, and so their states, are unchanged: reuse them
        tokens = apply_deletions(tokens, delete, pad)
        hidden_states = model.target_pass(tokens, encoder_output)

    # b. Insert placeholders: a count per gap between neighbours, the total capped by the position table.
    insertion_logits = model.insertion_logits(hidden_states)
    insertion_logits[..., 0] -= eos_penalty
    tokens = insert_placeholders(
        tokens, insertion_logits.argmax(-1), placeholder, pad, config.max_sequence_length if cap is None else cap
    )

    # c. Fill.
    return fill_round(model, tokens, encoder_output, synced)


def fill_round(model, tokens: torch.Tensor, encoder_output, synced: bool = False) -> torch.Tensor:
    """Fill every placeholder with the LM head's best word (never a special token). `synced`: the pass runs when
    any process has a placeholder."""
    config = model.config
    placeholder = config.placeholder_token_id
    placeholder_mask = tokens == placeholder
    if any_process(placeholder_mask.any(), synced):
        hidden_states = model.target_pass(tokens, encoder_output)
        never = [config.bos_token_id, config.eos_token_id, config.pad_token_id, placeholder]
        words = torch.cat(
            [
                best_tokens(model, model.word_logits(part), never)
                for part in hidden_states[placeholder_mask].split(chunk_positions(model))
            ]
        )
        tokens = fill_placeholders(tokens, words, placeholder)
    return tokens


def _pad_to(tokens: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    return torch.nn.functional.pad(tokens, (0, width - tokens.shape[1]), value=pad_id)


class DeerGenerationMixin:
    """`generate` for `DeerForConditionalGeneration` (the loop is `deer_generate` above), and the loading of
    generation_config.json as a `DeerGenerationConfig`."""

    @classmethod
    def can_generate(cls) -> bool:
        return True

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
            input_ids, attention_mask: the source, (batch, source_length); `inputs=` (transformers' name) works too.
            token_type_ids: accepted (a BERT tokenizer returns them) and ignored: DEER sets token types itself.
            sparsity (`float`, optional): decode this call at this pruning level (masks, as `set_sparsity`), the
                model's own level untouched; calls from several threads each get their own level.
            generation_config: defaults to `self.generation_config`; a plain transformers `GenerationConfig` works
                too (its `max_new_tokens` / `max_length` cap the outputs). Keyword arguments (`max_iterations=2`,
                `blank_penalty=2.0`, `deletion_penalty=2.0`, `eos_penalty=1.0`, `max_new_tokens=20`,
                `stop_when_unchanged=False`, `return_dict_in_generate=True`, `output_history=True`) override it for
                this call. What transformers' tools pass (`use_cache`, the special token ids, `labels`,
                `num_beams=1`, `do_sample=False`, ...) is accepted; beams, sampling and streaming are refused with
                DEER's own choices.
            synced_gpus (`bool`, optional): with several processes (torch.distributed), every process runs the same
                backbone passes, as FSDP and DeepSpeed ZeRO-3 need (each pass gathers the sharded weights). Default:
                on when FSDP shards this model over several processes, as in transformers.
        Returns:
            (batch, length) LongTensor of `bos ... eos` rows padded with pad_token_id, or a `DeerGenerateOutput`
            with `sequences`, per-row `num_iterations` and, if asked, `history`.
        """
        if "inputs" in kwargs:  # transformers' name for the model's main input (generate(inputs=...))
            if input_ids is not None:
                raise ValueError("generate() got both inputs and input_ids: give the source once.")
            input_ids = kwargs.pop("inputs")
        sparsity = kwargs.pop("sparsity", None)
        synced = kwargs.pop("synced_gpus", None)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if synced is None:  # as transformers: by default when FSDP shards this model over several processes
            synced = distributed and sharded_by_fsdp(self) and torch.distributed.get_world_size() > 1
        synced = bool(synced) and distributed
        generation_config = resolve_generation_config(self.generation_config, generation_config, kwargs)
        attention_mask = self.check_source(input_ids, attention_mask)
        if sparsity is None:
            level = self.sparsity_level
        else:
            level = self.check_level_reachable(sparsity, "generate(sparsity=...)")
        # The level's gates travel with this call (no state set on the model): calls at other levels run alongside.
        return deer_generate(
            self, input_ids.long(), attention_mask, generation_config, self.level_gates(level), synced
        )

    def adjust_generation_fn(
        self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path, **kwargs
    ):
        """Called by `from_pretrained`: load generation_config.json as a `DeerGenerationConfig`; a
        `generation_config=` given to `from_pretrained` (DEER's, or any transformers `GenerationConfig`) is taken
        instead (`deer_settings_of`). Weights given without a folder (`from_pretrained(None, config=...,
        state_dict=...)`) keep the defaults of the config."""
        if generation_config is not None:
            self.generation_config = with_settings_of(self.generation_config, generation_config)
            return
        if pretrained_model_name_or_path is None:
            return
        loading_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        try:
            self.generation_config = DeerGenerationConfig.from_pretrained(
                pretrained_model_name_or_path, **loading_kwargs
            )
        except OSError as error:
            local = os.path.join(
                str(pretrained_model_name_or_path), loading_kwargs.get("subfolder") or "", "generation_config.json"
            )
            if os.path.isfile(local) or "not a valid JSON" in str(error):
                # A file that is there but unreadable would silently lose the tuned decoding knobs.
                raise ValueError(
                    f"the model's generation_config.json cannot be read ({error}); fix or delete it "
                    "(without it DEER decodes with the default knobs)."
                ) from error
            logger.info("No generation_config.json found: using the default DeerGenerationConfig.")


@functools.cache
def stock_generation_settings() -> dict:
    """A stock `GenerationConfig()`'s fields and values (read only)."""
    return GenerationConfig().to_dict()


# What a DeerGenerationConfig holds besides its decoding options: the special ids.
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "placeholder_token_id")


def deer_settings_of(generation_config: GenerationConfig) -> tuple[dict, list[str]]:
    """What any `GenerationConfig` sets (the fields that a stock `GenerationConfig()` does not hold at the same
    value): DEER's options and special ids among them, and the names of the others, which DEER has no use for."""
    stock = stock_generation_settings()
    values = {
        key: value
        for key, value in generation_config.to_dict().items()
        if not key.startswith("_") and key != "transformers_version" and (key not in stock or stock[key] != value)
    }
    own = {key: value for key, value in values.items() if key in DeerGenerationConfig.OPTIONS or key in SPECIAL_IDS}
    return own, sorted(key for key in values if key not in own)


def with_settings_of(base: DeerGenerationConfig, generation_config: GenerationConfig) -> DeerGenerationConfig:
    """`base` (a copy) with what `generation_config` sets: all of a `DeerGenerationConfig`, DEER's fields of any
    other (one warning names the fields it ignores: beams, sampling, ...)."""
    if isinstance(generation_config, DeerGenerationConfig):
        return copy.deepcopy(generation_config)
    own, ignored = deer_settings_of(generation_config)
    if ignored:
        logger.warning(f"DEER ignores these generation settings of the given GenerationConfig: {', '.join(ignored)}.")
    merged = copy.deepcopy(base)
    for key, value in own.items():
        setattr(merged, key, plain_number(value) if key not in SPECIAL_IDS else value)
    merged.validate()
    return merged
