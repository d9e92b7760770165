"""The local Hub (tests/hub_server.py) against the real huggingface_hub and transformers clients.

Each client runs in a subprocess: huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE at import time.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from hub_server import hub_env, local_hub
from safetensors.torch import save_file


@pytest.fixture
def hub():
    with local_hub() as server:
        yield server
        assert server.unknown_routes == [], "the clients called routes the local hub does not serve"


@pytest.fixture
def env(hub, tmp_path):
    return {**hub_env(hub.url, tmp_path / "hf_home"), "WORK": str(tmp_path)}


def run_client(script: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"client failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def write_folder(root, files: dict) -> None:
    for path, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "wb") as f:
            f.write(data)


UPLOAD_AND_DOWNLOAD = r"""
import json, os
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
api = HfApi()
assert api.whoami()["name"] == "me"
first = api.create_repo("me/tiny", exist_ok=True)
again = api.create_repo("me/tiny", exist_ok=True)
assert first.repo_id == again.repo_id == "me/tiny", (first, again)
commit = api.upload_folder(repo_id="me/tiny", folder_path=os.path.join(os.environ["WORK"], "src"))
info = api.model_info("me/tiny", files_metadata=True)
assert info.sha == commit.oid
snapshot = snapshot_download("me/tiny")
out = {
    "siblings": {s.rfilename: s.size for s in info.siblings},
    "tree": sorted((f.path, type(f).__name__) for f in api.list_repo_tree("me/tiny", recursive=True)),
    "top": sorted(f.path for f in api.list_repo_tree("me/tiny")),
    "download": {p: open(hf_hub_download("me/tiny", p), "rb").read().hex() for p in ("hello.txt", "sub/weights.bin")},
    "snapshot": {
        os.path.relpath(os.path.join(d, n), snapshot): open(os.path.join(d, n), "rb").read().hex()
        for d, _, names in os.walk(snapshot) for n in names
    },
}
print(json.dumps(out))
"""


def test_upload_folder_then_download(hub, env, tmp_path):
    files = {"hello.txt": b"hello hub\n", "sub/weights.bin": bytes(range(256)) * 16}
    write_folder(tmp_path / "src", files)

    out = json.loads(run_client(UPLOAD_AND_DOWNLOAD, env).stdout)

    assert hub.files("me/tiny") == files
    assert out["siblings"] == {p: len(d) for p, d in files.items()}
    assert out["tree"] == [["hello.txt", "RepoFile"], ["sub", "RepoFolder"], ["sub/weights.bin", "RepoFile"]]
    assert out["top"] == ["hello.txt", "sub"]
    hexed = {p: d.hex() for p, d in files.items()}
    assert out["download"] == hexed
    assert out["snapshot"] == hexed


PUSH_BERT = r"""
import os, torch
from transformers import BertConfig, BertForMaskedLM
torch.manual_seed(0)
config = BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
model = BertForMaskedLM(config).eval()
model.push_to_hub("me/bert")
with torch.no_grad():
    torch.save(model(input_ids=torch.arange(1, 11)[None]).logits, os.path.join(os.environ["WORK"], "pushed.pt"))
"""

LOAD_BERT = r"""
import os, torch
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained("me/bert").eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.arange(1, 11)[None]).logits, os.path.join(os.environ["WORK"], "loaded.pt"))
"""


def test_transformers_push_to_hub_then_from_pretrained(hub, env, tmp_path):
    run_client(PUSH_BERT, env)
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.files("me/bert"))

    run_client(LOAD_BERT, env)

    pushed, loaded = torch.load(tmp_path / "pushed.pt"), torch.load(tmp_path / "loaded.pt")
    assert pushed.shape == (1, 10, 99)
    assert torch.equal(pushed, loaded)


CONFIGURATION_PY = """
from transformers import PretrainedConfig

class TinyConfig(PretrainedConfig):
    model_type = "tiny-custom"

    def __init__(self, width=3, **kwargs):
        self.width = width
        super().__init__(**kwargs)
"""

MODELING_PY = """
import torch
from transformers import PreTrainedModel
from .configuration_tiny import TinyConfig

class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, 2)
        self.post_init()
"""

LOAD_CUSTOM = r"""
import os, torch
from transformers import AutoModel
model = AutoModel.from_pretrained("me/custom", trust_remote_code=True)
print(type(model).__name__, model.config.width)
torch.save(model.proj.weight.detach(), os.path.join(os.environ["WORK"], "proj.pt"))
"""


def test_from_pretrained_with_remote_code(hub, env, tmp_path):
    weight = torch.arange(8.0).reshape(2, 4)
    save_file({"proj.weight": weight, "proj.bias": torch.zeros(2)}, tmp_path / "model.safetensors", {"format": "pt"})
    config = {
        "model_type": "tiny-custom",
        "width": 4,
        "architectures": ["TinyModel"],
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"},
    }
    hub.add_files(
        "me/custom",
        {
            "config.json": json.dumps(config),
            "configuration_tiny.py": CONFIGURATION_PY,
            "modeling_tiny.py": MODELING_PY,
            "model.safetensors": (tmp_path / "model.safetensors").read_bytes(),
        },
    )

    out = run_client(LOAD_CUSTOM, env).stdout.split()

    assert out == ["TinyModel", "4"]
    assert torch.equal(torch.load(tmp_path / "proj.pt"), weight)


UPLOAD = r"""
import os
from huggingface_hub import HfApi
HfApi().upload_folder(repo_id="me/tiny", folder_path=os.path.join(os.environ["WORK"], os.environ["FOLDER"]),
                      delete_patterns=["*.txt"])
"""


def test_failed_commit_leaves_the_repo_unchanged(hub, env, tmp_path):
    hub.create_repo("me/tiny")
    v1 = {"a.txt": b"one", "b.bin": b"\x00\x01"}
    write_folder(tmp_path / "v1", v1)
    write_folder(tmp_path / "v2", {"b.bin": b"\x02", "c.json": b"{}"})
    run_client(UPLOAD, {**env, "FOLDER": "v1"})
    assert hub.files("me/tiny") == v1

    hub.fail_commits = True
    failed = run_client(UPLOAD, {**env, "FOLDER": "v2"}, check=False)

    assert failed.returncode != 0
    assert "HfHubHTTPError" in failed.stderr and "500" in failed.stderr
    assert hub.files("me/tiny") == v1
    assert [r[2] for r in hub.requests if "/commit/" in r[1]] == [200, 500]

    hub.fail_commits = False
    run_client(UPLOAD, {**env, "FOLDER": "v2"})
    assert hub.files("me/tiny") == {"b.bin": b"\x02", "c.json": b"{}"}


MISSING = r"""
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
for repo, filename, revision in [("me/tiny", "missing.txt", None), ("me/nothing", "config.json", None),
                                 ("me/tiny", "a.txt", "0" * 40)]:
    try:
        hf_hub_download(repo, filename, revision=revision)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as e:
        print(type(e).__name__, isinstance(e, EntryNotFoundError))
"""


def test_missing_file_repo_and_revision(hub, env):
    hub.add_files("me/tiny", {"a.txt": "a"})

    out = run_client(MISSING, env).stdout.splitlines()

    assert out == ["RemoteEntryNotFoundError True", "RepositoryNotFoundError False", "RevisionNotFoundError False"]
