"""A read-only store on any static web server that serves the registry layout:

    <root>/index.json
    <root>/packages/<name>/<version>/<file>

Downloads resume with HTTP ranges after a dropped connection (the partial bytes live outside
the cache and are hash-checked when complete); the index is fetched conditionally, by its content
hash where the server gives one (``ETag`` / ``If-None-Match``) and by its date otherwise
(``If-Modified-Since``), so an unchanged index moves no bytes.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InputError, NotFoundError, ZooError
from .local import checked_index

log = logging.getLogger("zoo.registry")

TIMEOUT = 30.0
ATTEMPTS = 4
CHUNK = 1 << 16
VALIDATORS = {"etag": "If-None-Match", "last_modified": "If-Modified-Since"}   # what was stored -> asked with
ANSWERED = {"etag": "ETag", "last_modified": "Last-Modified"}


class HttpStore:
    writable = False

    def __init__(self, url: str, timeout: float = TIMEOUT, attempts: int = ATTEMPTS):
        self.url = url.rstrip("/")
        self.timeout, self.attempts = timeout, attempts
        self.requests = 0            # HTTP requests made (for the record: second pulls make one)
        self.bytes = 0               # body bytes received

    def __repr__(self) -> str:
        return f"HttpStore({self.url})"

    def _open(self, url: str, headers: dict | None = None):
        self.requests += 1
        request = urllib.request.Request(url, headers={"User-Agent": "bioimage-zoo", **(headers or {})})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return e
            if e.code in (403, 404, 410):
                raise NotFoundError(f"{url}: not found on the server (HTTP {e.code}); check the registry URL "
                                    "(it must be the folder holding index.json)") from None
            raise ZooError(f"{url}: the server answered HTTP {e.code} ({e.reason}); try again later") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise ZooError(f"{url}: cannot reach the server ({reason}); check the URL and the network, "
                           "or use --offline to work from the cache") from None

    writable = False
    reads_offline = False

    def read_index(self) -> dict:
        return self.revalidate_index(None)[0]

    def revalidate_index(self, cached: dict | None) -> tuple[dict, dict]:
        """(index, validators) of ``<root>/index.json``; with ``cached`` (a previous answer with its
        validators: the server's ETag and Last-Modified) an unchanged index is not downloaded again."""
        validators = {k: cached[k] for k in VALIDATORS if cached and cached.get(k)}
        headers = {VALIDATORS[k]: v for k, v in validators.items()}
        url = f"{self.url}/index.json"
        with self._open(url, headers) as response:
            if validators and (getattr(response, "code", None) == 304 or getattr(response, "status", None) == 304):
                return cached["index"], validators
            data = response.read()
            answered = {k: response.headers.get(header) for k, header in ANSWERED.items()}
        self.bytes += len(data)
        try:
            index = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ZooError(f"{url} is not a registry index (invalid JSON: {e})") from None
        return checked_index(index, url, "tell the registry's maintainers"), {k: v for k, v in answered.items() if v}

    def fetch(self, name: str, version: str, rel: str, dest: Path) -> int:
        """Download one package file to ``dest`` (see :meth:`fetch_url`); returns the bytes received."""
        return self.fetch_url(f"{self.url}/packages/{name}/{version}/{rel}", dest)

    def publish(self, src: Path, spec, yaml_sha: str) -> str:
        raise InputError(f"{self.url} is read-only (a web server); push to a folder or hf://ORG instead")

    def fetch_url(self, url: str, dest: Path) -> int:
        """Download ``url`` to ``dest``, resuming from ``dest`` + ``.part`` (left by an interrupted
        attempt or an earlier run); returns the bytes received."""
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        for attempt in range(1, self.attempts + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self._open(url, headers) as response:
                    status = getattr(response, "status", 200)
                    if have and status != 206:        # the server ignores ranges: start again
                        have = 0
                    with open(part, "ab" if have else "wb") as out:
                        while chunk := response.read(CHUNK):
                            out.write(chunk)
                            received += len(chunk)
                            self.bytes += len(chunk)
                expected = response.headers.get("Content-Length")
                if status == 206:
                    total = response.headers.get("Content-Range", "").rpartition("/")[2]
                    expected = total if total.isdigit() else None
                size = part.stat().st_size
                if expected is not None and size != int(expected):
                    raise http.client.IncompleteRead(b"", int(expected) - size)
                os.replace(part, dest)
                return received
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                log.warning("%s: download interrupted (%s); resuming (attempt %d of %d)", url,
                            type(e).__name__, attempt, self.attempts)
            except ZooError as e:
                if "cannot reach" not in str(e) or attempt == self.attempts:
                    raise
        raise ZooError(f"{url}: the download was interrupted {self.attempts} times; run the same command again "
                       "to resume it (the bytes received so far are kept)")
