"""A transformers pipeline for DEER: text in, text out, batched, with DEER's knobs per call.

    from transformers import pipeline
    translate = pipeline("deer-text2text", model="checkpoints/bible-de-en/deer", trust_remote_code=True)
    translate(["Im Anfang war das Wort."], max_iterations=2, sparsity=0.5, max_new_tokens=64, batch_size=32)
    # [{'generated_text': 'in beginning was the word.'}]

transformers 5 has no text2text-generation task, and text-generation expects a decoder-only model, so DEER brings
its own. Saved DEER models list it in config.json (`custom_pipelines`) and carry this file, so a directory or a Hub
repo opens with `trust_remote_code=True` (the task name may then be left out), with or without the package. With
the package imported, a loaded model needs nothing more: `pipeline("deer-text2text", model=model,
tokenizer=tokenizer)`.
"""

from transformers import Pipeline

from .configuration_deer import PIPELINE_TASK as TASK
from .generation_deer import DeerGenerationConfig


# What generate() takes per call through the pipeline: its decoding options but the output's form (the pipeline
# returns text), and the call's pruning level.
GENERATE_OPTIONS = (
    *(name for name in DeerGenerationConfig.OPTIONS if name not in ("return_dict_in_generate", "output_history")),
    "sparsity",
)


class DeerText2TextPipeline(Pipeline):
    """Texts (a string or a list of strings) -> `[{"generated_text": ...}]`, one dict per text, in order. Sources are
    truncated to the model's position table; a literal "[SEP]" in a text is text, not a control token."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(self, **kwargs):
        unknown = sorted(key for key in kwargs if key not in GENERATE_OPTIONS)
        if unknown:
            raise ValueError(
                f"the {TASK} pipeline got unknown options {unknown}; it takes {GENERATE_OPTIONS} and batch_size."
            )
        return {}, {key: value for key, value in kwargs.items() if value is not None}, {}

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, (list, tuple)) and not inputs:
            raise ValueError(f"the {TASK} pipeline got an empty list: give it at least one text.")
        return super().__call__(inputs, *args, **kwargs)

    def preprocess(self, text):
        if not isinstance(text, str):
            raise TypeError(f"the {TASK} pipeline takes a string or a list of strings, got {type(text).__name__}.")
        return self.tokenizer(
            text,
            return_tensors="pt",
            truncation=True,
            max_length=self.model.config.max_sequence_length,
            split_special_tokens=True,
        )

    def _forward(self, inputs, **generate_options):
        return {
            "output_ids": self.model.generate(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **generate_options
            )
        }

    def postprocess(self, outputs):
        return {"generated_text": self.tokenizer.decode(outputs["output_ids"][0], skip_special_tokens=True)}
