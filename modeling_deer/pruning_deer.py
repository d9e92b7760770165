"""Dynamic structured pruning: one checkpoint that runs at 100 / 75 / 50 / 25 % of its prunable size.

Prunable units are attention heads (a head's rows of the query, key and value projections and its columns of the
output projection) and FFN neurons (a row of the up projection and the matching column of the down projection):
exactly what can leave the weight matrices, so a pruned model is really smaller and faster.

Every unit has one score. Level `s` keeps, globally across layers, the highest-scoring units holding (1 - s) of the
attention parameters, and separately (1 - s) of the FFN parameters, counted against the unpruned model. Ranking is a
stable sort (ties: earlier layer, then earlier unit, first), so levels are exact and nested. The scores either learn
with the weights (`level_ranking="learned"`: straight-through gradients and a regulariser) or are set once before
training to each unit's measured importance and then stay fixed (`level_ranking="importance"`, `rank_units`).

    select_units     scores -> which units level s keeps
    unit_gates       keep -> 0/1 gates, with a straight-through gradient to the scores when training
    prune_linear     a smaller copy of an nn.Linear without the removed rows or columns
    SparsityReport   heads and neurons kept per layer
"""

import math
import numbers
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer
from transformers.utils import logging


def check_level(level) -> float:
    """A sparsity level must be a number in [0, 1) (a numpy scalar or a one-element tensor too). It is returned as a
    Python float rounded to 6 decimals, so that `np.float32(0.3)` and `0.3` are the same level."""
    if isinstance(level, torch.Tensor) and level.numel() == 1:
        level = level.item()
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise TypeError(f"a sparsity level must be a number in [0, 1), got {level!r} ({type(level).__name__}).")
    if not (0 <= level < 1) or math.isnan(level):
        raise ValueError(f"a sparsity level must be in [0, 1) (0 keeps everything), got {level}.")
    return round(float(level), 6)


def head_parameter_count(hidden_size: int, head_dim: int) -> int:
    """Parameters one attention head holds: its q, k, v rows (with biases) and its output columns."""
    return 3 * (hidden_size * head_dim + head_dim) + hidden_size * head_dim


def neuron_parameter_count(hidden_size: int) -> int:
    """Parameters one FFN neuron holds: its up-projection row (with bias) and its down-projection column."""
    return 2 * hidden_size + 1


def full_scores(scores: torch.Tensor) -> torch.Tensor:
    """A layer's pruning scores as a plain tensor. Under FSDP2 a parameter read outside its module's forward (the
    levels rank every layer's scores at once, before the layers run) is a sharded DTensor: its whole value, gathered
    differentiably, so that the straight-through gradient reaches the shards."""
    return scores.full_tensor() if hasattr(scores, "full_tensor") else scores


def select_units(scores: list[torch.Tensor], original_total: int, level: float) -> list[torch.Tensor]:
    """Which units level `level` keeps, ranked globally across layers.

    Args:
        scores: one 1-D tensor per layer (layers may hold different numbers of units after pruning).
        original_total: units in the unpruned model; level s keeps round((1 - s) * original_total) of them.
    Returns:
        one bool tensor per layer, True for kept units.
    """
    flat = torch.cat([full_scores(score).detach().float() for score in scores])
    keep_count = min(round((1 - level) * original_total), flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[:keep_count]] = True
    return list(keep.split([score.numel() for score in scores]))


def unit_gates(scores: torch.Tensor, keep: torch.Tensor, straight_through: bool) -> torch.Tensor:
    """0/1 gates for the units. With `straight_through`, the forward value is the same hard gate but the gradient
    reaches the scores as if the gate were sigmoid(score)."""
    scores = full_scores(scores)
    hard = keep.to(scores.dtype)
    if not straight_through:
        return hard
    soft = torch.sigmoid(scores)
    return hard + soft - soft.detach()


def linear(in_features: int, out_features: int) -> nn.Linear:
    """nn.Linear that may be empty: a layer pruned to no head or no neuron is legal, so torch's warning about
    initialising a zero-element tensor is silenced here (and only here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


def prune_linear(layer: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new nn.Linear (same dtype) holding only the kept output rows (dim=0) or input columns (dim=1)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return prune_linear_layer(layer, keep.nonzero().flatten(), dim).to(layer.weight.dtype)


@dataclass
class SparsityReport:
    """Heads and neurons kept per layer, and the totals against the unpruned model."""

    heads_per_layer: list[int]
    neurons_per_layer: list[int]
    original_heads_per_layer: int
    original_neurons_per_layer: int
    attention_parameters: int
    ffn_parameters: int
    original_attention_parameters: int
    original_ffn_parameters: int
    level: float

    @property
    def attention_share_kept(self) -> float:
        return self.attention_parameters / self.original_attention_parameters

    @property
    def ffn_share_kept(self) -> float:
        return self.ffn_parameters / self.original_ffn_parameters

    def __str__(self) -> str:
        lines = [f"sparsity level {self.level:g}", "layer | heads | FFN neurons"]
        for index, (heads, neurons) in enumerate(zip(self.heads_per_layer, self.neurons_per_layer)):
            lines.append(
                f"{index:>5} | {heads:>2}/{self.original_heads_per_layer} | "
                f"{neurons:>5}/{self.original_neurons_per_layer}"
            )
        lines.append(
            f"attention parameters kept: {self.attention_parameters:,} of "
            f"{self.original_attention_parameters:,} ({100 * self.attention_share_kept:.1f} %)"
        )
        lines.append(
            f"FFN parameters kept: {self.ffn_parameters:,} of {self.original_ffn_parameters:,} "
            f"({100 * self.ffn_share_kept:.1f} %)"
        )
        return "\n".join(lines)


logger = logging.get_logger(__name__)

# The `gates` a pass gets when its caller names none: the model's own level (`sparsity_level`). None is a level's
# gates too (every unit on).
OWN_LEVEL = object()


class DeerPruningMixin:
    """Pruning levels for `DeerForConditionalGeneration`: mask to a level (`set_sparsity`), remove for good
    (`prune_to`), report, and the pieces training needs (scores, their ranking by importance, regulariser,
    optimizer groups).

    A level reaches the layers as gates that travel with each call (`level_gates`, carried in the call's
    `DeerEncoderOutput`), as an attention mask does; nothing is set on the modules, so calls at different levels,
    from several threads, run side by side. `self.sparsity_level` is the model's own level, the one a call without
    `sparsity=` computes at (`set_sparsity`). The config only records what is saved with the weights: the levels
    training sampled (`sparsity_levels`) and the level `prune_to` cut the shapes to (`pruned_sparsity`, the floor: a
    loaded model starts there). A training step draws its own levels (`training_levels`)."""

    def _select_units(self, level: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Heads and neurons that `level` keeps, per layer, counted against the unpruned model."""
        config, layers = self.config, self.model.layers
        heads = select_units(
            [layer.attention.head_scores for layer in layers],
            config.num_attention_heads * config.num_hidden_layers,
            level,
        )
        neurons = select_units(
            [layer.feed_forward.neuron_scores for layer in layers],
            config.intermediate_size * config.num_hidden_layers,
            level,
        )
        return heads, neurons

    def level_gates(self, level: float, straight_through: bool = False) -> tuple | None:
        """The gates of `level` for one call, per layer (head gate, neuron gate): 0 or 1 per unit, with a
        straight-through gradient to the scores when `straight_through` (training). None at the level the weights
        were cut to (every unit left is on) unless `straight_through`. A call's gates travel with it (in its
        `DeerEncoderOutput`), so calls at different levels, from several threads, share no state."""
        if level == self.config.pruned_sparsity and not straight_through:
            return None
        heads, neurons = self._select_units(level)
        return tuple(
            (
                unit_gates(layer.attention.head_scores, keep_heads, straight_through),
                unit_gates(layer.feed_forward.neuron_scores, keep_neurons, straight_through),
            )
            for layer, keep_heads, keep_neurons in zip(self.model.layers, heads, neurons)
        )

    def training_levels(self) -> list[float]:
        """The pruning levels one training step runs at (none without `sparsity_levels`, or in evaluation), never
        below the level the weights were cut to: one drawn from `sparsity_levels`; with `full_every_step`, the full
        size first, then one drawn from the smaller levels; with `sandwich_rule`, the full size, the smallest level,
        then one drawn from those between."""
        config = self.config
        if not self.training or not config.sparsity_levels:
            return []
        if config.level_ranking == "importance" and not config.units_ranked:
            raise ValueError(
                'level_ranking="importance": rank the units before training the levels, with '
                "model.rank_units(batches) on a few dozen training batches (deer-train does it)."
            )
        base = config.pruned_sparsity
        levels = sorted({max(level, base) for level in config.sparsity_levels})
        smaller = [level for level in levels if level > base]
        if config.sandwich_rule:
            between = smaller[:-1]
            drawn = [between[int(torch.randint(len(between), ()))]] if between else []
            return [base] + smaller[-1:] + drawn
        if config.full_every_step:
            return [base] + ([smaller[int(torch.randint(len(smaller), ()))]] if smaller else [])
        drawn = config.sparsity_levels[int(torch.randint(len(config.sparsity_levels), ()))]
        return [max(drawn, base)]

    def check_level_reachable(self, level, action: str) -> float:
        """`level` as a checked float (`check_level`), refused when below the level the weights were cut to."""
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

    def set_sparsity(self, level: float):
        """Mask the model to sparsity `level` (0 = everything on) without touching the weights: evaluate every level
        from one loaded model. Returns the model."""
        self.sparsity_level = self.check_level_reachable(level, "set_sparsity")
        return self

    @torch.no_grad()
    def prune_to(self, level: float):
        """Remove, in place, the heads and FFN neurons that `level` drops: the weight matrices shrink, so the model is
        really smaller and faster. The config records the new shapes (save/load keeps them); the surviving scores
        stay, so a later `prune_to` at a higher level works. Returns the model."""
        level = self.check_level_reachable(level, "prune_to")
        heads, neurons = self._select_units(level)
        for layer, keep_heads, keep_neurons in zip(self.model.layers, heads, neurons):
            layer.attention.prune_heads(keep_heads)
            layer.feed_forward.prune_neurons(keep_neurons)
        self.config.layer_num_heads = [layer.attention.num_heads for layer in self.model.layers]
        self.config.layer_intermediate_sizes = [layer.feed_forward.up.out_features for layer in self.model.layers]
        self.config.pruned_sparsity = level
        self.sparsity_level = level
        return self

    def sparsity_report(self, level: float | None = None) -> SparsityReport:
        """Heads and FFN neurons kept per layer at `level` (default: the model's own, `set_sparsity`), with
        parameter totals."""
        config = self.config
        level = self.sparsity_level if level is None else self.check_level_reachable(level, "sparsity_report")
        heads, neurons = self._select_units(level)
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
            level=level,
        )

    def rank_units(self, batches, ctc_only: bool = False, force: bool = False) -> int:
        """Rank the heads and FFN neurons once, by importance (`config.level_ranking="importance"`): each unit's
        score becomes the mean over `batches` of |dL/dgate|, how much the loss changes, to first order, when the
        unit is switched off, at the full size, without dropout. `batches`: dicts with `input_ids`,
        `attention_mask` and `labels` (training pairs, as the data collator pads them); `ctc_only`: the loss of the
        draft alone (what the first training steps train). The scores then stay fixed (`freeze_unused_scores`), so
        each level is the same sub-network from the first training step to the last. A ranked model
        (`config.units_ranked`) is left alone unless `force`. Returns the number of batches read."""
        config = self.config
        if config.units_ranked and not force:
            return 0
        scores = self.pruning_scores()
        totals = [torch.zeros(score.shape, dtype=torch.float32, device=score.device) for score in scores]
        count, was_training = 0, self.training
        self.eval()
        try:
            for batch in batches:
                batch = {name: value.to(self.device) for name, value in batch.items() if value is not None}
                input_ids = batch["input_ids"].long()
                attention_mask = self.check_source(input_ids, batch.get("attention_mask"))
                targets = self.check_labels(batch["labels"], input_ids.shape[0])
                # Gates of ones, one per unit: the gradient reaching them is each unit's dL/dgate.
                gates = [torch.ones_like(total, requires_grad=True) for total in totals]
                encoder_output = self.encode(input_ids, attention_mask, tuple(zip(gates[::2], gates[1::2])))
                loss = self.deer_loss(input_ids, attention_mask, encoder_output, targets, ctc_only=ctc_only).loss
                for total, grad in zip(totals, torch.autograd.grad(loss, gates, allow_unused=True)):
                    if grad is not None:
                        total += grad.abs().float()
                count += 1
        finally:
            self.train(was_training)
        if not count:
            raise ValueError("rank_units needs at least one batch of training pairs.")
        with torch.no_grad():
            for score, total in zip(scores, totals):
                score.copy_(total / count)
        config.units_ranked = True
        self.freeze_unused_scores()
        return count

    def pruning_scores(self) -> list[nn.Parameter]:
        return [
            score
            for layer in self.model.layers
            for score in (layer.attention.head_scores, layer.feed_forward.neuron_scores)
        ]

    def sparsity_regularizer(self) -> torch.Tensor:
        """sparsity_weight * mean(sigmoid(score)) over every head and neuron score."""
        scores = torch.cat([full_scores(score).flatten() for score in self.pruning_scores()])
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
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            score_group,
        ]
