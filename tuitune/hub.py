"""The Hugging Face Hub's file protocol, spoken with the standard library.

tuitune needs four requests: HEAD on a file's ``resolve`` URL (commit, size and the LFS sha256), a ranged
GET of its bytes, a repo's file list (to resolve a quant pattern) and the model search (to suggest close
matches). ``huggingface_hub`` resumes only inside one call and does not check the sha256 it is given, so
the bytes are fetched here, where a partial file can outlive the process (see ``downloads``).

Nothing in this module runs at start-up or without an explicit pull. ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
and ``HF_TOKEN`` are read when a client is made, not at import. The token goes only to the Hub's own host
(never to the CDN a file redirects to) and is never printed, logged or stored by tuitune.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import urljoin

from tuitune.containment import check_repo_file, check_repo_id, check_revision
from tuitune.errors import TuituneError

DEFAULT_ENDPOINT = "https://huggingface.co"
USER_AGENT = "tuitune (+https://pypi.org/project/tuitune)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HubError(TuituneError):
    """The Hub (or the network to it) refused or failed a request."""


class HubOfflineError(HubError):
    """HF_HUB_OFFLINE is set and the file is not on disk."""


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_token() -> str | None:
    """``HF_TOKEN``, else the token `hf auth login` saved (HF_TOKEN_PATH, or HF_HOME/token)."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token and token.strip():
        return token.strip()
    if os.environ.get("HF_TOKEN_PATH"):
        path = Path(os.environ["HF_TOKEN_PATH"]).expanduser()
    else:
        hf_home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
        )
        path = Path(hf_home).expanduser() / "token"
    try:
        saved = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return saved or None


@dataclass(frozen=True)
class RemoteFile:
    """What a HEAD on a file's resolve URL tells: enough to download, resume and verify it."""

    repo: str
    filename: str
    revision: str
    commit: str | None
    size: int | None
    sha256: str | None  # the LFS object id; None for small files kept in git itself
    download_url: str


def check_web_url(url: str, what: str = "a request") -> str:
    """Refuse any URL that is not http(s): a mirror or redirect saying ``file:///…`` must not read local files."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise HubError(
            f"refusing {what} to a {scheme or 'scheme-less'} URL: tuitune fetches only http(s); "
            "check HF_ENDPOINT and any mirror or proxy in between"
        )
    return url


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    """Hand redirects back to the caller: HEAD must not turn into GET, and the token must not follow."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class HubClient:
    """Requests to one Hub endpoint. Thread-safe: every call opens its own connection."""

    def __init__(self, endpoint: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")
        self._token = token if token is not None else hub_token()
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_KeepRedirects())
        self._host = urllib.parse.urlsplit(self.endpoint).netloc

    def __repr__(self) -> str:  # never shows the token
        return f"HubClient({self.endpoint!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    # -- low level ---------------------------------------------------------------------------------
    def _headers(self, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if self._token and urllib.parse.urlsplit(url).netloc == self._host:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers | (extra or {})

    def open(self, method: str, url: str, headers: dict[str, str] | None = None) -> HTTPResponse:
        """One request, no redirects followed; HTTP errors come back as responses, network errors raise."""
        check_web_url(url)
        request = urllib.request.Request(url, method=method, headers=self._headers(url, headers))
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            return error  # type: ignore[return-value]  # an HTTPError is a response with a status
        except (urllib.error.URLError, OSError) as error:
            raise self.network_error(error) from None

    def network_error(self, error: BaseException) -> HubError:
        reason = getattr(error, "reason", error)
        if isinstance(reason, ConnectionRefusedError):
            what = "connection refused"
        elif isinstance(reason, (TimeoutError, socket.timeout)):
            what = f"no answer within {self.timeout:g} s"
        elif isinstance(reason, socket.gaierror):
            what = "host name not found"
        else:
            what = str(reason) or type(reason).__name__
        return HubError(
            f"cannot reach the Hub at {self.endpoint}: {what}; check the network (or HF_ENDPOINT) and try again"
        )

    def _json(self, url: str) -> object:
        response = self.open("GET", url)
        with response:
            if response.status != 200:
                raise HubError(f"the Hub answered {response.status} for {url}")
            try:
                return json.loads(response.read())
            except (ValueError, OSError) as error:
                raise HubError(f"the Hub sent an unreadable answer for {url} ({error})") from None

    # -- the protocol ------------------------------------------------------------------------------
    def resolve_url(self, repo: str, filename: str, revision: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/{urllib.parse.quote(filename)}"

    def file_metadata(self, repo: str, filename: str, revision: str = "main") -> RemoteFile:
        """HEAD the file's resolve URL. A redirect that carries ``X-Linked-*`` headers points at where an LFS
        file's bytes live (a CDN), and the metadata comes from the redirect itself; other redirects (a
        renamed repo) are followed. Only http(s) redirects are: a ``file://`` one would read local files."""
        check_repo_id(repo)
        check_repo_file(filename)
        check_revision(revision)
        url = self.resolve_url(repo, filename, revision)
        for _ in range(5):
            response = self.open("HEAD", url)
            response.close()
            headers = response.headers
            if 300 <= response.status < 400 and headers.get("Location"):
                location = check_web_url(urljoin(url, headers["Location"]), f"the redirect for {filename} in {repo}")
                if headers.get("X-Linked-Etag") or headers.get("X-Linked-Size"):
                    return self._remote_file(repo, filename, revision, headers, location)
                url = location
                continue
            if response.status == 200:
                return self._remote_file(repo, filename, revision, headers, url)
            raise self.http_error(response.status, headers, repo, filename, revision)
        raise HubError(f"too many redirects resolving {filename} in {repo}")

    @staticmethod
    def _remote_file(repo: str, filename: str, revision: str, headers: Message, url: str) -> RemoteFile:
        etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip()
        etag = etag.removeprefix("W/").strip('"').lower()
        size = headers.get("X-Linked-Size") or headers.get("Content-Length")
        return RemoteFile(
            repo=repo,
            filename=filename,
            revision=revision,
            commit=headers.get("X-Repo-Commit"),
            size=int(size) if size and size.isdigit() else None,
            sha256=etag if _SHA256.match(etag) else None,
            download_url=url,
        )

    def list_files(self, repo: str, revision: str = "main") -> dict[str, int | None]:
        """File name → size for every file in the repo at ``revision`` (the model info API).

        The names are the server's word: callers check the ones they use (``containment.check_repo_file``)."""
        check_repo_id(repo)
        check_revision(revision)
        url = f"{self.endpoint}/api/models/{repo}/revision/{urllib.parse.quote(revision, safe='')}?blobs=true"
        response = self.open("GET", url)
        with response:
            if response.status != 200:
                raise self.http_error(response.status, response.headers, repo, None, revision)
            try:
                info = json.loads(response.read())
            except (ValueError, OSError) as error:
                raise HubError(f"the Hub sent an unreadable file list for {repo} ({error})") from None
        files: dict[str, int | None] = {}
        for sibling in info.get("siblings", []) if isinstance(info, dict) else []:
            if isinstance(sibling, dict) and isinstance(sibling.get("rfilename"), str):
                size = (sibling.get("lfs") or {}).get("size", sibling.get("size"))
                files[sibling["rfilename"]] = size if isinstance(size, int) else None
        return files

    def search_models(self, query: str, limit: int = 5) -> list[str]:
        """Model ids the Hub's search finds for ``query`` (best effort: an empty list on any failure)."""
        url = f"{self.endpoint}/api/models?search={urllib.parse.quote(query)}&limit={limit}"
        try:
            found = self._json(url)
        except HubError:
            return []
        if not isinstance(found, list):
            return []
        return [item.get("id") or item.get("modelId") for item in found if isinstance(item, dict)][:limit]

    # -- errors ------------------------------------------------------------------------------------
    def http_error(
        self, status: int, headers: Message | None, repo: str, filename: str | None, revision: str
    ) -> HubError:
        """One message per failure, saying what to do. The Hub answers 401 for a missing repo too."""
        code = headers.get("X-Error-Code", "") if headers else ""
        page = f"{self.endpoint}/{repo}"
        what = f"{filename} in {repo}" if filename else repo
        if code == "GatedRepo" or status == 403:
            login = (
                "your HF_TOKEN's account has not been granted access yet"
                if self._token
                else "then set HF_TOKEN (or run `hf auth login`)"
            )
            return HubError(f"{repo} is gated: accept its license at {page} while logged in; {login}")
        if code == "RevisionNotFound":
            return HubError(f"revision '{revision}' does not exist in {repo}; check --revision (or use main)")
        if code == "EntryNotFound" or (status == 404 and filename and code != "RepoNotFound"):
            close = self._close_files(repo, filename, revision)
            return HubError(f"{filename} is not in {repo} (revision {revision}){close}")
        if code == "RepoNotFound" or status in (401, 404):
            private = "" if self._token else " (if it is private, set HF_TOKEN)"
            return HubError(f"repository {repo} not found on {self.endpoint}{private}{self._close_repos(repo)}")
        if status == 429:
            return HubError(f"the Hub is rate-limiting requests for {what}; wait a minute and pull again")
        if status >= 500:
            return HubError(f"the Hub failed ({status}) for {what}; try again later")
        return HubError(f"the Hub answered {status} for {what}")

    def _close_files(self, repo: str, filename: str, revision: str) -> str:
        import difflib

        try:
            names = [name for name in self.list_files(repo, revision) if name.endswith(".gguf")]
        except HubError:
            return ""
        close = difflib.get_close_matches(filename, names, n=4, cutoff=0.4) or names[:4]
        return f"; files there: {', '.join(close)}" if close else "; it has no .gguf files"

    def _close_repos(self, repo: str) -> str:
        name = repo.rsplit("/", 1)[-1]
        found = [item for item in self.search_models(name) if item and item != repo]
        return f"; similar repositories: {', '.join(found)}" if found else ""
