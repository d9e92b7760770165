"""Dynamic structured pruning: one checkpoint that runs at 100 / 75 / 50 / 25 % of its prunable size.

Prunable units are attention heads (a head's rows of the query, key and value projections and its columns of the
output projection) and FFN neurons (a row of the up projection and the matching column of the down projection):
exactly what can leave the weight matrices, so a pruned model is really smaller and faster.

Every unit has one learnable score. Level `s` keeps, globally across layers, the highest-scoring units holding
(1 - s) of the attention parameters, and separately (1 - s) of the FFN parameters, counted against the unpruned
model. Ranking is a stable sort (ties: earlier layer, then earlier unit, first), so levels are exact and nested.

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


def select_units(scores: list[torch.Tensor], original_total: int, level: float) -> list[torch.Tensor]:
    """Which units level `level` keeps, ranked globally across layers.

    Args:
        scores: one 1-D tensor per layer (layers may hold different numbers of units after pruning).
        original_total: units in the unpruned model; level s keeps round((1 - s) * original_total) of them.
    Returns:
        one bool tensor per layer, True for kept units.
    """
    flat = torch.cat([score.detach().float() for score in scores])
    keep_count = min(round((1 - level) * original_total), flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[:keep_count]] = True
    return list(keep.split([score.numel() for score in scores]))


def unit_gates(scores: torch.Tensor, keep: torch.Tensor, straight_through: bool) -> torch.Tensor:
    """0/1 gates for the units. With `straight_through`, the forward value is the same hard gate but the gradient
    reaches the scores as if the gate were sigmoid(score)."""
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
            lines.append(f"{index:>5} | {heads:>2}/{self.original_heads_per_layer} | "
                         f"{neurons:>5}/{self.original_neurons_per_layer}")
        lines.append(f"attention parameters kept: {self.attention_parameters:,} of "
                     f"{self.original_attention_parameters:,} ({100 * self.attention_share_kept:.1f} %)")
        lines.append(f"FFN parameters kept: {self.ffn_parameters:,} of {self.original_ffn_parameters:,} "
                     f"({100 * self.ffn_share_kept:.1f} %)")
        return "\n".join(lines)
