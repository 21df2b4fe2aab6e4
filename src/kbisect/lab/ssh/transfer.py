"""Files to and from a host over an exec channel (`cat`), each checked by its sha256.

dropbear (the embedded host) has no SFTP or SCP server, so a file travels as a command's stdin or
stdout; the host's `sha256sum` proves what arrived, and a file appears under its name complete or
not at all (a temporary name, then a rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.ssh.commands import BytesSource, Source, SshCommands, sh_script
from kbisect.progress import advance, byte_progress

_CLEANUP_SECONDS = 15.0

# Remote scripts: fixed text; data arrives as positional parameters ("$1", ...).
_UPLOAD = """
cat > "$1" || { rm -f "$1"; exit 1; }
sum=$(sha256sum "$1") || { rm -f "$1"; exit 1; }
sum=${sum%% *}
echo "$sum"
if [ "$sum" != "$2" ]; then rm -f "$1"; exit 9; fi
if [ -n "$4" ]; then chmod "$4" "$1" || { rm -f "$1"; exit 1; }; fi
mv -f "$1" "$3"
"""

_DOWNLOAD = 'cat "$1" && sha256sum "$1" >&2'


class FileTransfer(SshCommands):
    """Uploads and downloads over the session's connection."""

    def upload(
        self, local: Path, remote: str, deadline: Deadline, *, mode: int | None = None
    ) -> None:
        """Copy a local file to `remote` over an exec channel (`cat`), check its sha256 on the
        host, and only then rename it into place; `mode` (e.g. 0o755) is set before the rename."""
        try:
            size = local.stat().st_size
            digest = _sha256_file(local)
        except OSError as exc:
            raise InfraError(f"cannot read {local}: {exc.strerror}") from None
        with local.open("rb") as f, byte_progress(f"{self.name}: {local.name}", size) as bar:
            source = _FileSource(f, lambda n: advance(bar, n))
            self._send(source, digest, remote, deadline, mode, f"upload of {local} to {remote}")

    def upload_bytes(
        self, data: bytes, remote: str, deadline: Deadline, *, mode: int | None = None
    ) -> None:
        """Like `upload`, for content made here (a generated script, a config file)."""
        digest = hashlib.sha256(data).hexdigest()
        self._send(BytesSource(data), digest, remote, deadline, mode, f"upload to {remote}")

    def _send(
        self,
        source: Source,
        digest: str,
        remote: str,
        deadline: Deadline,
        mode: int | None,
        what: str,
    ) -> None:
        tmp = f"{remote}.kbisect-{secrets.token_hex(4)}.part"
        argv = sh_script(_UPLOAD, tmp, digest, remote, "" if mode is None else f"{mode:o}")
        try:
            result = self._run(argv, deadline, source)
        except InfraError:
            self._remove_quietly(tmp)
            raise
        stdout = result.stdout.decode(errors="replace").split()
        remote_sum = stdout[-1] if stdout else "?"
        if result.status == 9 or (result.ok and remote_sum != digest):
            raise InfraError(
                f"{self.name}: {what} is corrupt: sha256 {remote_sum} on the host, "
                f"{digest} here; nothing was installed"
            )
        self._check(result, what)

    def download(self, remote: str, local: Path, deadline: Deadline) -> None:
        """Copy `remote` to `local` (`cat` over an exec channel), checking its sha256; the local
        file appears complete or not at all."""
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        what = f"download of {remote}"
        try:
            with os.fdopen(fd, "wb") as f, byte_progress(f"{self.name}: {remote}", None) as bar:

                def sink(data: bytes) -> None:
                    f.write(data)
                    digest.update(data)
                    advance(bar, len(data))

                result = self._run(sh_script(_DOWNLOAD, remote), deadline, None, sink)
            self._check(result, what)
            lines = result.stderr.decode(errors="replace").split()
            remote_sum = lines[0] if lines else "?"
            if remote_sum != digest.hexdigest():
                raise InfraError(
                    f"{self.name}: {what} is corrupt: sha256 {remote_sum} on the host, "
                    f"{digest.hexdigest()} received"
                )
            tmp.replace(local)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _remove_quietly(self, remote: str) -> None:
        with contextlib.suppress(InfraError):
            self.run(["rm", "-f", remote], Deadline(_CLEANUP_SECONDS))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _FileSource(Source):
    """A local file as a command's stdin, reporting progress as the channel takes it."""

    def __init__(self, f: IO[bytes], on_sent: Callable[[int], None]) -> None:
        self._f = f
        self._on_sent = on_sent

    def read(self, size: int) -> bytes:
        return self._f.read(size)

    def sent(self, count: int) -> None:
        self._on_sent(count)
