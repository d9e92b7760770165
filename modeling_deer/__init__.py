"""modeling_deer: DEER (Liang et al., ACL 2023) for Hugging Face transformers.

Importing the package registers DEER with the Auto classes:
`AutoConfig` -> DeerConfig, `AutoModel` -> DeerModel, `AutoModelForSeq2SeqLM` -> DeerForConditionalGeneration.
Saved models also carry their modeling files, so they load with `trust_remote_code=True` without the package.
It also registers the `deer-text2text` pipeline (pipeline_deer.py).
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_deer import DeerConfig
from .generation_deer import DeerGenerateOutput, DeerGenerationConfig
from .modeling_deer import DeerForConditionalGeneration, DeerModel, DeerPreTrainedModel
from .outputs_deer import DeerEncoderOutput, DeerSeq2SeqLMOutput
from .pipeline_deer import TASK as PIPELINE_TASK
from .pipeline_deer import DeerText2TextPipeline


AutoConfig.register(DeerConfig.model_type, DeerConfig, exist_ok=True)
AutoModel.register(DeerConfig, DeerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(DeerConfig, DeerForConditionalGeneration, exist_ok=True)
# save_pretrained writes `auto_map` into config.json and copies these modules next to the weights.
DeerConfig.register_for_auto_class()
DeerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
# pipeline("deer-text2text", model=...): text in, text out (saved models also list it as a custom pipeline).
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=DeerText2TextPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
)

__version__ = "0.1.0"

__all__ = [
    "DeerConfig",
    "DeerEncoderOutput",
    "DeerForConditionalGeneration",
    "DeerGenerateOutput",
    "DeerGenerationConfig",
    "DeerModel",
    "DeerPreTrainedModel",
    "DeerSeq2SeqLMOutput",
    "DeerText2TextPipeline",
]
