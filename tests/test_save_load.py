import json
import os
import subprocess
import sys
import textwrap

import torch
from conftest import random_batch, tiny_model
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from modeling_deer import DeerConfig, DeerForConditionalGeneration, DeerGenerationConfig, DeerModel


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
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "modeling_deer.py",
        "configuration_deer.py",
        "generation_deer.py",
        "edit_ops.py",
    } <= files

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
        "AutoModel": "modeling_deer.DeerModel",
        "AutoModelForSeq2SeqLM": "modeling_deer.DeerForConditionalGeneration",
    }


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "checkpoints", "bible-de-en", "deer")


def generate_with_the_package_hidden(tmp_path, model_dir, inputs: dict, auto_class="AutoModelForSeq2SeqLM"):
    """`model_dir`'s generation at 2 rounds (with `auto_class="AutoModel"`: the backbone's encoding of the source),
    loaded with `trust_remote_code=True` in a process where neither this package nor a training-only dependency can
    be imported. The loaded config's `to_dict()` is written to tmp_path/loaded_config.json."""
    torch.save(inputs, tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Hidden(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("modeling_deer", "rapidfuzz"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")

        sys.meta_path.insert(0, Hidden())
        try:
            import modeling_deer
        except ImportError:
            pass
        else:
            raise SystemExit("modeling_deer was importable")
        import torch
        from transformers import {auto_class} as Auto
        model = Auto.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        import json
        with open({str(tmp_path / "loaded_config.json")!r}, "w") as handle:
            json.dump(model.config.to_dict(), handle)
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            if {auto_class!r} == "AutoModel":
                output = model.encode(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
            else:
                output = model.generate(**inputs, max_iterations=2)
        torch.save(output, {str(tmp_path / "generated.pt")!r})
        """
    )
    environment = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "generated.pt")


def test_remote_code_loads_without_the_package(tmp_path):
    model = tiny_model(seed=9, max_insertions=3)
    source_ids, source_mask = random_batch(2, 9, seed=10)
    expected = model.generate(input_ids=source_ids, attention_mask=source_mask, max_iterations=2)
    model.save_pretrained(tmp_path / "model")
    inputs = {"input_ids": source_ids, "attention_mask": source_mask}
    assert torch.equal(generate_with_the_package_hidden(tmp_path, tmp_path / "model", inputs), expected)
    # One config.json loads the same with and without the package (custom_pipelines included: it is in what both save).
    with_package = DeerForConditionalGeneration.from_pretrained(tmp_path / "model").config.to_dict()
    with_package = json.loads(json.dumps(with_package))
    assert json.loads((tmp_path / "loaded_config.json").read_text()) == with_package


def test_automodel_with_remote_code_loads_the_backbone_without_the_package(tmp_path):
    """config.json's auto_map names the backbone for AutoModel too (DeerModel: the encoder a feature extractor
    wants), so that `AutoModel.from_pretrained(..., trust_remote_code=True)` works where the package is not."""
    model = tiny_model(seed=9).eval()
    model.save_pretrained(tmp_path / "model")
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_deer.DeerModel"
    source_ids, source_mask = random_batch(2, 9, seed=10)
    with torch.no_grad():
        expected = model.model.encode(source_ids, source_mask.bool()).last_hidden_state
    inputs = {"input_ids": source_ids, "attention_mask": source_mask}
    hidden = generate_with_the_package_hidden(tmp_path, tmp_path / "model", inputs, auto_class="AutoModel")
    assert torch.allclose(hidden, expected, atol=1e-6)


def test_the_shipped_checkpoint_links_the_package_code_and_loads_both_ways(tmp_path):
    """The shipped checkpoint holds no second copy of the package: its modeling files are links to modeling_deer/
    (one for each module a saved model carries). It loads with the package, and with `trust_remote_code=True` and
    the package hidden, to the same generations."""
    package = os.path.join(REPO, "modeling_deer")
    shipped = sorted(name for name in os.listdir(SHIPPED) if name.endswith(".py"))
    assert set(shipped) == {name for name in os.listdir(package) if name.endswith(".py")} - {"__init__.py"}
    for name in shipped:
        path = os.path.join(SHIPPED, name)
        assert os.path.islink(path), f"{name} is a copy: ship the checkpoint again (training's ship command)"
        assert os.path.samefile(path, os.path.join(package, name))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    batch = tokenizer(
        ["Im Anfang war das Wort.", "Und das Licht scheint in der Finsternis."], return_tensors="pt", padding=True
    )
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    expected = DeerForConditionalGeneration.from_pretrained(SHIPPED).eval().generate(**inputs, max_iterations=2)
    assert expected.shape[1] > 4
    assert torch.equal(generate_with_the_package_hidden(tmp_path, SHIPPED, inputs), expected)


def test_the_pipeline_from_a_local_dir_and_from_remote_code(tmp_path, tiny_bert_path):
    import pytest
    from transformers import AutoTokenizer, pipeline

    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path, sparsity_levels=[0.0, 0.5], max_insertions=4)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    model.save_pretrained(tmp_path / "model", tokenizer=tokenizer)  # the tokenizer travels with the model
    assert (tmp_path / "model" / "tokenizer.json").exists()
    texts = ["Im Anfang war das Wort.", "Und das Wort war bei Gott.", "Ja."]
    # With the package imported, the pipeline is registered: a directory (or a Hub id) or a loaded model opens
    # without trust_remote_code. A saved model still names its pipeline in config.json, for remote code (below).
    translate = pipeline(
        "deer-text2text", model=DeerForConditionalGeneration.from_pretrained(tmp_path / "model"), tokenizer=tokenizer
    )
    assert type(pipeline("deer-text2text", model=str(tmp_path / "model"))).__name__ == "DeerText2TextPipeline"
    assert type(pipeline("deer-text2text", model=str(tmp_path / "model"), trust_remote_code=True)).__name__ == (
        "DeerText2TextPipeline"
    )
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["custom_pipelines"]["deer-text2text"]["impl"] == "pipeline_deer.DeerText2TextPipeline"
    with pytest.raises(ValueError, match="empty list"):
        translate([])
    assert translate(["", "Ja."], max_iterations=1)[0] == {"generated_text": ""}
    outputs = translate(texts, max_iterations=1, sparsity=0.5, max_new_tokens=6, batch_size=2)
    assert [list(row) for row in outputs] == [["generated_text"]] * 3
    loaded = DeerForConditionalGeneration.from_pretrained(tmp_path / "model")
    for text, row in zip(texts, outputs):  # batched = one at a time, and the per-call options hold
        ids = loaded.generate(
            **tokenizer([text], return_tensors="pt"), max_iterations=1, sparsity=0.5, max_new_tokens=6
        )
        assert row["generated_text"] == tokenizer.decode(ids[0], skip_special_tokens=True)
        assert len(tokenizer(row["generated_text"]).input_ids) <= 8
    assert translate("Ja.", max_iterations=0) == translate(["Ja."], max_iterations=0)[0]  # one text: one dict
    with pytest.raises(ValueError, match="unknown options"):
        translate(texts, num_beams=4)

    script = textwrap.dedent(
        f"""
        import sys, json
        sys.modules["modeling_deer"] = None  # the package cannot be imported here
        from transformers import pipeline
        translate = pipeline(model={str(tmp_path / "model")!r}, trust_remote_code=True)
        assert type(translate).__name__ == "DeerText2TextPipeline", type(translate)
        print(json.dumps(translate({texts!r}, max_iterations=1, sparsity=0.5, max_new_tokens=6)))
        """
    )
    environment = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == outputs
