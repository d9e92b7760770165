"""Measuring for the benchmark scripts: medians of whole calls after a warm-up, several systems taking turns; a
process's peak resident memory; the one count of non-embedding parameters every table uses; and random-weight
DEER models of real backbone shapes."""

import resource
import statistics
import time

import torch

from modeling_deer import DeerConfig, DeerForConditionalGeneration


# Random-weight models of real shapes, for timing: what a backbone of that size costs, whatever it says. They use
# bert-base-uncased's vocabulary size and special ids ([PAD], [CLS], [SEP], [MASK]).
BERT_VOCAB, BERT_PAD, BERT_CLS, BERT_SEP, BERT_MASK = 30522, 0, 101, 102, 103
SHAPES = {
    "minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}
SOURCE_LENGTH = 48


def interleaved_medians(calls: dict, repeats: int, on_round=None) -> dict:
    """Median milliseconds of each call over `repeats` rounds after one warm-up round. Within a round the calls take
    turns, so a drift of the machine's speed touches every one of them alike and their ratios stay fair.
    `on_round()`, if given, is called after each round (a progress bar)."""
    timings = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_index:
                timings[name].append(time.perf_counter() - started)
        if on_round is not None:
            on_round()
    return {name: 1000 * statistics.median(values) for name, values in timings.items()}


def reset_peak_rss():
    """Linux keeps a process's peak RSS across fork and exec (getrusage(2)), so a child started by a large parent
    would report the parent's peak: reset this process's high-water mark first (to its current RSS)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(shape: str, seed: int = 0) -> DeerForConditionalGeneration:
    torch.manual_seed(seed)
    config = DeerConfig(vocab_size=BERT_VOCAB, max_position_embeddings=512, pad_token_id=BERT_PAD,
                        bos_token_id=BERT_CLS, eos_token_id=BERT_SEP, placeholder_token_id=BERT_MASK, **SHAPES[shape])
    model = DeerForConditionalGeneration(config).eval()
    with torch.no_grad():
        for score in model.pruning_scores():
            score.normal_()
        set_blank_score(model, -1e4)  # never blank: a full-length draft
        model.deletion_head.bias.copy_(torch.tensor([1e4, 0.0]))  # keep every token
        model.insertion_head.bias[0] = 1e4  # insert nothing
    return model


def set_blank_score(model, value: float):
    """Make the draft's blank score `value` at every frame (a random model's knob for the draft's length)."""
    with torch.no_grad():
        if model.blank_head is not None:
            model.blank_head.weight.zero_()
            model.blank_head.bias.fill_(value)
        else:
            model.lm_head.decoder.bias[model.config.placeholder_token_id] = value


def sources_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sources = torch.randint(1000, 30000, (32, SOURCE_LENGTH), generator=generator)
    sources[:, 0], sources[:, -1] = BERT_CLS, BERT_SEP
    return sources


def non_embedding_parameters(model) -> int:
    """Parameters outside the embedding tables (word, position, type) and the output projection tied to them."""
    skip = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            skip.add(id(module.weight))
    output = model.get_output_embeddings()
    if output is not None:
        skip.add(id(output.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)
