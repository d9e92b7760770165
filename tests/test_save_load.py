import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from modeling_deer import DeerConfig, DeerForConditionalGeneration, DeerGenerationConfig, DeerModel

from conftest import random_batch, tiny_model


def test_save_and_load_give_identical_generations(tmp_path):
    model = tiny_model(seed=7, max_insertions=3)
    with torch.no_grad():  # no parameter keeps its initial value, so a re-initialisation on load cannot hide
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.generation_config.max_iterations = 2
    source_ids, source_mask = random_batch(3, 10, seed=8)
    expected = model.generate(input_ids=source_ids, attention_mask=source_mask)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "generation_config.json", "modeling_deer.py",
            "configuration_deer.py", "generation_deer.py", "edit_ops.py"} <= files

    loaded = DeerForConditionalGeneration.from_pretrained(tmp_path)
    assert isinstance(loaded.generation_config, DeerGenerationConfig)
    assert loaded.generation_config.max_iterations == 2
    assert torch.equal(loaded.generate(input_ids=source_ids, attention_mask=source_mask), expected)
    assert loaded.lm_head.decoder.weight is loaded.model.embeddings.word_embeddings.weight
    for name, parameter in model.state_dict().items():
        assert torch.equal(parameter, loaded.state_dict()[name]), name


def test_unreadable_generation_config_is_an_error_and_a_missing_one_is_fine(tmp_path):
    import pytest

    model = tiny_model()
    model.generation_config.eos_penalty = 2.5
    model.save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # truncated: the tuned knobs must not silently become the defaults
    with pytest.raises(ValueError, match="generation_config.json cannot be read"):
        DeerForConditionalGeneration.from_pretrained(tmp_path)
    path.unlink()
    assert DeerForConditionalGeneration.from_pretrained(tmp_path).generation_config.eos_penalty == 0.0


def test_another_models_checkpoint_is_refused_with_the_way_to_convert_it(tmp_path, tiny_bert_path):
    import pytest

    with pytest.raises(ValueError, match="'bert' checkpoint, not a DEER one.*from_mlm"):
        DeerForConditionalGeneration.from_pretrained(tiny_bert_path)
    with pytest.raises(ValueError, match="from_mlm"):
        DeerConfig.from_pretrained(tiny_bert_path)


def test_auto_classes(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DeerConfig)
    assert type(AutoModelForSeq2SeqLM.from_pretrained(tmp_path)) is DeerForConditionalGeneration
    assert isinstance(AutoModel.from_config(model.config), DeerModel)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_deer.DeerConfig",
        "AutoModelForSeq2SeqLM": "modeling_deer.DeerForConditionalGeneration",
    }


def test_remote_code_loads_without_the_package(tmp_path):
    model = tiny_model(seed=9, max_insertions=3)
    source_ids, source_mask = random_batch(2, 9, seed=10)
    expected = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    torch.save({"input_ids": source_ids, "attention_mask": source_mask}, tmp_path / "inputs.pt")

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_deer"] = None  # the package cannot be imported here
        try:
            import modeling_deer
        except ImportError:
            pass
        else:
            raise SystemExit("modeling_deer was importable")
        import torch
        from transformers import AutoModelForSeq2SeqLM
        model = AutoModelForSeq2SeqLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        torch.save(model.generate(**inputs, max_iterations=2), {str(tmp_path / "generated.pt")!r})
        """
    )
    environment = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "generated.pt"), expected)
