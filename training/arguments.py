"""The flags of the two training scripts beyond transformers' `Seq2SeqTrainingArguments`, as dataclasses for
`HfArgumentParser`. Only the standard library here, so that `deer-train --help` lists them without importing torch.
"""

from dataclasses import MISSING, dataclass, field


def flag(default=MISSING, help: str = "", factory=None):
    """A dataclass field and its --help text; `factory` for a list default."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


MODEL_HELP = "A BERT-family masked LM (directory or Hub id)"
DEFAULT_NOTE = " Default: the model's"
TIME_LIMIT_HELP = "Stop training after this many minutes of wall time (then save as usual), whatever --max_steps says."


@dataclass
class ModelArguments:
    model_name_or_path: str = flag(help=f"{MODEL_HELP}, converted with from_mlm, or an existing DEER checkpoint.")
    tokenizer_name: str | None = flag(None, "Defaults to model_name_or_path.")
    upsample_ratio: float | None = flag(None, "Draft frames per source token.")
    glancing_start: float = flag(0.5, "Glancing ratio at the first step.")
    glancing_end: float = flag(0.2, "Glancing ratio at the last step (linear).")
    sparsity_levels: list[float] | None = flag(
        None,
        "Pruning levels trained, e.g. 0 0.25 0.5 0.75. Default: none for a new model (no pruning scores trained), "
        "the checkpoint's own for a DEER checkpoint.",
    )
    sparsity_weight: float | None = flag(None, "Weight of the score regulariser.")
    score_learning_rate: float | None = flag(None, "Learning rate of the pruning scores (default: --learning_rate).")
    max_train_minutes: float | None = flag(None, TIME_LIMIT_HELP)
    random_init: bool = flag(
        False,
        "Ablation: the same shape, special tokens and tokenizer as the converted MLM, but every weight drawn afresh "
        "(seeded by --seed): what the pretrained MLM is worth.",
    )
    draft_input: str | None = flag(
        None,
        "What the draft frames read: 'source' (the source tokens spread over the frames) or 'placeholder' (the "
        "paper). Default: the model's (new models: source).",
    )
    separate_blank_head: bool | None = flag(
        None,
        "Give the CTC blank its own output row (a new model only; default: yes). It is calibrated on the first "
        "training sources before training.",
    )
    draft_edit_ratio: float | None = flag(
        None, "Share of the rows whose edit losses use the model's own draft (0 = the paper's gold-derived inputs)."
    )
    edit_rows_ratio: float | None = flag(
        None,
        "Share of each batch's rows (drawn afresh every step) that the edit losses are computed on; the CTC loss "
        "always uses all. Below 1 the edit passes cost that much less. Default: the model's (new: 1).",
    )
    full_every_step: bool | None = flag(
        None,
        "With --sparsity_levels: train the full size on every step and one smaller level beside it (two passes per "
        "step) instead of one level drawn per step." + DEFAULT_NOTE,
    )
    sandwich_rule: bool | None = flag(
        None,
        "With --sparsity_levels: train the full size, the smallest level and one level drawn from those between on "
        "every step (three passes per step; the sandwich rule of slimmable networks)." + DEFAULT_NOTE,
    )
    distillation_weight: float | None = flag(
        None,
        "In-place distillation, with --sandwich_rule or --full_every_step: the smaller levels also learn the full "
        "size's detached output distributions (CTC frames, insertion, word and deletion heads) on the full size's "
        "inputs, with this weight (0 = off)." + DEFAULT_NOTE,
    )
    level_loss_weight: float | None = flag(
        None,
        "With --sandwich_rule or --full_every_step: the weight of each smaller level's loss against the full size's "
        "1 (below 1 the full size's gradient dominates the shared weights)." + DEFAULT_NOTE,
    )
    level_ranking: str | None = flag(
        None,
        "With --sparsity_levels: how the heads and FFN neurons are ranked for the levels. 'learned': scores trained "
        "with the weights. 'importance': each unit's importance on training pairs (the loss's first-order change "
        "without it), measured once before training and then fixed." + DEFAULT_NOTE + " (new: learned).",
    )
    level_ranking_rows: int = flag(512, "With --level_ranking importance: how many training pairs the ranking reads.")
    level_ranking_steps: list[int] = flag(
        help="With --level_ranking importance: the training steps at which the units are ranked, each time on the "
        "model as trained so far; the levels train from the first of them on (the full size alone before). Default "
        "0: once, before the first step; e.g. 1000: once at step 1000; 0 1000: before the first step and again at "
        "1000.",
        factory=lambda: [0],
    )
    redraft_ratio: float | None = flag(
        None,
        "Share of the rows whose CTC pass reads the model's own confident draft words instead of glanced gold ones: "
        "trains the re-drafting rounds (generate(refinement='redraft'))." + DEFAULT_NOTE,
    )
    edit_loss_weight: float | None = flag(
        None,
        "Weight of each of the three edit losses (insertion, word, deletion); the CTC loss keeps weight 1. Default: "
        "the model's (a new model: 0.5; the paper: 1).",
    )
    ctc_only_steps: int | None = flag(
        None,
        "Train the draft alone (CTC loss only, the edit passes skipped) for this many steps first; then all four "
        "losses. Default: the first third of the training steps; 0: all four from the start (the paper).",
    )
    trim_vocabulary: bool = flag(
        False,
        "Shrink the embeddings and LM head to the tokens of the training data (sources and targets): a faster model "
        "that can only write those tokens. The tokenizer is unchanged.",
    )
    tune_decoding: str | None = flag(
        None,
        "After training, choose the decoding knobs (blank, deletion and eos penalties) on --validation_file by this "
        "metric (bleu, chrf or rougeL; default: --generation_metric) at --max_iterations rounds, then max_iterations "
        "among 0 1 2 4, as `training.evaluate --select METRIC --save` does, and save them with the model, so that a "
        "plain generate() decodes as chosen. 'none': leave them as they are. Needs --do_train and --validation_file; "
        "otherwise nothing is tuned.",
    )


@dataclass
class StoppingArguments:
    """What judges a checkpoint during training, and when training stops early (both training commands)."""

    generation_metric: str = flag(
        "bleu",
        "The task's metric of generated text: bleu (translation), rougeL (simplification) or chrf. With "
        "--predict_with_generate it is the default --metric_for_best_model (the best checkpoint, early stopping).",
    )
    early_stopping_patience: int | None = flag(
        None,
        "Stop after this many evaluations in a row without improvement of --metric_for_best_model (transformers' "
        "EarlyStoppingCallback), then load the best checkpoint (--load_best_model_at_end is implied). Needs "
        "--validation_file, an --eval_strategy and a --save_strategy that saves at every evaluation.",
    )
    early_stopping_threshold: float = flag(
        0.0, "How much the metric must improve on the best so far to count as an improvement."
    )


@dataclass
class CardArguments:
    """Model-card metadata for `--push_to_hub` (the card also gets the evaluation metrics of this run)."""

    card_base_model: str | None = flag(None, "Hub id of the MLM the run started from.")
    card_datasets: list[str] = flag(help="Dataset names for the card.", factory=list)
    card_language: list[str] = flag(help="Language codes, e.g. de en.", factory=list)
    card_license: str = flag("apache-2.0")


@dataclass
class DataArguments:
    train_file: str | None = flag(
        None,
        "JSON lines, JSON, CSV, TSV, parquet, arrow, or a save_to_disk folder (of a DatasetDict: its 'train' split).",
    )
    validation_file: str | None = flag(None, "As --train_file (of a DatasetDict folder: its 'validation' split).")
    dataset_name: str | None = flag(
        None,
        "Instead of the files: a dataset for datasets.load_dataset (a local dataset folder or script offline, a Hub "
        "id when online); its train and validation splits by name.",
    )
    dataset_config_name: str | None = flag(None, "The dataset's configuration.")
    streaming: bool = flag(
        False,
        "Read the training data as training goes (an IterableDataset), for data larger than memory; needs "
        "--max_steps, and not --trim_vocabulary (it reads every training token first).",
    )
    test_file: str | None = flag(
        None,
        "As --train_file (of a DatasetDict folder: its 'test' split): scored after training (--do_predict implied), "
        "its outputs written to generated_predictions.txt with --predict_with_generate.",
    )
    max_predict_samples: int | None = flag(None)
    source_column: str = flag("source", "The sources' column (flat rows).")
    target_column: str = flag("target", "The targets' column (flat rows).")
    source_lang: str | None = flag(None, "The sources' language in a 'translation' column of dicts.")
    target_lang: str | None = flag(None, "The targets' language in a 'translation' column of dicts.")
    max_train_samples: int | None = flag(None)
    max_eval_samples: int | None = flag(None)
    max_source_length: int = flag(128, "Longer sources are truncated.")
    max_target_length: int = flag(128, "Longer targets are truncated.")
    max_iterations: int = flag(
        2,
        "Rounds after the draft when evaluating by generation, and the rounds --tune_decoding chooses the knobs at; "
        "written into the model's generation config, so saved with it unless --tune_decoding chooses the count.",
    )


@dataclass
class ARModelArguments:
    model_name_or_path: str = flag(
        help=f"{MODEL_HELP}, the encoder and the decoder both start from it; or an EncoderDecoderModel checkpoint "
        "to go on training."
    )
    tokenizer_name: str | None = flag(None, "Defaults to model_name_or_path.")
    max_train_minutes: float | None = flag(None, TIME_LIMIT_HELP)
    trim_vocabulary: bool = flag(
        False,
        "Shrink both embedding tables and the LM head to the tokens of the training data (sources and targets), as "
        "deer-train --trim_vocabulary does: a model that trains and decodes at the speed of its real vocabulary. The "
        "tokenizer saved with the model is trimmed to match (WordPiece; words the kept pieces spell tokenise as "
        "before, others read as unk).",
    )
