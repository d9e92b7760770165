"""Random-weight models of real backbone shapes, arranged for timing: DEER (with a draft of a chosen length and
realistic edit rounds), the plain MLM pass that is DEER's floor, and the BERT2BERT model a transformers user would
otherwise pick; random sources for them; and the forced `generate` calls the timings make."""

import torch
from transformers import BatchEncoding, BertConfig, BertForMaskedLM, BertLMHeadModel, BertModel, EncoderDecoderModel

from modeling_deer import DeerConfig, DeerForConditionalGeneration
from modeling_deer.edit_ops import inner_mask


# Random-weight models of real shapes, for timing: what a backbone of that size costs, whatever it says. They use
# bert-base-uncased's vocabulary size and special ids ([PAD], [CLS], [SEP], [MASK]).
BERT_VOCAB, BERT_PAD, BERT_CLS, BERT_SEP, BERT_MASK = 30522, 0, 101, 102, 103
SHAPES = {
    "minilm": {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536},
    "bert-base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    # XLM-R base: BERT-base's body with a 250,002-token vocabulary (the LM head then dominates).
    "xlm-r": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    },  # tests, CI
}
# The tiny shape's vocabulary (a smoke run takes seconds) and XLM-R's; others: BERT's.
VOCABULARY = {"tiny": 2000, "xlm-r": 250002}


SOURCE_LENGTH = 48
OUTPUT_LENGTH = 32  # tokens the AR model writes in experiments.bench; DEER's draft is calibrated to this average


def vocabulary_size(shape: str) -> int:
    return VOCABULARY.get(shape, BERT_VOCAB)


def build_model(shape: str, seed: int = 0, vocabulary: int | None = None) -> DeerForConditionalGeneration:
    """A random DEER model of the shape (with the shape's vocabulary unless given), with random pruning scores and a
    blank that never wins (a full-length draft); `calibrate_output_length` and `realistic_rounds` arrange the draft's
    length and the edit rounds."""
    torch.manual_seed(seed)
    config = DeerConfig(
        vocab_size=vocabulary or vocabulary_size(shape),
        max_position_embeddings=512,
        pad_token_id=BERT_PAD,
        bos_token_id=BERT_CLS,
        eos_token_id=BERT_SEP,
        placeholder_token_id=BERT_MASK,
        **SHAPES[shape],
    )
    model = DeerForConditionalGeneration(config).eval()
    with torch.no_grad():
        for score in model.pruning_scores():
            score.normal_()
        set_blank_score(model, -1e4)  # never blank: a full-length draft
    return model


def set_blank_score(model, value: float):
    """Make the draft's blank score `value` at every frame (a random model's knob for the draft's length)."""
    with torch.no_grad():
        if model.blank_head is not None:
            model.blank_head.weight.zero_()
            model.blank_head.bias.fill_(value)
        else:
            model.lm_head.decoder.bias[model.config.placeholder_token_id] = value


def build_floor(shape: str) -> BertForMaskedLM:
    """A plain masked LM of the shape: one pass over source + draft tokens is DEER's floor."""
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=vocabulary_size(shape), **SHAPES[shape])).eval()


def build_autoregressive(shape: str) -> EncoderDecoderModel:
    """BERT2BERT of the shape (encoder and decoder each that size), with BERT's special ids."""
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=vocabulary_size(shape), **SHAPES[shape]), add_pooling_layer=False)
    decoder = BertLMHeadModel(
        BertConfig(vocab_size=vocabulary_size(shape), is_decoder=True, add_cross_attention=True, **SHAPES[shape])
    )
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    for holder in (model.config, model.generation_config):
        holder.decoder_start_token_id, holder.pad_token_id, holder.eos_token_id = BERT_CLS, BERT_PAD, BERT_SEP
    return model


def calibrate_output_length(model, sources: torch.Tensor, length: int) -> float:
    """Raise or lower a random DEER model's blank score until the collapsed draft of `sources` averages `length`
    tokens (bisection), so that it writes as much as the autoregressive model is made to. Returns the average."""
    low, high = -20.0, 20.0
    for _ in range(25):
        middle = (low + high) / 2
        set_blank_score(model, middle)
        produced = (model.generate(input_ids=sources, max_iterations=0) != 0).sum(1).float().mean().item() - 2
        low, high = (middle, high) if produced > length else (low, middle)
    return produced


@torch.no_grad()
def calibrate_edits(model, sources: torch.Tensor, per_row: float = 1.0) -> dict:
    """Set a random DEER model's deletion and insertion biases so that a round on the draft of `sources` deletes
    about `per_row` tokens per row and inserts about as many placeholders (at most one per gap): realistic rounds,
    which run all three of their passes (delete, insert, fill) and keep the outputs' length. Returns the deletions
    and insertions per row that the draft then gets."""
    config = model.config
    model.insertion_head.bias[2:] = -1e4  # at most one placeholder per gap
    draft = model.generate(input_ids=sources, max_iterations=0)
    hidden_states = model.target_pass(draft, model.encode(sources))
    rows = len(draft)
    tokens_mask, gaps_mask = inner_mask(draft, config.pad_token_id), draft[:, 1:] != config.pad_token_id

    def threshold(margins: torch.Tensor) -> float:
        """The margin above which `per_row` cases per row fall."""
        return float(torch.quantile(margins.float(), 1 - min(1.0, per_row * rows / len(margins))))

    weight = model.deletion_head.weight
    deletion_margin = (hidden_states @ (weight[1] - weight[0]))[tokens_mask]
    model.deletion_head.bias.copy_(torch.tensor([0.0, -threshold(deletion_margin)]))
    pairs = torch.cat([hidden_states[:, :-1], hidden_states[:, 1:]], dim=-1)
    weight = model.insertion_head.weight
    insertion_margin = (pairs @ (weight[1] - weight[0]))[gaps_mask]
    model.insertion_head.bias[:2] = torch.tensor([0.0, -threshold(insertion_margin)])
    deletions = model.deletion_logits(hidden_states).argmax(-1).bool() & tokens_mask
    insertions = (model.insertion_logits(hidden_states).argmax(-1) == 1) & gaps_mask
    return {"deletions_per_row": deletions.sum().item() / rows, "insertions_per_row": insertions.sum().item() / rows}


def target_passes_per_round(model, batch, iterations: int = 2) -> float:
    """Target passes a forced `generate` call runs per edit round, counted (3 = delete, insert and fill all ran)."""
    count = 0
    own = model.target_pass

    def counted(*args, **kwargs):
        nonlocal count
        count += 1
        return own(*args, **kwargs)

    model.target_pass = counted
    try:
        forced(model, batch, iterations)()
    finally:
        del model.target_pass
    return count / iterations


def realistic_rounds(model, sources: torch.Tensor, rounds: int = 4) -> dict:
    """Rig a random DEER model's edit heads for timing realistic rounds: `calibrate_edits` on the first source with
    the fewest edits per row (1, then more) at which each of `rounds` forced rounds runs all three of its passes at
    batch 1 (a larger batch then runs them too). Returns the edits per row and the passes per round at batch 1 and
    at the batch of all `sources`."""
    for per_row in (1, 1.5, 2, 3, 4, 6, 8):
        edits = calibrate_edits(model, sources[:1], per_row)
        passes = target_passes_per_round(model, tokens(sources[:1]), rounds)
        if passes == 3:
            break
    return {
        **edits,
        "passes_per_round_b1": passes,
        f"passes_per_round_b{len(sources)}": target_passes_per_round(model, tokens(sources), rounds),
    }


def sources_batch(rows: int = 32, vocabulary: int = BERT_VOCAB) -> torch.Tensor:
    """Random `SOURCE_LENGTH`-token sources ([CLS] ... [SEP]) of ids below `vocabulary`; the first 32 rows are the
    same for any `rows`."""
    generator = torch.Generator().manual_seed(1)
    sources = torch.randint(1000, min(30000, vocabulary), (rows, SOURCE_LENGTH), generator=generator)
    sources[:, 0], sources[:, -1] = BERT_CLS, BERT_SEP
    return sources


def forced(model, batch, iterations: int):
    """A `generate` call that runs exactly `iterations` rounds."""
    return lambda: model.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        max_iterations=iterations,
        stop_when_unchanged=False,
    )


def tokens(input_ids: torch.Tensor) -> BatchEncoding:
    """Unpadded token ids as a tokenizer's batch."""
    return BatchEncoding({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})
