"""git, through GitPython, with a deadline on every command and errors kbisect understands."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

# GitPython looks for git when imported and, without it, raises a page-long ImportError before
# kbisect can say anything; quiet, it lets the first git command report a missing git in one line.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import git

from kbisect.errors import InfraError

DEFAULT_TIMEOUT = 600.0
GIT_HINT = "apt-get install git"


@contextmanager
def _feed(data: bytes | None) -> Iterator[BinaryIO | None]:
    """Input for a git command as a file (a pipe could deadlock on large input and output)."""
    if data is None:
        yield None
        return
    with tempfile.TemporaryFile() as feed:
        feed.write(data)
        feed.seek(0)
        yield feed


class GitResult:
    """Exit status and output of one git command run with check=False."""

    def __init__(self, status: int, stdout: str, stderr: str) -> None:
        self.status, self.stdout, self.stderr = status, stdout, stderr

    @property
    def ok(self) -> bool:
        return self.status == 0


class Git:
    """A GitPython repository that is always closed, and whose commands always have a deadline.

    Use as a context manager. `run` raises InfraError when git fails unexpectedly or times out;
    `try_run` returns the status for commands whose failure is an answer (apply --check, rev-parse).
    `stdin` is fed to the command (fast-import, mktree); `read_blob` reads objects through one
    long-lived `git cat-file --batch`.
    """

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        try:
            self.repo = git.Repo(path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise InfraError(f"{path}: not a git repository ({exc.__class__.__name__})") from exc

    @staticmethod
    def init_bare(path: Path) -> None:
        """Create an empty bare repository at path."""
        try:
            git.Repo.init(path, bare=True, quiet=True).close()
        except git.GitCommandError as exc:
            raise InfraError(f"git init {path} failed: {exc.stderr.strip()}") from exc

    def __enter__(self) -> Git:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.repo.close()

    def try_run(
        self,
        *args: str,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> GitResult:
        limit = timeout or self.timeout
        try:
            with _feed(stdin) as feed:
                status, out, err = self.repo.git.execute(
                    ["git", *args],
                    istream=feed,
                    with_extended_output=True,
                    with_exceptions=False,
                    kill_after_timeout=limit,
                    env=env,
                    strip_newline_in_stdout=False,
                )
        except git.GitCommandNotFound as exc:
            raise InfraError(f"git is not installed ({GIT_HINT})") from exc
        err = str(err)
        if err.startswith("Timeout:") or "did not complete in" in err:
            raise InfraError(f"git {args[0]} in {self.path} did not finish within {limit:g} s")
        return GitResult(int(status or 0), str(out), err)

    def run(
        self,
        *args: str,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> str:
        result = self.try_run(*args, timeout=timeout, env=env, stdin=stdin)
        if not result.ok:
            lines = result.stderr.strip().splitlines()
            detail = lines[-1] if lines else f"exit {result.status}"
            raise InfraError(f"git {' '.join(args[:2])} failed in {self.path}: {detail}")
        return result.stdout

    def read_blob(self, blob: str) -> bytes:
        """A blob's content, byte for byte."""
        try:
            return self.repo.git.get_object_data(blob)[3]
        except ValueError as exc:
            raise InfraError(f"{self.path}: no object {blob}") from exc
