"""The LAVA server's REST API (v0.2), as much of it as kbisect uses: submit a job, read its state,
its test cases and its log, cancel it. The standard library's urllib, authenticated by the user's
token (`Authorization: Token T`). Whatever goes wrong talking to the server is InfraError.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kbisect.config.model import LavaOptions
from kbisect.errors import InfraError

TOKEN_ENV = "KBISECT_LAVA_TOKEN"  # noqa: S105 (a variable's name)
_HTTP_SECONDS = 30.0


class NotFound(InfraError):
    """The server has no such thing (HTTP 404): a job that never ran has no log."""


@dataclass(frozen=True)
class LavaServer:
    """One LAVA server and the token kbisect talks to it with."""

    url: str  # ends with /
    token: str

    @classmethod
    def of(cls, options: LavaOptions) -> LavaServer:
        return cls(options.url.rstrip("/") + "/", read_token(options))

    def job_url(self, job_id: int) -> str:
        """The job's page in LAVA's web interface."""
        return f"{self.url}scheduler/job/{job_id}"

    def submit(self, definition: str) -> int:
        answer = self._json("POST", "jobs/", {"definition": definition})
        ids = answer.get("job_ids") if isinstance(answer, dict) else None
        if not ids:
            raise InfraError(f"LAVA {self.url} accepted no job: {answer!r:.300}")
        return int(ids[0])

    def job(self, job_id: int) -> dict[str, Any]:
        answer = self._json("GET", f"jobs/{job_id}/")
        if not isinstance(answer, dict):
            raise InfraError(f"LAVA {self.url}: job {job_id} is not an object: {answer!r:.200}")
        return answer

    def tests(self, job_id: int) -> list[dict[str, Any]]:
        """Every test case of the job (all pages)."""
        cases: list[dict[str, Any]] = []
        path: str | None = f"jobs/{job_id}/tests/?limit=500"
        while path:
            page = self._json("GET", path)
            cases.extend(page.get("results", []))
            following = page.get("next")
            path = following.split("/api/v0.2/", 1)[1] if following else None
        return cases

    def log(self, job_id: int) -> list[dict[str, Any]]:
        """The job's log: one {dt, lvl, msg} per line (lvl `target` is the device's console)."""
        try:
            text = self._request("GET", f"jobs/{job_id}/logs/").decode(errors="replace")
        except NotFound:
            return []  # canceled before a worker started it
        try:
            lines = yaml.load(text, Loader=yaml.CSafeLoader) if text.strip() else []
        except yaml.YAMLError as exc:
            raise InfraError(f"LAVA job {job_id}: unreadable log: {exc}") from None
        return [line for line in lines or [] if isinstance(line, dict)]

    def cancel(self, job_id: int) -> None:
        self._json("GET", f"jobs/{job_id}/cancel/")

    def devices(self, device_type: str) -> list[dict[str, Any]]:
        page = self._json("GET", f"devices/?device_type={device_type}&limit=500")
        return list(page.get("results", []))

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        raw = self._request(method, path, body)
        try:
            return json.loads(raw)
        except ValueError:
            raise InfraError(f"LAVA {self.url}{path}: not JSON: {raw[:200]!r}") from None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        url = f"{self.url}api/v0.2/{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http(s) only, config-checked)
        request.add_header("Authorization", f"Token {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_SECONDS) as answer:  # noqa: S310
                payload: bytes = answer.read()
                return payload
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:400].decode(errors="replace")
            hint = " (is the token right?)" if exc.code in (401, 403) else ""
            kind = NotFound if exc.code == 404 else InfraError
            raise kind(f"LAVA {method} {url}: HTTP {exc.code}{hint}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfraError(f"LAVA {method} {url}: {reason}") from None


def read_token(options: LavaOptions) -> str:
    """The API token: $KBISECT_LAVA_TOKEN, else the configured token file."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if options.token_file is None:
        raise InfraError(f"no LAVA token: set ${TOKEN_ENV} or the host's lava.token_file")
    path = Path(options.token_file).expanduser()
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise InfraError(f"cannot read the LAVA token from {path}: {exc.strerror}") from None
    if not token:
        raise InfraError(f"the LAVA token file {path} is empty")
    return token
