"""A local, in-memory Hugging Face Hub for the tests (standard library only).

The real ``huggingface_hub`` / ``transformers`` clients talk to it over HTTP when they run with
``HF_ENDPOINT`` pointing at it; as those libraries read their settings at import time, run them in a
subprocess with the environment from :func:`hub_env`::

    with local_hub() as hub:
        subprocess.run([sys.executable, "-c", script], env=hub_env(hub.url, tmp_path / "hf"), check=True)
        assert hub.files("me/tiny")["config.json"] == ...

Routes (model repos ``namespace/name`` only; revision ``main`` or a commit sha, commits go to ``main``):

    GET       /api/whoami-v2                                 any bearer token is user "me"
    POST      /api/repos/create                              409 when the repo exists (exist_ok=True tolerates it)
    POST      /api/validate-yaml                             README.md metadata check: always valid
    GET       /api/models/{repo_id}[/revision/{rev}]         model info: sha, siblings (?blobs=1 adds sizes), config
    GET       /api/models/{repo_id}/tree/{rev}[/{path}]      tree listing, ?recursive=1, one page
    POST      /api/models/{repo_id}/paths-info/{rev}         info on the given paths
    POST      /api/models/{repo_id}/preupload/{rev}          every file is uploadMode "regular" (no LFS/Xet)
    POST      /api/models/{repo_id}/commit/{rev}             NDJSON header/file/deletedFile/deletedFolder;
                                                             HTTP 500 while ``hub.fail_commits`` is true
    HEAD|GET  /{repo_id}/resolve/{rev}/{path}                file content; X-Repo-Commit, quoted ETag
                                                             (git blob sha1), Content-Length, Range

Files that the Hub would store with LFS (weights suffixes, or >= 10 MiB) are described as LFS files:
``lfs`` entries in siblings/tree and ``X-Linked-Etag`` (sha256) / ``X-Linked-Size`` on resolve, as
the Hub does, while their content is still committed inline. Errors carry the ``X-Error-Code``
header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that the client maps to its
exception classes. Any other route answers 404 and is logged (``hub.unknown_routes``).
"""

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


logger = logging.getLogger(__name__)

LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".onnx",
    ".msgpack",
    ".npy",
    ".npz",
    ".pkl",
    ".gguf",
    ".zip",
    ".gz",
    ".tar",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
USER = "me"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE


@dataclass
class Commit:
    oid: str
    title: str
    date: str
    files: dict = field(default_factory=dict)  # path -> bytes


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.commit, self.extra = status, code, commit, extra


class LocalHub:
    """The server: ``start()``/``stop()`` or ``with LocalHub() as hub``; repos live in ``self.repos``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.repos: dict[str, list[Commit]] = {}  # repo_id -> commits, oldest first
        self.fail_commits = False  # while true, the commit endpoint answers HTTP 500
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.unknown_routes: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "LocalHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- repositories --------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Files of ``repo_id`` at ``revision`` (default: the latest commit) as ``{path: bytes}``."""
        return dict(self._commit(repo_id, revision).files)

    def create_repo(self, repo_id: str) -> bool:
        """Create an empty repo (one initial commit without files); False if it already exists."""
        with self._lock:
            if repo_id in self.repos:
                return False
            self.repos[repo_id] = [self._new_commit(None, "initial commit", {})]
            return True

    def add_files(self, repo_id: str, files: dict, message: str = "add files") -> str:
        """Commit ``{path: bytes | str}`` to ``main`` server-side (creating the repo); returns the sha."""
        self.create_repo(repo_id)
        encoded = {p: d.encode() if isinstance(d, str) else bytes(d) for p, d in files.items()}
        return self._apply(repo_id, message, lambda tree: tree.update(encoded))

    def _commit(self, repo_id: str, revision: str) -> Commit:
        commits = self.repos.get(repo_id)
        if commits is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        if revision == "main":
            return commits[-1]
        for commit in commits:
            if commit.oid == revision:
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(self, parent: str | None, title: str, files: dict) -> Commit:
        blobs = "".join(f"{p}\0{git_blob_oid(d)}\n" for p, d in sorted(files.items()))
        oid = hashlib.sha1(f"{parent}\n{title}\n{time.time_ns()}\n{blobs}".encode()).hexdigest()
        return Commit(oid, title, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), files)

    def _apply(self, repo_id: str, title: str, change, parent: str | None = None) -> str:
        with self._lock:
            head = self._commit(repo_id, "main")
            if parent is not None and not head.oid.startswith(parent):
                raise HubError(412, f"Parent commit {parent} is not the head of main ({head.oid})")
            tree = dict(head.files)
            change(tree)
            commit = self._new_commit(head.oid, title, tree)
            self.repos[repo_id].append(commit)
            return commit.oid


def _file_entry(path: str, data: bytes) -> dict:
    entry = {"type": "file", "path": path, "oid": git_blob_oid(data), "size": len(data)}
    if is_lfs(path, data):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def _folder_entry(path: str, files: dict) -> dict:
    listing = "".join(f"{p}\0{git_blob_oid(d)}\n" for p, d in sorted(files.items()) if p.startswith(path + "/"))
    return {"type": "directory", "path": path, "oid": hashlib.sha1(listing.encode()).hexdigest()}


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive bookkeeping

    ROUTES = [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", "model_info"),
        ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]

    def log_message(self, format, *args):  # route the default stderr access log to `logging`
        logger.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        method, split = self.command, urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        try:
            for route_method, pattern, name in self.ROUTES:
                match = re.fullmatch(pattern, split.path) if route_method == method else None
                if match:
                    # Segments are URL-quoted one by one (a revision or tree path may hold "%2F").
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    getattr(self, name)(**args)
                    break
            else:
                self.hub.unknown_routes.append(f"{method} {self.path}")
                logger.warning("local hub: no route for %s %s (answered 404)", method, self.path)
                raise HubError(404, f"local hub: no route for {method} {split.path}")
        except HubError as e:
            headers = {"X-Error-Message": str(e)}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._json({"error": str(e), **e.extra}, e.status, headers)
        except Exception as e:  # a bug in this server: tell the client and the log
            logger.exception("local hub: %s %s failed", method, self.path)
            self._json({"error": f"local hub bug: {e!r}"}, 500)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    # -- routes --------------------------------------------------------------------------------
    def whoami(self):
        self._json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": USER,
                "fullname": "Local Test User",
                "email": "me@localhost",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def create_repo(self):
        payload = json.loads(self.body or b"{}")
        if payload.get("type", "model") != "model":
            raise HubError(400, "local hub: only model repos are supported")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        if not self.hub.create_repo(repo_id):  # the client reads "url" from this 409 answer too
            raise HubError(409, "You already created this model repo", url=f"{self.hub.url}/{repo_id}")
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self):
        self._json({"errors": [], "warnings": []})

    def model_info(self, repo, rev="main"):
        commit = self.hub._commit(repo, rev)
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        for sibling in siblings if blobs else []:
            entry = _file_entry(sibling["rfilename"], commit.files[sibling["rfilename"]])
            sibling.update(size=entry["size"], blobId=entry["oid"])
            if "lfs" in entry:
                sibling["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"], "pointerSize": 134}
        info = {
            "_id": repo,
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": self.hub.repos[repo][0].date,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        with contextlib.suppress(KeyError, ValueError, AttributeError):
            config = json.loads(commit.files["config.json"])
            info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
        self._json(info)

    def tree(self, repo, rev, path=""):
        commit = self.hub._commit(repo, rev)
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound", commit.oid)
        entries = {}
        for file_path, data in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            # Every folder on the way down to the file (only the first one unless recursive).
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(folder, _folder_entry(folder, commit.files))
            if recursive or len(parts) == 1:
                entries[file_path] = _file_entry(file_path, data)
        self._json(list(entries.values()))

    def paths_info(self, repo, rev):
        commit = self.hub._commit(repo, rev)
        entries = []
        for path in parse_qs(self.body.decode()).get("paths", []):  # a form, as get_paths_info sends it
            if path in commit.files:
                entries.append(_file_entry(path, commit.files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                entries.append(_folder_entry(path.rstrip("/"), commit.files))
        self._json(entries)

    def preupload(self, repo, rev):
        commit = self.hub._commit(repo, rev)
        answer = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_oid(commit.files[f["path"]]) if f["path"] in commit.files else None,
            }
            for f in json.loads(self.body)["files"]
        ]
        self._json({"files": answer, "commitOid": commit.oid})

    def commit(self, repo, rev):
        self.hub._commit(repo, "main")  # 404 on a missing repo, like the Hub
        if rev != "main" or self.query.get("create_pr"):
            raise HubError(400, "local hub: commits go to 'main' only (no other branch, no pull request)")
        if self.hub.fail_commits:
            raise HubError(500, "local hub: commit failure simulated (hub.fail_commits is set)")
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        operations = [line for line in lines if line["key"] != "header"]

        def change(tree: dict) -> None:
            for op in operations:
                key, value = op["key"], op["value"]
                if key == "file":
                    content = value["content"]
                    base64_encoded = value.get("encoding") == "base64"
                    tree[value["path"]] = base64.b64decode(content) if base64_encoded else content.encode()
                elif key == "deletedFile":
                    if tree.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    for path in [p for p in tree if p.startswith(folder)]:
                        del tree[path]
                else:  # "lfsFile" cannot happen: preupload never asks for LFS
                    raise HubError(400, f"local hub: unsupported commit operation {key!r}")

        title = header.get("summary") or "commit"
        oid = self.hub._apply(repo, title, change, parent=header.get("parentCommit"))
        self._json(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self.hub.url}/{repo}/commit/{oid}",
                "commitMessage": title,
                "pullRequestUrl": None,
                "hookOutput": "",
            }
        )

    def resolve(self, repo, rev, path):
        commit = self.hub._commit(repo, rev)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.oid)
        data = commit.files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_oid(data)}"',
        }
        if is_lfs(path, data):
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": len(data)})
        status, body = 200, data
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and int(match[1]) < len(data):
            start, end = int(match[1]), int(match[2] or len(data) - 1)
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        self._send(status, body, headers)


@contextlib.contextmanager
def local_hub():
    """``with local_hub() as hub:`` a started :class:`LocalHub`, stopped on exit."""
    with LocalHub() as hub:
        yield hub


def hub_env(url: str, home) -> dict:
    """``os.environ`` for a client subprocess that talks to the hub at ``url`` with a fresh cache in ``home``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "TRANSFORMERS_CACHE",
            "HF_TOKEN_PATH",
            "HF_XET_CACHE",
            "HF_ASSETS_CACHE",
            "HF_MODULES_CACHE",
            "HUGGING_FACE_HUB_TOKEN",
        )
    }
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    env.update(
        HF_ENDPOINT=url,
        HF_HOME=str(home),
        HF_TOKEN="hf_local_test_token",
        HF_HUB_OFFLINE="0",
        TRANSFORMERS_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",  # no Xet: uploads are one plain commit, downloads plain GETs
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
    )
    return env
