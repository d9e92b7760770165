"""Sharing: model cards (metadata, model-index, the grid) and push_to_hub against a local Hub-compatible server, with
the real huggingface_hub and transformers clients: push, then load in a process that cannot import modeling_deer."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config
from hub_server import hub_env, local_hub
from huggingface_hub import ModelCard

from experiments.report import card_results
from modeling_deer import DeerForConditionalGeneration
from modeling_deer.model_card_deer import build_model_card


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_report(task="bible-de-en") -> dict:
    rows = []
    for run in ("deer", "deer_random"):
        for sparsity in (0.0, 0.5):
            for iterations in (0, 2):
                rows.append(
                    {
                        "system": "deer",
                        "run": run,
                        "sparsity": sparsity,
                        "iterations": iterations,
                        "bleu": 1.0 + iterations,
                        "chrf": 10.0,
                        "rougeL": 20.0,
                        "latency_ms_b1": 5.0,
                        "latency_ms_b32": 1.0,
                        "peak_rss_mb": 500.0,
                        "params_nonembedding": 1000,
                    }
                )
    rows.append(
        {
            "system": "ar",
            "run": "ar",
            "sparsity": 0.0,
            "iterations": None,
            "bleu": 4.0,
            "chrf": 12.0,
            "rougeL": 25.0,
            "latency_ms_b1": 50.0,
            "latency_ms_b32": 2.0,
            "peak_rss_mb": 450.0,
            "params_nonembedding": 2000,
        }
    )
    return {
        "task": task,
        "test_pairs": 190,
        "metrics": ["bleu", "chrf"],
        "repeats": 5,
        "hardware": {"cpu": "test CPU", "threads": 2},
        "training_steps": {"deer": 800, "ar": 800},
        "commands": {"benchmark": "python -m experiments.benchmark --task bible-de-en"},
        "rows": rows,
    }


def test_model_card_metadata_model_index_and_grid(tmp_path):
    model = DeerForConditionalGeneration(tiny_config(sparsity_levels=[0.0, 0.5]))
    card = build_model_card(
        model,
        model_name="me/deer-tiny",
        base_model="google-bert/bert-base-multilingual-cased",
        datasets=["bible-de-en"],
        language=["de", "en"],
        **card_results([fake_report()]),
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text2text-generation"
    assert {"deer", "non-autoregressive"} <= set(data.tags)
    assert data.base_model == "google-bert/bert-base-multilingual-cased"
    assert data.datasets == ["bible-de-en"] and data.language == ["de", "en"] and data.license == "apache-2.0"
    # model-index: the pretrained DEER cells only (2 levels x 2 iteration counts x 2 metrics), not AR or ablation.
    assert len(data.eval_results) == 8
    result = next(
        r for r in data.eval_results if r.metric_config == "iterations=2,sparsity=0.5" and r.metric_type == "bleu"
    )
    assert result.metric_value == 3.0 and result.task_type == "translation" and result.dataset_split == "test"
    assert "| AR (BERT2BERT, greedy) |" in loaded.text and "| DEER (random init) |" in loaded.text
    assert "10.0x" in loaded.text  # AR b1 / DEER b1 = 50 / 5
    assert "trust_remote_code=True" in loaded.text and "## Limitations" in loaded.text
    assert "prune_to(0.5)` removes half" in loaded.text
    # A model trained at full size only is not advertised as prunable.
    full_only = build_model_card(DeerForConditionalGeneration(tiny_config()), model_name="me/deer").text
    assert "trained at full size only" in full_only and "prune_to(0.5)` removes half" not in full_only
    assert "sparsity=0.5: its smallest level" in loaded.text and "sparsity=" not in full_only
    # The card says how the model decodes by default: its own generation config, not a typed choice.
    assert "the draft and 4 rounds of edits (blank penalty 0, deletion penalty 0, eos penalty 0)" in loaded.text
    model.generation_config = model.generation_config.updated(max_iterations=1, refinement="redraft")
    assert "the draft and 1 round of re-drafting (blank penalty 0, reveal threshold 0.9)" in str(
        build_model_card(model, model_name="me/deer")
    )


def test_model_card_without_results_has_no_model_index():
    card = build_model_card(DeerForConditionalGeneration(tiny_config()), model_name="me/deer")
    assert card.data.eval_results is None and "model-index" not in str(card)
    metrics = {"eval_bleu": 3.5, "eval_chrf": 20.0, "eval_loss": 1.0}
    card = build_model_card(
        DeerForConditionalGeneration(tiny_config()),
        model_name="me/deer",
        datasets=["bible-de-en"],
        trainer_metrics=metrics,
    )
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"bleu": 3.5, "chrf": 20.0}


# -- push_to_hub against the local Hub -------------------------------------------------------------------------------


def run_python(script: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )  # nothing may wait for an answer on stdin


@pytest.fixture(scope="module")
def hub():
    with local_hub() as server:
        yield server


@pytest.fixture()
def real_model_dir(tmp_path, tiny_bert_path):
    """The real tiny BERT converted to DEER with pruning scores (random) and its tokenizer, saved, plus the
    generations the pushed copy must reproduce."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model = DeerForConditionalGeneration.from_mlm(tiny_bert_path, sparsity_levels=[0.0, 0.5])
    with torch.no_grad():
        for scores in model.pruning_scores():
            scores.normal_()
        model.insertion_head.bias[3:] = -1e4  # untrained: at most two insertions per slot, so decoding is quick
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    inputs = tokenizer(["Im Anfang war das Wort.", "Und das Wort war bei Gott."], return_tensors="pt", padding=True)
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    return tmp_path


PUSH = """
import torch
from transformers import AutoTokenizer
from modeling_deer import DeerForConditionalGeneration
model = DeerForConditionalGeneration.from_pretrained({model!r}).eval()
{prepare}
inputs = torch.load({inputs!r})
before = model.generate(**inputs, max_iterations=2)
torch.save(before, {expected!r})
state = {{name: tensor.clone() for name, tensor in model.state_dict().items()}}
try:
    commit = model.push_to_hub({repo!r}, tokenizer=AutoTokenizer.from_pretrained({model!r}))
    print("pushed", commit.commit_url)
except OSError as error:
    print("push failed:", error)
    assert torch.equal(model.generate(**inputs, max_iterations=2), before)
    assert all(torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())
    print("model intact")
    raise SystemExit(3)
"""

LOAD_WITHOUT_PACKAGE = """
import importlib.abc, sys

class Hidden(importlib.abc.MetaPathFinder):  # neither the package nor a training-only dependency is installed here
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("modeling_deer", "rapidfuzz"):
            raise ModuleNotFoundError(f"No module named {{name!r}}")

sys.meta_path.insert(0, Hidden())
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
model = AutoModelForSeq2SeqLM.from_pretrained({repo!r}, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
tokenizer = AutoTokenizer.from_pretrained({repo!r}, trust_remote_code=True)
assert tokenizer("Im Anfang war das Wort.").input_ids == {source_ids!r}
torch.save(model.generate(**torch.load({inputs!r}), max_iterations=2), {generated!r})
print("heads", list(model.config.layer_num_heads or []), "params", sum(p.numel() for p in model.parameters()))
from transformers import pipeline
translate = pipeline(model={repo!r}, trust_remote_code=True)  # the task comes from the repo's config
assert type(translate).__name__ == "DeerText2TextPipeline", type(translate)
text = translate("Im Anfang war das Wort.", max_iterations=2)["generated_text"]
ids = model.generate(**tokenizer(["Im Anfang war das Wort."], return_tensors="pt"), max_iterations=2)
assert text == tokenizer.decode(ids[0], skip_special_tokens=True), text
print("pipeline ok")
"""

LOAD_WITH_PACKAGE = """
import torch
import modeling_deer
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
model = AutoModelForSeq2SeqLM.from_pretrained({repo!r})  # no remote code needed
assert type(model) is modeling_deer.DeerForConditionalGeneration
assert type(AutoTokenizer.from_pretrained({repo!r})).__name__ == "BertTokenizer"  # no flag, no question
assert torch.equal(model.generate(**torch.load({inputs!r}), max_iterations=2), torch.load({expected!r}))
print("package load ok")
"""


TRIM = "model.trim_vocabulary(range(1000, 9000))"


@pytest.mark.parametrize(
    "pruned, trimmed", [(False, False), (True, False), (True, True)], ids=["unpruned", "pruned", "pruned-trimmed"]
)
def test_push_then_load_without_the_package_gives_identical_generations(
    hub, real_model_dir, pruned, trimmed, tiny_bert_path
):
    from transformers import AutoTokenizer

    tmp = real_model_dir
    repo = f"me/deer-{'pruned' if pruned else 'full'}{'-trimmed' if trimmed else ''}"
    paths = {
        "model": str(tmp / "model"),
        "inputs": str(tmp / "inputs.pt"),
        "expected": str(tmp / "expected.pt"),
        "generated": str(tmp / "generated.pt"),
        "repo": repo,
    }
    env = hub_env(hub.url, tmp / "hf")
    prepare = "\n".join([TRIM] * trimmed + ["model.prune_to(0.5)"] * pruned)
    pushed = run_python(PUSH.format(prepare=prepare, **paths), env, REPOSITORY)
    assert pushed.returncode == 0, pushed.stderr[-3000:]

    files = hub.files(repo)
    for name in (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "configuration_deer.py",
        "modeling_deer.py",
        "generation_deer.py",
        "edit_ops.py",
        "pruning_deer.py",
        "pipeline_deer.py",
        "objective_deer.py",
        "outputs_deer.py",
        "vocabulary_deer.py",
        "hub_deer.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert name in files, name
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_deer.DeerForConditionalGeneration"
    assert (
        "non-autoregressive" in files["README.md"].decode()
        and "library_name: transformers" in files["README.md"].decode()
    )

    source_ids = AutoTokenizer.from_pretrained(tiny_bert_path)("Im Anfang war das Wort.").input_ids
    loaded = run_python(
        LOAD_WITHOUT_PACKAGE.format(source_ids=source_ids, **paths), hub_env(hub.url, tmp / "hf2"), tmp
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "Do you wish to run the custom code" not in loaded.stdout + loaded.stderr  # nothing asked on stdin
    assert torch.equal(torch.load(tmp / "generated.pt"), torch.load(tmp / "expected.pt"))
    reference = DeerForConditionalGeneration.from_pretrained(tmp / "model")
    if trimmed:
        exec(TRIM, {"model": reference})
        assert config["vocabulary_ids"] == reference.config.vocabulary_ids and len(config["vocabulary_ids"]) < 9000
    if pruned:
        reference.prune_to(0.5)
        assert config["pruned_sparsity"] == 0.5 and config["layer_num_heads"] == reference.config.layer_num_heads
        assert sum(config["layer_intermediate_sizes"]) < 2 * reference.config.intermediate_size
    else:
        assert config.get("pruned_sparsity", 0.0) == 0.0
    assert f"params {sum(p.numel() for p in reference.parameters())}" in loaded.stdout
    assert "pipeline ok" in loaded.stdout

    with_package = run_python(LOAD_WITH_PACKAGE.format(**paths), hub_env(hub.url, tmp / "hf3"), REPOSITORY)
    assert with_package.returncode == 0, with_package.stderr[-3000:]
    assert "Do you wish to run the custom code" not in with_package.stdout + with_package.stderr


def test_a_push_that_fails_midway_raises_clearly_and_leaves_the_model_intact(hub, real_model_dir):
    tmp = real_model_dir
    repo = "me/deer-failing"
    paths = {
        "model": str(tmp / "model"),
        "inputs": str(tmp / "inputs.pt"),
        "expected": str(tmp / "expected.pt"),
        "repo": repo,
    }
    hub.fail_commits = True
    try:
        result = run_python(PUSH.format(prepare="", **paths), hub_env(hub.url, tmp / "hf"), REPOSITORY)
    finally:
        hub.fail_commits = False
    assert result.returncode == 3, result.stderr[-3000:]
    assert "push_to_hub: uploading to 'me/deer-failing' failed" in result.stdout and "500" in result.stdout
    assert "model intact" in result.stdout
    assert "model.safetensors" not in hub.files(repo)  # nothing was committed
    # The saved model on disk is untouched too.
    assert DeerForConditionalGeneration.from_pretrained(tmp / "model") is not None


def test_training_script_pushes_model_tokenizer_and_card_with_eval_results(hub, tmp_path, tiny_bert_path):
    from test_training_scripts import VALIDATION_FILE, run_args

    args = run_args(
        tmp_path / "run",
        tiny_bert_path,
        "--do_train",
        "--do_eval",
        "--max_steps",
        "2",
        "--save_strategy",
        "no",
        "--validation_file",
        VALIDATION_FILE,
        "--max_eval_samples",
        "4",
        "--predict_with_generate",
        "--push_to_hub",
        "--hub_model_id",
        "me/deer-run",
        "--card_datasets",
        "bible-de-en",
        "--card_language",
        "de",
        "en",
    )
    script = f"from training.train import main\nmain({args!r})\n"
    result = run_python(script, hub_env(hub.url, tmp_path / "hf"), REPOSITORY)
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.files("me/deer-run")
    assert {"model.safetensors", "tokenizer.json", "modeling_deer.py", "README.md"} <= set(files)
    assert not any(name.startswith("checkpoint-") for name in files)
    card = files["README.md"].decode()
    assert "model-index" in card and "type: bleu" in card and "- de" in card
