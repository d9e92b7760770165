"""`DeerForConditionalGeneration.from_mlm`: copy a BERT-family masked LM into a DEER model, weight for weight.

The source checkpoint is loaded by transformers itself (so its own key renames and legacy formats apply), then each
module is copied into its DEER counterpart:

    embeddings (word, position, token type, LayerNorm)   -> model.embeddings
    encoder.layer.i.attention.self.{query,key,value}     -> model.layers.i.attention.{query,key,value}
    encoder.layer.i.attention.output.{dense,LayerNorm}   -> model.layers.i.attention.{output,LayerNorm}
    encoder.layer.i.intermediate.dense                   -> model.layers.i.feed_forward.up
    encoder.layer.i.output.{dense,LayerNorm}             -> model.layers.i.feed_forward.{down,LayerNorm}
    MLM head transform (dense, LayerNorm) and bias       -> lm_head.{dense,LayerNorm,decoder.bias}
    (decoder weight: tied to the word embeddings)

One value is not copied: the MLM head's bias for the mask token, which DEER uses as the CTC blank. An MLM is trained
never to predict its mask token, so that bias sits far below every word's (the tiny BERT here: -7.3 against a mean
of -0.2), and a blank that starts a thousand times less likely than a word is never learned: CTC then aligns with
repeated words only, and the drafts come out short. It starts at the mean bias of the vocabulary instead, so the
converted model's logits equal the MLM's in every column but the mask token's.
"""

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
from transformers.utils import logging

from .configuration_deer import DeerConfig


logger = logging.get_logger(__name__)

# model_type -> how positions are numbered: BERT from 0, RoBERTa-style after the padding index.
SUPPORTED_MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "camembert": "roberta"}
# Fields that BertConfig, RobertaConfig and XLMRobertaConfig share with DeerConfig, copied as they are.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
)
SPECIAL_TOKENS = {  # DEER's name -> the tokenizer attribute that holds it
    "bos_token_id": "cls_token_id",
    "eos_token_id": "sep_token_id",
    "pad_token_id": "pad_token_id",
    "placeholder_token_id": "mask_token_id",
}


def convert_mlm_to_deer(model_class, pretrained_model_name_or_path, **config_overrides):
    source_config = AutoConfig.from_pretrained(pretrained_model_name_or_path)
    style = SUPPORTED_MODEL_TYPES.get(source_config.model_type)
    if style is None:
        raise ValueError(
            f"from_mlm supports {sorted(SUPPORTED_MODEL_TYPES)} checkpoints; {pretrained_model_name_or_path} is a "
            f"'{source_config.model_type}' model."
        )
    position_type = getattr(source_config, "position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise ValueError(f"from_mlm needs absolute position embeddings; this checkpoint uses '{position_type}'.")

    mlm, loading_info = AutoModelForMaskedLM.from_pretrained(
        pretrained_model_name_or_path, output_loading_info=True, dtype=torch.float32
    )
    head_prefix = "cls." if style == "bert" else "lm_head."
    has_mlm_head = not any(key.startswith(head_prefix) for key in loading_info["missing_keys"])
    if not has_mlm_head:
        logger.warning(
            f"{pretrained_model_name_or_path} has no MLM head (a plain encoder): the LM head's transform is "
            "initialised fresh and its decoder tied to the word embeddings. Fine-tune before generating."
        )

    token_ids = _special_token_ids(pretrained_model_name_or_path, config_overrides, source_config)
    config = DeerConfig(
        **{name: getattr(source_config, name) for name in ARCHITECTURE_FIELDS},
        position_offset=token_ids["pad_token_id"] + 1 if style == "roberta" else 0,
        tie_word_embeddings=getattr(source_config, "tie_word_embeddings", True),
        **token_ids,
        **config_overrides,
    )
    model = model_class(config)
    _copy_weights(model, mlm, style, has_mlm_head)
    model.name_or_path = str(pretrained_model_name_or_path)
    return model.eval()  # like from_pretrained; the Trainer switches to training mode itself


def _special_token_ids(pretrained_model_name_or_path, config_overrides, source_config) -> dict:
    """bos/eos/pad/placeholder from the checkpoint's tokenizer, unless given as overrides. The tokenizer is checked
    against the checkpoint first (its size, and the special ids the checkpoint's config names): a directory without
    tokenizer files gets transformers' empty default tokenizer, whose ids would be silently wrong."""
    token_ids = {name: config_overrides.pop(name) for name in list(SPECIAL_TOKENS) if name in config_overrides}
    if len(token_ids) == len(SPECIAL_TOKENS):
        return token_ids
    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"from_mlm reads the special tokens from the checkpoint's tokenizer, which failed to load ({error}); "
            f"pass {sorted(set(SPECIAL_TOKENS) - set(token_ids))} explicitly."
        ) from error
    missing = sorted(set(SPECIAL_TOKENS) - set(token_ids))
    if not 0.5 * source_config.vocab_size <= len(tokenizer) <= source_config.vocab_size + 1024:
        raise ValueError(
            f"the tokenizer found with {pretrained_model_name_or_path} has {len(tokenizer)} tokens but the model "
            f"{source_config.vocab_size}: it is not this checkpoint's (no tokenizer files?). Add the tokenizer's "
            f"files to the directory, or pass {missing} explicitly."
        )
    for config_name, attribute in (
        ("pad_token_id", "pad_token_id"),
        ("bos_token_id", "cls_token_id"),
        ("eos_token_id", "sep_token_id"),
    ):
        expected, found = getattr(source_config, config_name, None), getattr(tokenizer, attribute, None)
        if expected is not None and found is not None and expected != found and config_name in missing:
            raise ValueError(
                f"{pretrained_model_name_or_path}: its config says {config_name}={expected} but its tokenizer's "
                f"{attribute} is {found}; pass the special ids explicitly ({missing})."
            )
    for name, attribute in SPECIAL_TOKENS.items():
        if name not in token_ids:
            value = getattr(tokenizer, attribute, None)
            if value is None:
                raise ValueError(f"the tokenizer of {pretrained_model_name_or_path} has no {attribute}; pass {name}.")
            token_ids[name] = value
    config_overrides.setdefault("unk_token_id", tokenizer.unk_token_id)
    return token_ids


@torch.no_grad()
def _copy_weights(model, mlm, style: str, has_mlm_head: bool):
    backbone = mlm.base_model
    model.model.embeddings.word_embeddings.load_state_dict(backbone.embeddings.word_embeddings.state_dict())
    model.model.embeddings.position_embeddings.load_state_dict(backbone.embeddings.position_embeddings.state_dict())
    model.model.embeddings.token_type_embeddings.load_state_dict(
        backbone.embeddings.token_type_embeddings.state_dict()
    )
    model.model.embeddings.LayerNorm.load_state_dict(backbone.embeddings.LayerNorm.state_dict())
    for ours, theirs in zip(model.model.layers, backbone.encoder.layer):
        ours.attention.query.load_state_dict(theirs.attention.self.query.state_dict())
        ours.attention.key.load_state_dict(theirs.attention.self.key.state_dict())
        ours.attention.value.load_state_dict(theirs.attention.self.value.state_dict())
        ours.attention.output.load_state_dict(theirs.attention.output.dense.state_dict())
        ours.attention.LayerNorm.load_state_dict(theirs.attention.output.LayerNorm.state_dict())
        ours.feed_forward.up.load_state_dict(theirs.intermediate.dense.state_dict())
        ours.feed_forward.down.load_state_dict(theirs.output.dense.state_dict())
        ours.feed_forward.LayerNorm.load_state_dict(theirs.output.LayerNorm.state_dict())

    if has_mlm_head:
        if style == "bert":
            transform = mlm.cls.predictions.transform
            dense, layer_norm = transform.dense, transform.LayerNorm
        else:
            dense, layer_norm = mlm.lm_head.dense, mlm.lm_head.layer_norm
        model.lm_head.dense.load_state_dict(dense.state_dict())
        model.lm_head.LayerNorm.load_state_dict(layer_norm.state_dict())
        decoder = mlm.get_output_embeddings()
        model.lm_head.decoder.bias.copy_(decoder.bias)
        model.lm_head.decoder.bias[model.config.placeholder_token_id] = decoder.bias.mean()  # the blank: see above
        if not model.config.tie_word_embeddings:
            model.lm_head.decoder.weight.copy_(decoder.weight)
    model.tie_weights()
