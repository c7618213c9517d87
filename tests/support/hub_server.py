"""A local stand-in for the Hugging Face Hub, speaking its resolve protocol on 127.0.0.1.

It answers like the real Hub: ``HEAD /{repo}/resolve/{rev}/{file}`` → 302 to a CDN URL (here
``http://localhost:PORT/cdn/SHA``, another host name, so the token must not follow) with ``X-Repo-Commit``,
``X-Linked-Etag`` and ``X-Linked-Size``; the CDN honours ``Range`` with 206; errors carry ``X-Error-Code``
(401 RepoNotFound for a missing repo, 401 GatedRepo without a token, 404 EntryNotFound, 404
RevisionNotFound); a file in ``Repo.git_files`` is answered like a small file kept in git itself (200 with its
bytes, ``ETag`` = its git blob id, no sha256); ``/api/models/{repo}/revision/{rev}`` lists files and ``/api/models?search=`` finds repos.

Faults for tests: ``throttle_bps`` slows the CDN, ``drop_after`` closes the connection after that many
bytes (for the next ``drops`` GETs), ``wrong_sha`` advertises a wrong sha256, ``redirect_to`` replaces the
CDN URL in the resolve redirect (e.g. ``file:///…``). A hostile mirror is a ``Repo`` whose file names are
``../x`` or ``/tmp/x`` (listed and served as given) or whose ``revisions`` include ``..``. Every request is logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Repo:
    files: dict[str, Path]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    revisions: tuple[str, ...] = ()  # answered like main, besides main and the commit
    git_files: tuple[str, ...] = ()  # kept in git, not LFS: served directly, ETag = git blob id, no sha256


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    authorization: bool


@dataclass
class HubServer:
    repos: dict[str, Repo] = field(default_factory=dict)
    token: str = "hf_test_token_not_secret"
    throttle_bps: float | None = None
    drop_after: int | None = None
    drops: int = 0
    wrong_sha: bool = False
    redirect_to: str | None = None
    log: list[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sha: dict[str, tuple[str, Path]] = {}
        for repo in self.repos.values():
            for path in repo.files.values():
                self._sha[_sha256(path)] = ("", path)
        server = self

        class Handler(_Handler):
            hub = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def sha_of(self, path: Path) -> str:
        return next(sha for sha, (_, p) in self._sha.items() if p == path)

    def cdn_gets(self) -> list[Logged]:
        return [entry for entry in self.log if entry.method == "GET" and entry.path.startswith("/cdn/")]


_SHA_CACHE: dict[tuple[Path, int, float], str] = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(8 << 20):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _record(self) -> None:
        self.hub.log.append(Logged(self.command, self.path, self.headers.get("Range"), "Authorization" in self.headers))

    def _send(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        self._send(status, {"X-Error-Code": code, "X-Error-Message": code}, code.encode())

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._record()
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(part) for part in url.path.strip("/").split("/")]
        if parts[:1] == ["cdn"] and len(parts) == 2:
            return self._cdn(parts[1])
        if parts[:2] == ["api", "models"]:
            return self._api(parts[2:], urllib.parse.parse_qs(url.query))
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        self._send(404, body=b"not found")

    def _authorized(self, repo: Repo) -> bool:
        return not repo.gated or self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(401, "RepoNotFound")
        if not self._authorized(repo):
            return self._error(401, "GatedRepo")
        if revision not in ("main", repo.commit, *repo.revisions):
            return self._error(404, "RevisionNotFound")
        path = repo.files.get(filename)
        if path is None:
            return self._error(404, "EntryNotFound")
        if filename in repo.git_files:
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{git_blob_id(path)}"'}
            return self._serve(path, headers)
        sha = _sha256(path)
        advertised = ("f" * 64) if self.hub.wrong_sha else sha
        headers = {
            "X-Repo-Commit": repo.commit,
            "X-Linked-Etag": f'"{advertised}"',
            "X-Linked-Size": str(path.stat().st_size),
            "ETag": '"a1b2c3"',
            "Location": self.hub.redirect_to or f"http://localhost:{self.hub.port}/cdn/{sha}",
        }
        self._send(302, headers)

    def _cdn(self, sha: str) -> None:
        found = self.hub._sha.get(sha)
        if found is None:
            return self._send(404, body=b"no such object")
        self._serve(found[1])

    def _serve(self, path: Path, extra: dict[str, str] | None = None) -> None:
        size = path.stat().st_size
        start = 0
        status = 200
        requested = self.headers.get("Range")
        if requested and requested.startswith("bytes=") and requested.endswith("-"):
            start = int(requested[6:-1])
            if start >= size:
                return self._send(416, {"Content-Range": f"bytes */{size}"})
            status = 206
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        drop_after = None
        if self.hub.drop_after is not None and self.hub.drops > 0:
            self.hub.drops -= 1
            drop_after = self.hub.drop_after
        with open(path, "rb") as handle:
            if drop_after is None and self.hub.throttle_bps is None:
                self.connection.sendfile(handle, start, size - start)
                return
            handle.seek(start)
            sent = 0
            began = time.monotonic()
            while block := handle.read(256 << 10):
                if drop_after is not None and sent + len(block) > drop_after:
                    self.wfile.write(block[: max(0, drop_after - sent)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                try:
                    self.wfile.write(block)
                except OSError:
                    return
                sent += len(block)
                if self.hub.throttle_bps:
                    ahead = sent / self.hub.throttle_bps - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)

    def _api(self, parts: list[str], query: dict[str, list[str]]) -> None:
        if not parts:  # /api/models?search=
            term = (query.get("search") or [""])[0].lower()
            found = [{"id": repo_id} for repo_id in self.hub.repos if term in repo_id.lower()]
            return self._send(200, {"Content-Type": "application/json"}, json.dumps(found).encode())
        if len(parts) >= 4 and parts[2] == "revision":
            repo = self.hub.repos.get("/".join(parts[:2]))
            if repo is None:
                return self._error(401, "RepoNotFound")
            if not self._authorized(repo):
                return self._error(401, "GatedRepo")
            siblings = [
                {"rfilename": name, "size": path.stat().st_size, "lfs": {"sha256": _sha256(path),
                                                                          "size": path.stat().st_size}}
                for name, path in repo.files.items()
            ]  # fmt: skip
            body = json.dumps({"id": "/".join(parts[:2]), "sha": repo.commit, "siblings": siblings})
            return self._send(200, {"Content-Type": "application/json"}, body.encode())
        self._send(404, body=b"not found")


def git_blob_id(path: Path) -> str:
    """What git (and the Hub's ETag for a non-LFS file) names the file: sha1 of ``blob SIZE\\0`` + bytes."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def free_port() -> int:
    """A port nothing listens on (for connection-refused tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_file(directory: Path, name: str, size: int) -> Path:
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path
