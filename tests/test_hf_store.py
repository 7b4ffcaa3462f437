"""The Hugging Face store (zoo/registry/hf.py) with the real huggingface_hub client and no network:
reading works from a genuine HF cache layout offline; uploading is planned, card checked, and
pushed to a recording stand-in for HfApi (the one fake: the Hub cannot be reached here)."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, constants, scan_cache_dir

from zoo import spec as specs
from zoo.errors import NotFoundError, VersionConflictError, ZooError
from zoo.hashing import sha256_bytes, sha256_file
from zoo.package.files import package_files
from zoo.registry import hf
from zoo.registry.hf import HfStore, model_card, plan_upload, push

STANDARD = Path(__file__).resolve().parents[1] / "zoo" / "standard" / "packages"
N2V = STANDARD / "n2v-w2s-2d" / "0.1.0"
ORG = "bioimage-zoo-test"
NAME = "n2v-w2s-2d"
LFS_SUFFIXES = (".safetensors", ".onnx", ".npy", ".png")


def _copy_package(dst: Path, version: str) -> Path:
    shutil.copytree(N2V, dst)
    if version != "0.1.0":
        text = (dst / "zoo.yaml").read_text(encoding="utf-8")
        assert "version: 0.1.0\n" in text
        (dst / "zoo.yaml").write_text(text.replace("version: 0.1.0\n", f"version: {version}\n", 1), encoding="utf-8")
    return dst


def _cache_repo(cache: Path, repo_id: str, tag: str, package: Path) -> str:
    """Put a package into the HF cache as huggingface_hub lays it out: blobs named by etag (sha256
    for LFS files, git blob sha1 otherwise), snapshots/<commit>/<path> symlinks, refs/<tag>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{tag}".encode()).hexdigest()
    for rel in package_files(specs.load(package)):
        data = (package / rel).read_bytes()
        etag = (sha256_bytes(data) if rel.endswith(LFS_SUFFIXES)
                else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / tag).write_text(commit)   # no newline: huggingface_hub reads it verbatim
    return commit


@pytest.fixture
def hf_cache(tmp_path) -> tuple[Path, dict[str, Path]]:
    """An HF cache holding ORG/n2v-w2s-2d at v0.1.0 and v0.2.0 (and a repo of another org)."""
    cache = tmp_path / "hf-cache"
    packages = {v: _copy_package(tmp_path / "src" / v, v) for v in ("0.1.0", "0.2.0")}
    for version, folder in packages.items():
        _cache_repo(cache, f"{ORG}/{NAME}", f"v{version}", folder)
    _cache_repo(cache, f"someone-else/{NAME}", "v0.1.0", packages["0.1.0"])
    return cache, packages


@pytest.fixture
def hf_offline(monkeypatch):
    """HF_HUB_OFFLINE=1. huggingface_hub reads the variable once, at import, into
    constants.HF_HUB_OFFLINE, so the constant is patched too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ----------------------------------------------------------------------------- reading, offline
def test_cache_layout_is_genuine(hf_cache):
    cache, _ = hf_cache
    info = scan_cache_dir(cache)
    assert not info.warnings
    refs = {r.repo_id: sorted(ref for rev in r.revisions for ref in rev.refs) for r in info.repos}
    assert refs[f"{ORG}/{NAME}"] == ["v0.1.0", "v0.2.0"]


@pytest.mark.parametrize("how", ["env", "flag"])
def test_read_index_and_fetch_offline(hf_cache, tmp_path, monkeypatch, how):
    cache, packages = hf_cache
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        store = HfStore(ORG, cache_dir=cache)
    else:
        store = HfStore(ORG, cache_dir=cache, offline=True)
    assert store.offline and store.writable and store.url == f"hf://{ORG}"

    index = store.read_index()
    assert list(index) == [NAME]                       # the other org's repo is not listed
    assert sorted(index[NAME]) == ["0.1.0", "0.2.0"]
    for version, folder in packages.items():
        entry = index[NAME][version]
        assert entry["sha256"] == sha256_file(folder / "zoo.yaml")
        spec = specs.load(folder)
        assert entry["task"] == spec.task == "restoration/denoising"
        assert entry["architecture"] == spec.architecture_id
        assert entry["tags"] == spec.tags
        assert entry["description"] == spec.description.strip().split("\n")[0][:200]
    assert index[NAME]["0.1.0"]["sha256"] != index[NAME]["0.2.0"]["sha256"]

    for version, folder in packages.items():
        for rel in package_files(specs.load(folder)):
            dest = tmp_path / "out" / version / rel
            size = store.fetch(NAME, version, rel, dest)
            assert dest.read_bytes() == (folder / rel).read_bytes()
            assert size == dest.stat().st_size
            assert not dest.is_symlink()


@pytest.mark.parametrize("name, version, rel, says", [
    ("no-such-model", "0.1.0", "zoo.yaml", f"the model repo {ORG}/no-such-model"),
    (NAME, "9.9.9", "zoo.yaml", f"version v9.9.9 of {ORG}/{NAME}"),
    (NAME, "0.1.0", "weights/missing.bin", f"'weights/missing.bin' of {ORG}/{NAME}@v0.1.0"),
])
def test_fetch_missing_offline(hf_cache, hf_offline, tmp_path, name, version, rel, says):
    cache, _ = hf_cache
    dest = tmp_path / "out" / "file"
    dest.parent.mkdir()
    with pytest.raises(NotFoundError) as err:
        HfStore(ORG, cache_dir=cache).fetch(name, version, rel, dest)
    message = str(err.value)
    assert says in message
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
    assert not dest.exists() and not any(dest.parent.iterdir())


def test_read_index_offline_empty_cache(tmp_path, hf_offline):
    assert HfStore(ORG, cache_dir=tmp_path / "nothing").read_index() == {}


def test_fetch_refuses_paths_outside_the_package(hf_cache, hf_offline, tmp_path):
    cache, _ = hf_cache
    with pytest.raises(ZooError, match="inside the package"):
        HfStore(ORG, cache_dir=cache).fetch(NAME, "0.1.0", "../../etc/passwd", tmp_path / "x")


# ----------------------------------------------------------------------------- the model card
def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---\n", 4)])


def test_plan_upload_and_card():
    spec = specs.load(N2V)
    plan = plan_upload(spec, N2V, ORG)
    assert plan.repo_id == f"{ORG}/{NAME}" and plan.tag == "v0.1.0" and plan.ref == spec.ref
    assert "README.md" not in plan.files
    assert set(plan.files) | {"README.md"} == set(package_files(spec))
    assert all(path == N2V.resolve() / rel for rel, path in plan.files.items())
    assert plan.card == model_card(spec, N2V)

    meta = _front_matter(plan.card)
    assert meta["library_name"] == "bioimage-zoo"
    assert meta["license"] == "mit"
    assert meta["pipeline_tag"] == "image-to-image"
    assert {"bioimage-zoo", "restoration", "denoising", *spec.tags} == set(meta["tags"])
    assert "heldout_psnr_output" in meta["metrics"]
    assert plan.card.endswith((N2V / "README.md").read_text(encoding="utf-8"))

    card = ModelCard(plan.card)      # huggingface_hub's own parser, offline
    assert card.data.library_name == "bioimage-zoo" and card.data.license == "mit"
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["heldout_psnr_output"] == spec.training.metrics["heldout_psnr_output"]


def test_card_flattens_nested_metrics():
    folder = STANDARD / "stardist-dsb-he-2d" / "0.1.0"
    meta = _front_matter(model_card(specs.load(folder), folder))
    assert meta["pipeline_tag"] == "image-segmentation"
    assert "segmentation" in meta["tags"] and "instance" in meta["tags"]
    assert meta["metrics"] and len(meta["metrics"]) <= 40
    assert any("." in m for m in meta["metrics"])
    values = meta["model-index"][0]["results"][0]["metrics"]
    assert all(isinstance(m["value"], (int, float)) and not isinstance(m["value"], bool) for m in values)


@pytest.mark.parametrize("spdx, hub", [("MIT", "mit"), ("CC0-1.0", "cc0-1.0"), ("BSD-3-Clause", "bsd-3-clause"),
                                       ("Apache-2.0", "apache-2.0"), ("GPL-3.0-only", "gpl-3.0"),
                                       ("LicenseRef-internal", "other")])
def test_hf_license(spdx, hub):
    assert hf.hf_license(spdx) == hub


# ----------------------------------------------------------------------------- push
class RecordingApi:
    """Stands in for HfApi where the Hub would be written to: records the calls."""

    def __init__(self, tags=(), remote_yaml: Path | None = None):
        self.tags, self.remote_yaml, self.calls = list(tags), remote_yaml, []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def list_repo_refs(self, repo_id, **kw):
        self.calls.append(("list_repo_refs", repo_id, kw))
        return SimpleNamespace(branches=[], converts=[], tags=[SimpleNamespace(name=t) for t in self.tags])

    def hf_hub_download(self, repo_id, filename, **kw):
        self.calls.append(("hf_hub_download", repo_id, {"filename": filename, **kw}))
        return str(self.remote_yaml)

    def create_commit(self, repo_id, operations, **kw):
        ops = {op.path_in_repo: op.path_or_fileobj for op in operations}
        self.calls.append(("create_commit", repo_id, {"operations": ops, **kw}))
        return SimpleNamespace(oid="c0ffee" + "0" * 34)

    def create_tag(self, repo_id, **kw):
        self.calls.append(("create_tag", repo_id, kw))

    def names(self):
        return [c[0] for c in self.calls]


def test_push_records_one_commit_and_tag():
    spec = specs.load(N2V)
    plan = plan_upload(spec, N2V, ORG)
    api = RecordingApi()
    push(plan, api)
    assert api.names() == ["create_repo", "list_repo_refs", "create_commit", "create_tag"]
    (_, repo, kw), = [c for c in api.calls if c[0] == "create_repo"]
    assert repo == f"{ORG}/{NAME}" and kw["repo_type"] == "model" and kw["exist_ok"] is True
    (_, _, commit), = [c for c in api.calls if c[0] == "create_commit"]
    assert sorted(commit["operations"]) == sorted(package_files(spec))
    assert commit["operations"]["README.md"] == plan.card.encode("utf-8")
    assert commit["commit_message"] == f"bioimage-zoo: publish {spec.ref}"
    (_, _, tag), = [c for c in api.calls if c[0] == "create_tag"]
    assert tag["tag"] == "v0.1.0" and tag["revision"] == "c0ffee" + "0" * 34


def test_push_existing_tag(tmp_path):
    spec = specs.load(N2V)
    plan = plan_upload(spec, N2V, ORG)
    same = RecordingApi(tags=["v0.1.0"], remote_yaml=N2V / "zoo.yaml")
    push(plan, same)                                  # already there, identical: nothing to do
    assert "create_commit" not in same.names() and "create_tag" not in same.names()

    other = _copy_package(tmp_path / "other", "0.2.0") / "zoo.yaml"
    conflict = RecordingApi(tags=["v0.1.0"], remote_yaml=other)
    with pytest.raises(VersionConflictError, match="already published"):
        push(plan, conflict)
    assert "create_commit" not in conflict.names()


def test_store_publish(tmp_path):
    spec = specs.load(N2V)
    api = RecordingApi()
    assert HfStore(ORG, api=api).publish(N2V, spec, sha256_file(N2V / "zoo.yaml")) == spec.ref
    assert "create_tag" in api.names()
    with pytest.raises(ZooError, match="offline"):
        HfStore(ORG, api=RecordingApi(), offline=True).publish(N2V, spec, sha256_file(N2V / "zoo.yaml"))


def test_push_offline_real_client(hf_offline):
    plan = plan_upload(specs.load(N2V), N2V, ORG)
    with pytest.raises(ZooError, match="offline") as err:
        push(plan, HfApi())
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_a_registry_over_the_hub_cache_pulls_and_runs_offline(hf_cache, hf_offline, tmp_path):
    """The whole path a user takes with `zoo --offline pull hf://ORG/NAME@^0.1`: versions from the
    Hugging Face cache, files hash-checked into the zoo cache, the model reproduces its test tensors."""
    from zoo.model import Model
    from zoo.registry.remote import RemoteRegistry

    cache, packages = hf_cache
    registry = RemoteRegistry(HfStore(ORG, cache_dir=cache), cache=tmp_path / "zoo-cache")
    assert registry.offline and registry.resolve(f"{NAME}@latest") == (NAME, "0.2.0")
    spec, folder = registry.pull(f"{NAME}@^0.1")
    assert spec.ref == f"{NAME}@0.1.0" and folder.is_relative_to(tmp_path / "zoo-cache")
    Model(spec, folder, runtime="onnx", device="cpu").test()
    with pytest.raises(NotFoundError):
        registry.pull("no-such-model")
