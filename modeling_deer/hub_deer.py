"""Saving with the tokenizer, and pushing to the Hub in one commit."""

import os
import tempfile

# Imported so that a model saved with its code (`auto_map`) carries the pipeline too: transformers copies the model's
# module and every module it imports, and config.json names this one under `custom_pipelines`.
from .pipeline_deer import DeerText2TextPipeline  # noqa: F401


class DeerHubMixin:
    """`save_pretrained(..., tokenizer=)` and `push_to_hub` for `DeerForConditionalGeneration`."""

    def save_pretrained(self, save_directory, *args, tokenizer=None, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus `tokenizer=`: save the tokenizer next to the model, so that the
        directory is all `AutoTokenizer` and `pipeline` need. With the code saved (`auto_map`), `AutoModel` is
        mapped too: to the backbone, as transformers maps a task model's base model."""
        if getattr(self, "_auto_class", None) is not None:
            mapped = getattr(self.config, "auto_map", None) or {}
            self.config.auto_map = {"AutoModel": f"modeling_deer.{type(self.model).__name__}", **mapped}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        tokenizer=None,
        model_card=None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ):
        """Upload everything a user needs in one commit: safetensors weights, `config.json` (with `auto_map`),
        `generation_config.json`, the modeling files for `trust_remote_code=True`, `tokenizer` (if given) and a
        model card (`model_card`, a `huggingface_hub.ModelCard`; default: `build_model_card` with no results).

        A pruned or vocabulary-trimmed model is pushed as it is and loads back with the same shapes. If the upload
        fails, an `OSError` says so; the model in memory is untouched. Returns the commit's `CommitInfo`.
        """
        from huggingface_hub import HfApi

        from .model_card_deer import build_model_card

        api = HfApi(token=token)
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        except Exception as error:
            raise OSError(
                f"push_to_hub: could not create or reach the repository {repo_id!r} at {api.endpoint}: {error}"
            ) from error
        card = model_card if model_card is not None else build_model_card(self, model_name=repo_id, tags=tags)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            card.save(os.path.join(folder, "README.md"))
            try:
                return api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    revision=revision,
                    create_pr=create_pr,
                    commit_message=commit_message or "Upload DEER model",
                    commit_description=commit_description,
                )
            except Exception as error:
                raise OSError(
                    f"push_to_hub: uploading to {repo_id!r} failed, nothing was committed there; the "
                    f"model here is unchanged (save_pretrained it, then retry): {error}"
                ) from error
