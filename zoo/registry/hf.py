"""A package store on the Hugging Face Hub: ``hf://ORG``.

One model repo per package (``ORG/<name>``), one git tag per version (``v<version>``). The package
files sit at the repo root under their own relative paths; the repo's README.md is the model card
with Hugging Face front matter. Downloads go through the Hugging Face cache, so once a version has
been read online it stays readable offline (``HF_HUB_OFFLINE=1`` or ``HfStore(..., offline=True)``):
the cache keeps ``refs/<tag>`` -> commit and ``snapshots/<commit>/<file>``.

Every huggingface_hub error is turned into a :class:`~zoo.errors.ZooError` that says what was
missing and what to do.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub import errors as hf_errors

from .. import spec as specs
from ..errors import IntegrityError, NotFoundError, VersionConflictError, ZooError
from ..hashing import sha256_bytes, sha256_file
from ..package import files
from .refs import alias_of

log = logging.getLogger("zoo.registry")

LIBRARY = "bioimage-zoo"
CARD = "README.md"
_MAX_METRICS = 40

# SPDX id (lower-cased) -> Hugging Face licence id, where they differ; SPDX ids the Hub knows as
# they are are listed in _HF_LICENSES.
_HF_LICENSES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "bsl-1.0", "cc0-1.0",
    "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0",
    "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "agpl-3.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0",
    "mpl-2.0", "epl-1.0", "epl-2.0", "eupl-1.1", "eupl-1.2", "isc", "unlicense", "zlib", "wtfpl",
    "afl-3.0", "artistic-2.0", "ecl-2.0", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "odbl", "pddl",
}
_HF_LICENSE_ALIASES = {"gpl-2.0-only": "gpl-2.0", "gpl-2.0-or-later": "gpl-2.0", "gpl-3.0-only": "gpl-3.0",
                       "gpl-3.0-or-later": "gpl-3.0", "lgpl-2.1-only": "lgpl-2.1", "lgpl-2.1-or-later": "lgpl-2.1",
                       "lgpl-3.0-only": "lgpl-3.0", "lgpl-3.0-or-later": "lgpl-3.0", "agpl-3.0-only": "agpl-3.0",
                       "agpl-3.0-or-later": "agpl-3.0", "odbl-1.0": "odbl", "pddl-1.0": "pddl"}
_PIPELINE_TAGS = {"restoration": "image-to-image", "segmentation": "image-segmentation",
                  "classification": "image-classification", "detection": "object-detection"}


def tag_of(version: str) -> str:
    return f"v{version}"


# ----------------------------------------------------------------------------- errors
def _from_hub(e: Exception) -> bool:
    """Whether an exception comes from the Hub client or its HTTP stack (not a bug of ours)."""
    return isinstance(e, OSError) or type(e).__module__.partition(".")[0] in {
        "huggingface_hub", "httpx", "httpx2", "requests", "urllib3"}


@contextlib.contextmanager
def _translated(what: str):
    """Re-raise huggingface_hub errors met while doing ``what`` as zoo errors with a next step."""
    try:
        yield
    except ZooError:
        raise
    except hf_errors.LocalEntryNotFoundError as e:
        raise NotFoundError(f"{what}: not in the Hugging Face cache and the Hub cannot be reached; check the "
                            "connection (and that HF_HUB_OFFLINE is unset) to fill the cache") from e
    except hf_errors.RepositoryNotFoundError as e:
        raise NotFoundError(f"{what}: no such model repo on the Hub (or it is private or gated: log in "
                            "with `hf auth login`)") from e
    except hf_errors.RevisionNotFoundError as e:
        raise NotFoundError(f"{what}: no such tag on the Hub; see `zoo list` for the published versions") from e
    except hf_errors.EntryNotFoundError as e:
        raise NotFoundError(f"{what}: no such file in the repo at that tag; the upload is incomplete, "
                            "publish the version again") from e
    except hf_errors.OfflineModeIsEnabled as e:
        raise ZooError(f"{what}: offline (HF_HUB_OFFLINE is set), the Hub cannot be reached; "
                       "unset HF_HUB_OFFLINE to use it") from e
    except hf_errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise ZooError(f"{what}: not allowed by the Hub (HTTP {status}); log in with `hf auth login` "
                           "using a token that may write to the organisation") from e
        raise ZooError(f"{what}: the Hub answered: {str(e).splitlines()[0]}") from e
    except Exception as e:
        if not _from_hub(e):
            raise
        raise ZooError(f"{what}: cannot reach the Hub ({type(e).__name__}: {e}); check the connection, "
                       "or set HF_HUB_OFFLINE=1 to work from the cache") from e


# ----------------------------------------------------------------------------- the store
class HfStore:
    """Packages in the Hugging Face organisation ``org``; read-write."""

    writable = True

    def __init__(self, org: str, *, api: HfApi | None = None, cache_dir: str | Path | None = None,
                 offline: bool = False):
        self.url = org if org.startswith("hf://") else f"hf://{org}"
        self.org = self.url.removeprefix("hf://").strip("/")
        self.api = api if api is not None else HfApi()
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._offline = offline

    def __repr__(self) -> str:
        return f"HfStore({self.url})"

    reads_offline = True          # the Hugging Face cache alone can list versions

    @property
    def offline(self) -> bool:
        """True when the store may only use the local Hugging Face cache."""
        return self._offline or bool(constants.HF_HUB_OFFLINE)

    @offline.setter
    def offline(self, value: bool) -> None:
        self._offline = value

    @property
    def cache_root(self) -> Path:
        return self.cache_dir or Path(constants.HF_HUB_CACHE)

    def repo_id(self, name: str) -> str:
        return f"{self.org}/{name}"

    def _repo_cache(self, name: str) -> Path:
        """The cache folder of ORG/<name> (huggingface_hub's layout: models--ORG--NAME)."""
        return self.cache_root / ("models--" + self.repo_id(name).replace("/", "--"))

    # ------------------------------------------------------------------ reading
    def _tags(self) -> dict[str, list[str]]:
        """{name: [version tags]} of the org's model repos: from the Hub, or offline from the cache."""
        found: dict[str, list[str]] = {}
        if self.offline:
            prefix = f"models--{self.org}--"
            for folder in sorted(self.cache_root.glob(f"{prefix}*")):
                refs = folder / "refs"
                tags = sorted(p.name for p in refs.glob("v*") if p.is_file()) if refs.is_dir() else []
                found[folder.name[len(prefix):]] = tags
            return found
        with _translated(f"listing the model repos of {self.url}"):
            repos = [m.id for m in self.api.list_models(author=self.org)]
        for repo_id in repos:
            owner, _, name = repo_id.partition("/")
            if owner != self.org:
                continue
            with _translated(f"listing the tags of {repo_id}"):
                refs = self.api.list_repo_refs(repo_id, repo_type="model")
            found[name] = sorted(t.name for t in refs.tags if t.name.startswith("v"))
        return found

    def _download(self, name: str, tag: str, rel: str) -> Path:
        """Local path of ``rel`` of ORG/<name> at ``tag`` in the Hugging Face cache (downloaded if need be)."""
        if rel.startswith(("/", "\\")) or ".." in PurePosixPath(rel).parts:
            raise IntegrityError(f"refusing path '{rel}': package files must stay inside the package")
        what = f"{self.repo_id(name)}@{tag}: '{rel}'"
        try:
            with _translated(what):
                return Path(self.api.hf_hub_download(
                    self.repo_id(name), rel, repo_type="model", revision=tag, cache_dir=self.cache_dir,
                    local_files_only=self.offline))
        except NotFoundError as e:
            if self.offline and isinstance(e.__cause__, hf_errors.LocalEntryNotFoundError):
                raise NotFoundError(self._cache_miss(name, tag, rel)) from e.__cause__
            raise

    def _cache_miss(self, name: str, tag: str, rel: str) -> str:
        """Offline: say which of repo, tag or file the cache lacks."""
        folder, repo_id = self._repo_cache(name), self.repo_id(name)
        if not folder.is_dir():
            missing = f"the model repo {repo_id}"
        elif not (folder / "refs" / tag).is_file():
            missing = f"version {tag} of {repo_id}"
        else:
            missing = f"'{rel}' of {repo_id}@{tag}"
        return (f"{missing} is not in the Hugging Face cache ({self.cache_root}) and the store is offline: "
                "connect once (unset HF_HUB_OFFLINE, no offline=True) to fill the cache")

    def revalidate_index(self, cached: dict | None) -> tuple[dict, dict]:
        return self.read_index(), {}

    def read_index(self) -> dict:
        """{name: {version: {sha256 of zoo.yaml, task, architecture, tags, description}}} for every
        ``v<version>`` tag of every model repo of the organisation (offline: those in the cache)."""
        index: dict[str, dict] = {}
        for name, tags in self._tags().items():
            for tag in tags:
                version = tag[1:]
                try:
                    path = self._download(name, tag, specs.SPEC_FILE)
                    data = path.read_bytes()
                    spec = specs.load_bytes(data, source=f"{self.url}/{name}@{tag}/{specs.SPEC_FILE}")
                except (NotFoundError, IntegrityError, specs.SpecError) as e:
                    log.warning("skipping %s/%s@%s: %s", self.url, name, tag, e)
                    continue
                if (spec.name, spec.version) != (name, version):
                    log.warning("skipping %s/%s@%s: its zoo.yaml is %s", self.url, name, tag, spec.ref)
                    continue
                index.setdefault(name, {})[version] = {
                    "sha256": sha256_bytes(data), "task": spec.task, "architecture": spec.architecture_id,
                    "tags": spec.tags, "description": spec.description.strip().split("\n")[0][:200],
                }
        return index

    def fetch(self, name: str, version: str, rel: str, dest: Path) -> int:
        """Copy ``rel`` of ``name@version`` to ``dest`` atomically; return its size in bytes.
        The caller verifies the hash."""
        src = self._download(name, tag_of(version), rel)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest.stat().st_size

    # ------------------------------------------------------------------ writing
    def publish(self, src: Path, spec: specs.Spec, yaml_sha: str) -> str:
        """Upload a verified package folder as ORG/<name> tagged v<version>; return ``spec.ref``."""
        if self._offline:
            raise ZooError(f"cannot publish {spec.ref} to {self.url}: the store is offline")
        plan = plan_upload(spec, Path(src), self.org)
        if sha256_file(plan.files[specs.SPEC_FILE]) != yaml_sha:
            raise IntegrityError(f"{src / specs.SPEC_FILE} changed after it was verified; publish again")
        push(plan, self.api)
        return spec.ref


# ----------------------------------------------------------------------------- upload
@dataclass
class UploadPlan:
    """What one version's upload consists of: files at their paths in the repo, plus the card."""

    repo_id: str
    tag: str
    files: dict[str, Path]   # path in repo -> local file (README.md excluded: the card replaces it)
    card: str

    @property
    def ref(self) -> str:
        return f"{self.repo_id.split('/', 1)[1]}@{self.tag[1:]}"


def plan_upload(spec: specs.Spec, root: Path, org: str) -> UploadPlan:
    """The upload of the package at ``root`` to ``org/<name>`` under tag ``v<version>``."""
    chosen = {rel: files.safe_join(root, rel) for rel in files.package_files(spec) if rel != CARD}
    return UploadPlan(repo_id=f"{org}/{spec.name}", tag=tag_of(spec.version), files=chosen,
                      card=model_card(spec, root))


def push(plan: UploadPlan, api: HfApi) -> None:
    """Create the repo if needed, commit every file and the card in one commit, tag it.
    A tag that already exists is left alone when its zoo.yaml is the same, refused otherwise."""
    with _translated(f"publishing {plan.ref} to {plan.repo_id}"):
        api.create_repo(plan.repo_id, repo_type="model", exist_ok=True)
        refs = api.list_repo_refs(plan.repo_id, repo_type="model")
        alias = alias_of(plan.tag[1:], [t.name[1:] for t in refs.tags if t.name.startswith("v")])
        if alias not in (None, plan.tag[1:]):
            raise VersionConflictError(
                f"{plan.ref}: {plan.repo_id} holds tag v{alias}, the same version spelled otherwise (resolution "
                "cannot tell them apart); versions are immutable. Bump the version in zoo.yaml and publish again.")
        if any(t.name == plan.tag for t in refs.tags):
            remote = api.hf_hub_download(plan.repo_id, specs.SPEC_FILE, repo_type="model", revision=plan.tag)
            if sha256_file(remote) == sha256_file(plan.files[specs.SPEC_FILE]):
                log.info("%s is already published to %s", plan.ref, plan.repo_id)
                return
            raise VersionConflictError(
                f"{plan.ref} is already published to {plan.repo_id} (tag {plan.tag}) with different content; "
                "versions are immutable. Bump the version in zoo.yaml and publish again.")
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path))
                      for rel, path in plan.files.items()]
        operations.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=plan.card.encode("utf-8")))
        commit = api.create_commit(plan.repo_id, operations, repo_type="model",
                                   commit_message=f"{LIBRARY}: publish {plan.ref}")
        api.create_tag(plan.repo_id, tag=plan.tag, revision=commit.oid, repo_type="model",
                       tag_message=f"{LIBRARY} {plan.ref}")
    log.info("published %s to hf://%s (tag %s)", plan.ref, plan.repo_id, plan.tag)


# ----------------------------------------------------------------------------- model card
def hf_license(spdx: str) -> str:
    """The Hub's licence id for an SPDX id ('MIT' -> 'mit'); 'other' when the Hub has none."""
    key = spdx.strip().lower()
    key = _HF_LICENSE_ALIASES.get(key, key)
    return key if key in _HF_LICENSES else "other"


def _flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numeric metrics with nested names joined by '.', at most _MAX_METRICS of them."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return dict(list(flat.items())[:_MAX_METRICS])


def _front_matter(spec: specs.Spec) -> dict:
    family, _, subtask = spec.task.partition("/")
    licence = hf_license(spec.license)
    meta: dict = {"library_name": LIBRARY, "license": licence}
    if licence == "other":
        meta["license_name"] = re.sub(r"[^a-z0-9.]+", "-", spec.license.lower()).strip("-") or "unknown"
    meta["tags"] = list(dict.fromkeys([*spec.tags, LIBRARY, family, *([subtask] if subtask else [])]))
    pipeline = _PIPELINE_TAGS.get(family)
    if pipeline:
        meta["pipeline_tag"] = pipeline
    metrics = _flat_metrics(spec.training.metrics) if spec.training else {}
    if metrics:
        meta["metrics"] = list(metrics)
        meta["model-index"] = [{"name": spec.name, "results": [{
            "task": {"type": pipeline or family, "name": spec.task},
            "dataset": {"type": "custom", "name": "held-out evaluation data (see the model card)"},
            "metrics": [{"type": k, "name": k, "value": v} for k, v in metrics.items()],
        }]}]
    return meta


def _strip_front_matter(text: str) -> str:
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return text[end + 5:].lstrip("\n")
    return text


def model_card(spec: specs.Spec, root: Path) -> str:
    """The repo's README.md: Hugging Face front matter, then the package's own card."""
    doc = files.safe_join(root, spec.documentation) if spec.documentation else None
    if doc is not None and doc.is_file():
        body = doc.read_text(encoding="utf-8")
    else:
        from ..package.card import render

        body = render(spec)
    front = yaml.safe_dump(_front_matter(spec), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{_strip_front_matter(body)}"
